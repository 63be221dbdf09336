"""The gateway's API key check: a configured keys file that holds no key fails closed."""

from __future__ import annotations

from starlette.testclient import TestClient

from deepagent_temporal.contract import WorkerEnv
from deepagent_temporal.gateway.app import create_app, read_api_keys


def _client(keys: frozenset[str], keys_file: str | None = None) -> TestClient:
    # routes that reach the gateway are not needed: auth answers before them
    return TestClient(create_app(object(), keys, keys_file=keys_file))  # type: ignore[arg-type]


def test_a_key_is_required_when_one_is_configured(tmp_path):
    path = tmp_path / "api-keys"
    path.write_text("# one key a line\nsecret-1\n\n")
    client = _client(read_api_keys(str(path)), str(path))
    assert client.post("/threads/search", json={}).status_code == 401
    wrong = client.post("/threads/search", json={}, headers={"x-api-key": "nope"})
    assert wrong.status_code == 401 and wrong.json()["detail"] == "Invalid or missing API key"
    assert client.get("/ok").status_code == 200, "probes stay open"


def test_an_empty_or_missing_keys_file_refuses_every_request(tmp_path):
    empty = tmp_path / "api-keys"
    empty.write_text("\n# emptied\n")
    for path in (empty, tmp_path / "missing"):
        keys = read_api_keys(str(path))
        assert keys == frozenset()
        response = _client(keys, str(path)).post("/threads/search", json={})
        assert response.status_code == 401
        detail = response.json()["detail"]
        assert str(path) in detail and WorkerEnv.name("gateway_api_keys_file") in detail
        assert _client(keys, str(path)).get("/ok").status_code == 200
