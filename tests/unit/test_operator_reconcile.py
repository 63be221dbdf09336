"""Pure helpers of the reconciler: desired-vs-live comparison and status merge patches."""

from __future__ import annotations

from deepagent_operator.config import OperatorConfig
from deepagent_operator.handlers import backoff
from deepagent_operator.plan import is_subset, merge_patch


def test_subset_ignores_server_defaults():
    desired = {
        "spec": {
            "replicas": 2,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "w",
                            "image": "x",
                            "resources": {"requests": {"cpu": "0.5", "memory": "1Gi"}},
                        }
                    ]
                }
            },
        }
    }
    live = {
        "metadata": {"uid": "u", "resourceVersion": "5"},
        "spec": {
            "replicas": 2,
            "progressDeadlineSeconds": 600,
            "template": {
                "spec": {
                    "dnsPolicy": "ClusterFirst",
                    "containers": [
                        {
                            "name": "w",
                            "image": "x",
                            "terminationMessagePath": "/dev/termination-log",
                            "resources": {"requests": {"cpu": "500m", "memory": "1024Mi"}},
                        }
                    ],
                }
            },
        },
        "status": {"readyReplicas": 2},
    }
    assert is_subset(desired, live)


def test_subset_detects_drift():
    desired = {"spec": {"replicas": 2, "env": [{"name": "A", "value": "1"}]}}
    assert not is_subset(desired, {"spec": {"replicas": 3, "env": [{"name": "A", "value": "1"}]}})
    assert not is_subset(desired, {"spec": {"replicas": 2, "env": []}})
    assert not is_subset(
        desired,
        {
            "spec": {
                "replicas": 2,
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            }
        },
    )
    assert not is_subset({"a": "x"}, {})
    assert not is_subset({"a": True}, {"a": 1})
    assert is_subset({"a": {}}, {})
    assert is_subset({"emptyDir": {}}, {"emptyDir": {"medium": ""}})


def test_merge_patch_only_differences_and_removals():
    cur = {
        "phase": "Pending",
        "redis": {"mode": "Managed", "endpoint": "e", "ready": False},
        "kopf": {"x": 1},
    }
    new = {"phase": "Ready", "redis": {"mode": "Disabled", "ready": False}}
    keys = ("phase", "redis", "conditions")
    assert merge_patch(cur, new, keys) == {
        "phase": "Ready",
        "redis": {"mode": "Disabled", "endpoint": None},
    }
    assert merge_patch(new, new, keys) == {}


def test_backoff_grows_and_is_capped():
    cfg = OperatorConfig(max_backoff_seconds=60)
    assert [backoff(r, cfg) for r in range(6)] == [5, 10, 20, 40, 60, 60]
    assert backoff(1000, cfg) == 60


def test_config_from_env():
    cfg = OperatorConfig.from_env(
        {
            "DEEPAGENT_WATCH_NAMESPACES": "a, b,,",
            "DEEPAGENT_DEFAULT_IMAGE": "img",
            "DEEPAGENT_RESYNC_SECONDS": "5",
        }
    )
    assert cfg.namespaces == ("a", "b")
    assert cfg.default_image == "img"
    assert cfg.resync_seconds == 5
    assert cfg.redis_image.startswith("redis:")


def test_kube_connect_timeout_has_its_own_env_var():
    # DEEPAGENT_CONNECT_TIMEOUT is the workers' Temporal connect timeout, not the operator's.
    cfg = OperatorConfig.from_env(
        {"DEEPAGENT_KUBE_CONNECT_TIMEOUT": "3", "DEEPAGENT_CONNECT_TIMEOUT": "99"}
    )
    assert cfg.connect_timeout == 3
    assert OperatorConfig.from_env({"DEEPAGENT_CONNECT_TIMEOUT": "99"}).connect_timeout == 10
