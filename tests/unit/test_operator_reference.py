"""The README's DeepAgent reference is generated from the CRD schema and kept in step."""

from pathlib import Path

from deepagent_operator.crd import spec_schema
from deepagent_operator.reference import END, START, render, replace_in, rows

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_reference_is_up_to_date():
    text = README.read_text()
    assert replace_in(text) == text, (
        "README.md's DeepAgent reference is stale: run "
        "`python -m deepagent_operator.reference --update README.md`"
    )


def test_every_top_level_field_is_documented():
    documented = {row[0].strip("`") for row in rows()}
    for field in spec_schema()["properties"]:
        assert f"spec.{field}" in documented


def test_required_fields_and_defaults_are_shown():
    table = {row[0].strip("`"): row for row in rows()}
    assert table["spec.graph"][2] == "required"
    assert table["spec.streaming.redis.mode"][2] == '"Disabled"'
    assert "Managed \\| External \\| Disabled" == table["spec.streaming.redis.mode"][1]
    assert render().startswith(START) and render().endswith(END)
