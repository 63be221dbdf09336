"""The DeepAgent field reference (markdown), generated from the same schema as the CRD.

``python -m deepagent_operator.reference --update README.md`` rewrites the table between
the README's ``cr-reference`` markers; a unit test fails when the README drifts.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .crd import spec_schema

START = "<!-- cr-reference:start (generated: python -m deepagent_operator.reference --update README.md) -->"
END = "<!-- cr-reference:end -->"


def _type(node: dict[str, Any]) -> str:
    kind = node.get("type", "any")
    if node.get("x-kubernetes-int-or-string"):
        kind = "int or string"
    if kind == "array":
        kind = f"[]{_type(node.get('items', {}))}"
    if "enum" in node:
        kind = " \\| ".join(str(v) for v in node["enum"])
    return kind


def _constraints(node: dict[str, Any]) -> str:
    parts = []
    for key, label in (("minimum", "≥"), ("maximum", "≤"), ("minLength", "min length")):
        if key in node:
            parts.append(f"{label} {node[key]}")
    if "pattern" in node:
        # Long patterns (DNS names, quantities, host:port) are summarised; the CRD has them.
        pattern = node["pattern"]
        parts.append(f"pattern `{pattern}`" if len(pattern) <= 60 else "validated format")
    return "; ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()


def rows(node: dict[str, Any] | None = None, prefix: str = "spec") -> Iterator[tuple[str, ...]]:
    """(field, type, default, description) for every field below ``prefix``, depth first."""
    node = node if node is not None else spec_schema()
    required = set(node.get("required", []))
    for name, child in node.get("properties", {}).items():
        path = f"{prefix}.{name}"
        default = json.dumps(child["default"]) if "default" in child else ""
        if name in required:
            default = "required"
        description = child.get("description", "")
        constraints = _constraints(child)
        if constraints:
            description = f"{description} ({constraints})" if description else constraints
        yield (f"`{path}`", _type(child), _cell(default), _cell(description))
        nested = child.get("items", {}) if child.get("type") == "array" else child
        if nested.get("properties"):
            yield from rows(nested, f"{path}[]" if child.get("type") == "array" else path)


def render() -> str:
    lines = ["| field | type | default | meaning |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows()]
    return "\n".join([START, *lines, END])


def replace_in(text: str) -> str:
    head, _, rest = text.partition(START)
    _, found, tail = rest.partition(END)
    if not found:
        raise ValueError("the cr-reference markers are missing")
    return head + render() + tail


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deepagent_operator.reference", description=__doc__)
    p.add_argument("--update", metavar="FILE", help="rewrite the table between the markers")
    args = p.parse_args(argv)
    if args.update:
        path = Path(args.update)
        path.write_text(replace_in(path.read_text()))
    else:
        sys.stdout.write(render() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
