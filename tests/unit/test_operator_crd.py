"""The CRD is generated from the pydantic model; the files in the repo must not drift."""

from __future__ import annotations

from pathlib import Path

import yaml

from deepagent_operator import crd

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "deepagent.yaml"
CHART_CRD_FILE = ROOT / "charts" / "deepagent-operator" / "crds" / "deepagent.yaml"


def _walk(node, path="$"):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.get("properties", {}).items():
            yield from _walk(v, f"{path}.{k}")
        if isinstance(node.get("items"), dict):
            yield from _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_crd_file_matches_model():
    assert CRD_FILE.read_text() == crd.render(), (
        "crds/deepagent.yaml is stale: run `python -m deepagent_operator.crd -o crds/deepagent.yaml`"
    )


def test_chart_crd_is_the_same_file():
    assert CHART_CRD_FILE.read_bytes() == CRD_FILE.read_bytes()


def test_check_mode_detects_drift(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(crd.render())
    bad = tmp_path / "bad.yaml"
    bad.write_text(crd.render().replace("minimum: 0", "minimum: 1"))
    assert crd.main(["--check", str(good)]) == 0
    assert crd.main(["--check", str(good), str(bad)]) == 1
    assert "bad.yaml is out of date" in capsys.readouterr().err


def test_names_and_version():
    doc = yaml.safe_load(CRD_FILE.read_text())
    assert doc["metadata"]["name"] == "deepagents.deepagent.dev"
    names = doc["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "DeepAgent",
        "deepagents",
        ["da"],
    )
    assert "all" in names["categories"]
    (version,) = doc["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    cols = {c["name"]: c for c in version["additionalPrinterColumns"]}
    for col in ("Phase", "Ready", "Redis", "Age"):
        assert col in cols
    assert cols["Age"]["type"] == "date"


def test_schema_is_structural():
    doc = yaml.safe_load(CRD_FILE.read_text())
    schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    text = CRD_FILE.read_text()
    assert "$ref" not in text and "title:" not in text and "null" not in text
    for path, node in _walk(schema["properties"]["spec"], "spec"):
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
            continue
        assert "anyOf" not in node, path
        assert "type" in node, f"{path} has no type"


def test_schema_rules():
    spec = crd.spec_schema()
    props = spec["properties"]
    assert spec["required"] == ["graph"]
    assert "pattern" in props["graph"]
    assert "pattern" in props["temporal"]["properties"]["address"]
    assert props["replicas"]["minimum"] == 0
    assert "default" not in props["replicas"]  # would fight with autoscaling
    assert props["streaming"]["properties"]["redis"]["properties"]["mode"]["enum"] == [
        "Managed",
        "External",
        "Disabled",
    ]
    redis_rules = props["streaming"]["properties"]["redis"]["x-kubernetes-validations"]
    assert any("urlSecretRef" in r["rule"] for r in redis_rules)
    assert any("autoscaling" in r["rule"] for r in spec["x-kubernetes-validations"])
    assert props["affinity"]["x-kubernetes-preserve-unknown-fields"] is True


def test_cli_crd_subcommand(tmp_path):
    from deepagent_operator.__main__ import main

    out = tmp_path / "crd.yaml"
    assert main(["crd", "-o", str(out)]) == 0
    assert out.read_text() == CRD_FILE.read_text()
    assert main(["crd", "--check", str(CRD_FILE), str(CHART_CRD_FILE)]) == 0
