"""The contract module: worker env (parse, render, docs) and the one-home rule for names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from deepagent_temporal.cli import build_parser
from deepagent_temporal.contract import (
    EnvError,
    WorkerEnv,
    decode_entry,
    dumps,
    encode_entry,
    iter_env_names,
    with_env_table,
)

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "runtime" / "deepagent_temporal" / "contract"
#: code that must name worker variables through WorkerEnv (tests may spell them out)
SCANNED = [
    ROOT / "runtime" / "deepagent_temporal",
    ROOT / "operator" / "deepagent_operator",
    ROOT / "bench",
    ROOT / "tests" / "harness",
]


def _string_literals(tree: ast.AST) -> list[ast.Constant]:
    """String constants that are not docstrings (prose may mention a variable)."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_no_worker_env_name_is_a_string_literal_outside_the_contract():
    import re

    names = sorted(iter_env_names(), key=len, reverse=True)
    pattern = re.compile(r"(?<![A-Z0-9_])(" + "|".join(map(re.escape, names)) + r")(?![A-Z0-9_])")
    offenders = []
    for root in SCANNED:
        for path in sorted(root.rglob("*.py")):
            if CONTRACT in path.parents:
                continue
            tree = ast.parse(path.read_text(), str(path))
            for node in _string_literals(tree):
                match = pattern.search(node.value)
                if match:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {match.group(1)}")
    assert not offenders, "use WorkerEnv.name(...) / WorkerEnv.render(...):\n" + "\n".join(
        offenders
    )


def test_the_scan_catches_a_literal():
    tree = ast.parse('"""Mentions REDIS_URL in prose."""\nx = "REDIS_URL"\n')
    assert [n.value for n in _string_literals(tree)] == ["REDIS_URL"]


def test_from_env_parses_types_and_empty_means_unset():
    env = WorkerEnv.from_env(
        {
            "DEEPAGENT_GRAPH": "pkg.mod:agent",
            "DEEPAGENT_TOKEN_STREAMING": "off",
            "DEEPAGENT_STREAM_MAXLEN": "500",
            "DEEPAGENT_CONNECT_TIMEOUT": "2.5",
            "REDIS_URL": "",
        }
    )
    assert env.graph == "pkg.mod:agent"
    assert env.token_streaming is False
    assert env.stream_maxlen == 500 and env.connect_timeout == 2.5
    assert env.redis_url is None
    assert env.temporal_address == "localhost:7233"  # default


@pytest.mark.parametrize(
    ("name", "value"),
    [("DEEPAGENT_STREAM_MAXLEN", "lots"), ("DEEPAGENT_TOKEN_STREAMING", "maybe")],
)
def test_a_bad_value_names_the_variable(name, value):
    with pytest.raises(EnvError, match=name):
        WorkerEnv.from_env({name: value})


def test_deprecated_name_is_still_read():
    assert WorkerEnv.from_env({"DEEPAGENT_PHASE1_BATCH_MS": "20"}).temporal_batch_ms == 20.0
    both = {"DEEPAGENT_PHASE1_BATCH_MS": "20", "DEEPAGENT_TEMPORAL_BATCH_MS": "30"}
    assert WorkerEnv.from_env(both).temporal_batch_ms == 30.0


def test_render_and_to_env_round_trip():
    rendered = WorkerEnv.render(graph="a:b", token_streaming=False, redis_url=None)
    assert rendered == {"DEEPAGENT_GRAPH": "a:b", "DEEPAGENT_TOKEN_STREAMING": "false"}
    env = WorkerEnv(graph="a:b", temporal_task_queue="q", stream_ttl_seconds=60)
    assert WorkerEnv.from_env(env.to_env()) == env
    with pytest.raises(KeyError):
        WorkerEnv.render(grahp="typo")


def test_secrets_stay_out_of_repr():
    env = WorkerEnv(redis_url="redis://:hunter2@r:6379/0", temporal_api_key="k-123")
    assert "hunter2" not in repr(env) and "k-123" not in repr(env)


def test_every_variable_is_documented_in_worker_help():
    worker = build_parser(WorkerEnv())._subparsers._group_actions[0].choices["worker"]
    text = worker.format_help()
    for var in WorkerEnv.variables():
        assert var.name in text and var.doc


def test_architecture_doc_env_table_is_generated():
    doc = ROOT / "docs" / "architecture.md"
    text = doc.read_text()
    assert with_env_table(text) == text, (
        "docs/architecture.md's env table is stale: run "
        "`python -m deepagent_temporal.contract docs/architecture.md`"
    )


def test_stream_entry_codec_round_trips():
    one = [dumps({"type": "token", "token": "a", "index": 0})]
    two = one + [dumps({"type": "llm_end", "token_count": 1})]
    for events in (one, two):
        name, value = encode_entry(events)
        assert len(decode_entry([name, value])) == len(events)


def test_no_product_code_cites_documents_outside_the_repository():
    offenders = []
    for root in (ROOT / "runtime", ROOT / "operator", ROOT / "charts"):
        for path in root.rglob("*"):
            if path.is_file() and path.suffix in (".py", ".md", ".yaml", ".tpl", ".txt"):
                if "ARCHITECTURE.md" in path.read_text(errors="replace"):
                    offenders.append(str(path.relative_to(ROOT)))
    assert not offenders
