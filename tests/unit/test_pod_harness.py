"""The e2e harness resolves a pod's env and command the way the kubelet does."""

import pytest

from tests.harness.pods import container_argv, container_env, decode_secret_data, expand

SECRETS = {"auth": {"password": "s3cret"}, "keys": {"OPENAI_API_KEY": "sk-1"}}
CONFIGMAPS = {"settings": {"LOG_LEVEL": "debug"}}


def look_up(kind, name):
    return (SECRETS if kind == "secret" else CONFIGMAPS)[name]


def test_expand_follows_kubelet_rules():
    defined = {"A": "x"}
    assert expand("$(A)-$(B)", defined) == "x-$(B)"
    assert expand("$$(A)", defined) == "$(A)"
    assert expand("no refs", defined) == "no refs"


def test_env_resolves_refs_in_order():
    container = {
        "name": "worker",
        "envFrom": [{"secretRef": {"name": "keys"}}, {"configMapRef": {"name": "settings"}}],
        "env": [
            {
                "name": "REDIS_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "auth", "key": "password"}},
            },
            {"name": "REDIS_URL", "value": "redis://:$(REDIS_PASSWORD)@redis:6379/0"},
            {"name": "EMPTY"},
            {
                "name": "LEVEL",
                "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "LOG_LEVEL"}},
            },
        ],
        "command": ["deepagent-temporal"],
        "args": ["worker", "--log-level=$(LEVEL)"],
    }
    env = container_env(container, look_up)
    assert env["REDIS_URL"] == "redis://:s3cret@redis:6379/0"
    assert env["OPENAI_API_KEY"] == "sk-1" and env["LOG_LEVEL"] == "debug"
    assert env["EMPTY"] == ""
    assert container_argv(container, env) == ["deepagent-temporal", "worker", "--log-level=debug"]


def test_image_entrypoint_and_cmd_fill_in_like_the_kubelet():
    entrypoint, cmd = ["deepagent-temporal"], ["worker"]
    assert container_argv({"name": "c"}, {}, entrypoint, cmd) == ["deepagent-temporal", "worker"]
    assert container_argv({"name": "c", "args": ["run"]}, {}, entrypoint, cmd) == [
        "deepagent-temporal",
        "run",
    ]
    assert container_argv({"name": "c", "command": ["sh"]}, {}, entrypoint, cmd) == ["sh"]


def test_a_container_without_any_command_is_an_error():
    with pytest.raises(ValueError, match="no command"):
        container_argv({"name": "c"}, {})


def test_secret_data_is_decoded():
    assert decode_secret_data({"password": "czNjcmV0"}) == {"password": "s3cret"}
