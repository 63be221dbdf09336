"""Smoke tests of the local Kubernetes control plane from ``tests/harness/k8s.py``.

They check what the operator tests rely on: CRDs and CRs, Deployments becoming available on kwok
nodes, ownerReference garbage collection, RBAC answers and a working helm binary.
"""

from __future__ import annotations

import json
import uuid
from functools import partial

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.harness.wait import wait_for

pytestmark = pytest.mark.k8s

WAIT_SECONDS = 90
wait_for = partial(wait_for, timeout=WAIT_SECONDS)


def test_crd_established_and_custom_resource(k8s_cluster, k8s_namespace):
    group = f"smoke{uuid.uuid4().hex[:6]}.deepagent.test"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer", "minimum": 1}},
                                    "required": ["size"],
                                }
                            },
                        }
                    },
                    "subresources": {"status": {}},
                }
            ],
        },
    }
    k8s_cluster.kubectl("apply", "-f", "-", input=json.dumps(crd))
    try:
        k8s_cluster.wait_established(f"crd/widgets.{group}")
        custom = client.CustomObjectsApi(k8s_cluster.api_client)
        body = {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": "w1"},
            "spec": {"size": 3},
        }
        # the CRD is Established, but discovery in the API server can lag a moment
        created = wait_for(
            "Widget create to succeed",
            lambda: _try(
                lambda: custom.create_namespaced_custom_object(
                    group, "v1", k8s_namespace, "widgets", body
                )
            ),
            timeout=30,
        )
        assert created["metadata"]["uid"]
        got = custom.get_namespaced_custom_object(group, "v1", k8s_namespace, "widgets", "w1")
        assert got["spec"] == {"size": 3}

        # schema validation is enforced by the real API server
        bad = dict(body, metadata={"name": "w2"}, spec={"size": 0})
        with pytest.raises(ApiException) as excinfo:
            custom.create_namespaced_custom_object(group, "v1", k8s_namespace, "widgets", bad)
        assert excinfo.value.status == 422

        out = k8s_cluster.kubectl("get", f"widgets.{group}", "-n", k8s_namespace, "-o", "name")
        assert out.stdout.strip() == f"widget.{group}/w1"
    finally:
        k8s_cluster.kubectl("delete", "crd", f"widgets.{group}", "--wait=false", check=False)


def _try(fn):
    try:
        return fn()
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def _deployment(name: str, replicas: int) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[
                        client.V1Container(
                            name="main",
                            image="registry.invalid/never-pulled:1",
                            command=["sleep", "infinity"],
                            resources=client.V1ResourceRequirements(
                                requests={"cpu": "100m", "memory": "64Mi"}
                            ),
                        )
                    ]
                ),
            ),
        ),
    )


def test_deployment_becomes_available_on_kwok_nodes(k8s_cluster, k8s_namespace):
    apps = client.AppsV1Api(k8s_cluster.api_client)
    core = client.CoreV1Api(k8s_cluster.api_client)
    apps.create_namespaced_deployment(k8s_namespace, _deployment("web", 2))

    def available():
        dep = apps.read_namespaced_deployment("web", k8s_namespace)
        return dep.status.available_replicas == 2 and dep

    dep = wait_for("deployment web to have 2 available replicas", available)
    assert dep.status.ready_replicas == 2

    pods = core.list_namespaced_pod(k8s_namespace, label_selector="app=web").items
    running = [p for p in pods if p.status.phase == "Running"]
    assert len(running) == 2, [(p.metadata.name, p.status.phase) for p in pods]
    if k8s_cluster.mode == "local":
        assert {p.spec.node_name for p in running} <= set(k8s_cluster.fake_nodes)
    # the serviceaccount admission plugin and token controller are active
    assert all(p.spec.service_account_name == "default" for p in running)


def test_owner_reference_garbage_collection(k8s_cluster, k8s_namespace):
    core = client.CoreV1Api(k8s_cluster.api_client)
    owner = core.create_namespaced_config_map(
        k8s_namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"), data={"k": "v"}),
    )
    core.create_namespaced_config_map(
        k8s_namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(
                name="child",
                owner_references=[
                    client.V1OwnerReference(
                        api_version="v1",
                        kind="ConfigMap",
                        name="owner",
                        uid=owner.metadata.uid,
                    )
                ],
            ),
            data={"k": "v"},
        ),
    )
    core.delete_namespaced_config_map("owner", k8s_namespace)

    def child_gone():
        try:
            core.read_namespaced_config_map("child", k8s_namespace)
        except ApiException as e:
            if e.status == 404:
                return True
            raise
        return False

    wait_for("child ConfigMap to be garbage-collected", child_gone)


def test_deployment_deletion_cascades_to_pods(k8s_cluster, k8s_namespace):
    apps = client.AppsV1Api(k8s_cluster.api_client)
    core = client.CoreV1Api(k8s_cluster.api_client)
    apps.create_namespaced_deployment(k8s_namespace, _deployment("gc", 1))
    wait_for(
        "pod of deployment gc",
        lambda: core.list_namespaced_pod(k8s_namespace, label_selector="app=gc").items,
    )
    apps.delete_namespaced_deployment("gc", k8s_namespace)  # background propagation
    wait_for(
        "ReplicaSets and pods of deployment gc to be garbage-collected",
        lambda: (
            not apps.list_namespaced_replica_set(k8s_namespace, label_selector="app=gc").items
            and not core.list_namespaced_pod(k8s_namespace, label_selector="app=gc").items
        ),
    )


def test_rbac_is_enforced(k8s_cluster, k8s_namespace):
    sa = f"system:serviceaccount:{k8s_namespace}:default"
    out = k8s_cluster.kubectl(
        "auth", "can-i", "list", "pods", "-n", k8s_namespace, f"--as={sa}", check=False
    )
    assert out.stdout.strip() == "no", out
    k8s_cluster.kubectl(
        "create",
        "rolebinding",
        "sa-view",
        "--clusterrole=view",
        f"--serviceaccount={k8s_namespace}:default",
        "-n",
        k8s_namespace,
    )
    out = k8s_cluster.kubectl(
        "auth", "can-i", "list", "pods", "-n", k8s_namespace, f"--as={sa}", check=False
    )
    assert out.stdout.strip() == "yes", out
    out = k8s_cluster.kubectl(
        "auth", "can-i", "delete", "pods", "-n", k8s_namespace, f"--as={sa}", check=False
    )
    assert out.stdout.strip() == "no", out


def test_helm_version(k8s_cluster):
    out = k8s_cluster.helm("version", "--short")
    assert out.stdout.strip().startswith("v3."), out.stdout
