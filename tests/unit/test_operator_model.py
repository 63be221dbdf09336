"""The spec model: defaults, patterns and the cross-field rules (mirrors of the CEL rules)."""

from __future__ import annotations

import re
from pathlib import Path

import pydantic
import pytest
import yaml

from deepagent_operator.model import (
    ADDRESS_PATTERN,
    GRAPH_PATTERN,
    SpecError,
    check_name,
    format_validation_error,
    parse_spec,
)

SAMPLE = Path(__file__).resolve().parents[2] / "operator" / "examples" / "deepagent.yaml"


def test_sample_parses_with_defaults():
    spec = parse_spec(yaml.safe_load(SAMPLE.read_text())["spec"])
    assert spec.graph == "my_agents.coder:agent"
    assert spec.replicas == 2
    assert spec.streaming.redis.mode == "Managed"
    assert spec.streaming.redis.storage.type == "EmptyDir"
    assert spec.health_port == 8080
    assert spec.env_from[0].secret_ref.name == "model-keys"


def test_minimal_spec_defaults():
    spec = parse_spec({"graph": "a:b"})
    assert spec.replicas is None and spec.autoscaling is None
    assert spec.temporal.namespace == "default"
    assert spec.streaming.tokens is True
    assert spec.streaming.redis.mode == "Disabled"
    assert spec.dump()["streaming"]["maxLen"] == 10000


@pytest.mark.parametrize(
    "graph,ok",
    [
        ("my_agents.coder:agent", True),
        ("a:b", True),
        ("pkg.mod:Factory.build", True),
        ("nocolon", False),
        ("a:", False),
        (":b", False),
        ("a b:c", False),
        ("1pkg:x", False),
        ("a::b", False),
        ("a.b:c:d", False),
    ],
)
def test_graph_pattern(graph, ok):
    assert bool(re.match(GRAPH_PATTERN, graph)) is ok


@pytest.mark.parametrize(
    "addr,ok",
    [
        ("temporal-frontend.temporal:7233", True),
        ("localhost:7233", True),
        ("10.0.0.1:7233", True),
        ("[::1]:7233", True),
        ("x.tmprl.cloud:443", True),
        ("temporal", False),
        ("temporal:", False),
        ("temporal:0", False),
        ("temporal:65536", False),
        ("http://temporal:7233", False),
        ("-bad:7233", False),
        ("a b:1", False),
    ],
)
def test_address_pattern(addr, ok):
    assert bool(re.match(ADDRESS_PATTERN, addr)) is ok


@pytest.mark.parametrize(
    "spec,field",
    [
        ({"graph": "a:b", "replicas": 2, "autoscaling": {"maxReplicas": 3}}, "spec"),
        ({"graph": "a:b", "streaming": {"redis": {"mode": "External"}}}, "spec.streaming.redis"),
        (
            {"graph": "a:b", "streaming": {"redis": {"mode": "Managed", "url": "redis://x:1"}}},
            "spec.streaming.redis",
        ),
        (
            {
                "graph": "a:b",
                "streaming": {
                    "redis": {
                        "mode": "External",
                        "url": "redis://x:1",
                        "urlSecretRef": {"name": "s", "key": "url"},
                    }
                },
            },
            "spec.streaming.redis",
        ),
        ({"graph": "a:b", "autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, "spec.autoscaling"),
        ({"graph": "a:b", "replicas": "two"}, "spec.replicas"),
        ({"graph": "a:b", "bogus": 1}, "spec.bogus"),
        ({}, "spec.graph"),
    ],
)
def test_invalid_specs_name_the_field(spec, field):
    with pytest.raises(pydantic.ValidationError) as exc:
        parse_spec(spec)
    path, msg = format_validation_error(exc.value)
    assert path == field
    assert msg


def test_external_redis_ok():
    spec = parse_spec(
        {
            "graph": "a:b",
            "streaming": {
                "redis": {"mode": "External", "urlSecretRef": {"name": "redis-url", "key": "url"}}
            },
        }
    )
    assert spec.streaming.redis.url_secret_ref.key == "url"


# -- the mirrors of the CRD's rules for names, labels, quantities, env and autoscaling --------
MAP_AND_QUANTITY_CASES = [
    ({"podLabels": {"x": "bad value!"}}, "spec.podLabels.x"),
    ({"podLabels": {"x": "v" * 64}}, "spec.podLabels.x"),
    ({"podLabels": {"bad key!": "v"}}, "spec.podLabels"),
    ({"podLabels": {"k" * 64: "v"}}, "spec.podLabels"),
    ({"podLabels": {"Bad_Prefix/x": "v"}}, "spec.podLabels"),
    ({"podAnnotations": {"/x": "v"}}, "spec.podAnnotations"),
    ({"nodeSelector": {"pool": "a b"}}, "spec.nodeSelector.pool"),
    ({"resources": {"requests": {"cpu": "-1"}}}, "requests.cpu"),
    ({"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "500m"}}}, "requests.cpu"),
    ({"resources": {"limits": {"gpu": 1}}}, "limits"),
    (
        {"streaming": {"redis": {"mode": "Managed", "storage": {"type": "PersistentVolumeClaim", "size": 0}}}},
        "spec.streaming.redis.storage.size",
    ),
    ({"env": [{"name": "A", "value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}, "value and valueFrom"),
    ({"env": [{"name": "A", "valueFrom": {}}]}, "valueFrom: set exactly one"),
    ({"envFrom": [{"prefix": "X_"}]}, "exactly one of secretRef and configMapRef"),
    ({"autoscaling": {"maxReplicas": 3}}, "spec.resources.requests.cpu"),
    ({"autoscaling": {"maxReplicas": 3}, "resources": {"requests": {"memory": "1Gi"}}}, "requests.cpu"),
]  # fmt: skip


@pytest.mark.parametrize("extra,text", MAP_AND_QUANTITY_CASES)
def test_rules_the_crd_checks_are_mirrored(extra, text):
    with pytest.raises(pydantic.ValidationError) as exc:
        parse_spec({"graph": "a:b", **extra})
    assert text in format_validation_error(exc.value)[1]


def test_close_to_the_rules_is_accepted():
    parse_spec(
        {
            "graph": "a:b",
            "podLabels": {"example.com/team": "a_b.c-1", "x": "", "k" * 63: "v" * 63},
            "podAnnotations": {"example.com/note": "any text at all!"},
            "resources": {
                "requests": {"cpu": "200m", "memory": 1000, "nvidia.com/gpu": 1},
                "limits": {"cpu": 1, "memory": "1Ki", "hugepages-2Mi": "2Mi"},
            },
            "autoscaling": {"maxReplicas": 3},
            "env": [{"name": "A", "value": ""}, {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}],
        }
    )  # fmt: skip


def test_managed_redis_needs_a_dns1035_name():
    managed = parse_spec({"graph": "a:b", "streaming": {"redis": {"mode": "Managed"}}})
    check_name("coder-1", managed)
    for bad in ("a.b", "1agent", "Agent"):
        with pytest.raises(SpecError) as exc:
            check_name(bad, managed)
        assert exc.value.field == "metadata.name" and exc.value.reason == "InvalidName"
    check_name("a.b", parse_spec({"graph": "a:b"}))  # no Service named after it
