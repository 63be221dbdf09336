"""Kubernetes operator for deepagent-temporal: the ``DeepAgent`` custom resource.

The package is split so that almost everything is a pure function:

* :mod:`.model` - the pydantic model of ``DeepAgent.spec`` (the single source of truth);
* :mod:`.crd` - the CustomResourceDefinition generated from that model;
* :mod:`.children` - spec in, child manifests out (Deployment, StatefulSet, ...);
* :mod:`.status` - children's status in, ``DeepAgent.status`` out;
* :mod:`.reconcile` - compare desired vs live children and write only differences;
* :mod:`.handlers` - the small kopf handlers wiring all of the above to events.
"""

GROUP = "deepagent.dev"
VERSION = "v1alpha1"
KIND = "DeepAgent"
PLURAL = "deepagents"
SINGULAR = "deepagent"
SHORT_NAMES = ["da"]
API_VERSION = f"{GROUP}/{VERSION}"
MANAGER = "deepagent-operator"

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "MANAGER",
    "PLURAL",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
]
