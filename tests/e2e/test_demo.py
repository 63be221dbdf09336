"""`make demo` (deepagent-temporal demo): streams one answer, summarises, leaves nothing behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deepagent_temporal.examples.research_agent import SCRIPT

pytestmark = pytest.mark.e2e

FINAL_ANSWER = SCRIPT[-1]


def _run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")}
    return subprocess.run(
        [sys.executable, "-m", "deepagent_temporal", "demo", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def _processes_holding(directory: Path) -> list[str]:
    """Processes with a file open under ``directory`` (every service logs there)."""
    holders = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd).startswith(str(directory)):
                    holders.append((proc / "cmdline").read_text().replace("\0", " "))
                    break
        except OSError:
            continue
    return holders


def _summary(stdout: str) -> tuple[Path, dict[str, int]]:
    log_dir = Path(re.search(r"^logs: (.+)$", stdout, re.M).group(1))
    transport = re.search(r"^transport: (.+)$", stdout, re.M).group(1)
    counts = {name: int(n) for name, n in re.findall(r"(\w+): (\d+)", transport)}
    return log_dir, counts


def test_demo_streams_an_answer_and_stops_everything():
    result = _run_demo()
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "offline scripted model" in out
    assert FINAL_ANSWER in out, "the streamed tokens spell the answer"
    assert re.search(r"^time to first token: \d+ ms$", out, re.M)
    assert re.search(r"^tokens: \d+ +\(\d+ tokens/s\)$", out, re.M)
    log_dir, counts = _summary(out)
    assert counts == {"redis": sum(counts.values())}, "with Redis up, Redis carries every token"
    assert _processes_holding(log_dir) == []


def test_failover_demo_switches_to_temporal_and_loses_nothing():
    result = _run_demo("--failover")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "[redis killed mid-answer]" in out
    assert "[transport switched: redis -> temporal]" in out
    streamed = re.sub(r"\n*\[[^\]]*\]\n*", "", out)
    assert FINAL_ANSWER in streamed, "no token lost or repeated across the switch"
    log_dir, counts = _summary(out)
    assert counts["redis"] > 0 and counts["temporal"] > 0
    assert _processes_holding(log_dir) == []
