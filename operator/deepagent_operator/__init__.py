"""Kubernetes operator for deepagent-temporal: the ``DeepAgent`` custom resource.

The package is split so that almost everything is a pure function:

* :mod:`.model` - the pydantic models of ``DeepAgent.spec`` and ``DeepAgent.status`` (the
  single source of truth), and ``SpecError``; :mod:`.corev1` - the core/v1 types it embeds;
* :mod:`.crd` - the CustomResourceDefinition generated from those models;
  :mod:`.reference` - the README's field table, generated from the same schema;
* :mod:`.children` - spec in, child manifests out (worker Deployment, HPA, Managed Redis);
  the worker env is rendered through the runtime's ``WorkerEnv`` contract;
* :mod:`.status` - children's status in, ``DeepAgent.status`` out;
* :mod:`.plan` - spec and observed objects in, what to create / patch / delete and the
  status patch out;
* :mod:`.reconcile` - executes plans against the API (:mod:`.kube`): never writes an object
  its DeepAgent does not control, turns refused writes into conditions with back-off;
  :mod:`.state` - per-agent locks and state, both bounded; :mod:`.redis_auth` - the Managed
  Redis password Secret and the AUTH + PING readiness check; :mod:`.events` - Events;
* :mod:`.handlers` - the small kopf handlers wiring all of the above to events;
* :mod:`.metrics` - Prometheus metrics; :mod:`.config` - settings and their env variables.

``docs/architecture.md`` describes how the operator fits with the runtime.
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
