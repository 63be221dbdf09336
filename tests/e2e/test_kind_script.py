"""`make e2e-kind`: checked statically here; run for real only where Docker and kind exist."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests/e2e/kind/e2e-kind.sh"


def _run(env_extra: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [shutil.which("bash"), str(SCRIPT)],
        capture_output=True,
        text=True,
        env={**os.environ, **env_extra},
        timeout=timeout,
    )


def test_script_is_shellcheck_clean():
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    result = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dry_run_prints_the_exact_sequence():
    result = _run({"E2E_DRY_RUN": "1"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    commands = [line.split()[0:3] for line in lines]
    assert commands == [
        ["kind", "create", "cluster"],
        ["docker", "build", "-f"],
        ["docker", "build", "-f"],
        ["kind", "load", "docker-image"],
        ["helm", "install", "deepagent-operator"],
        ["kubectl", "create", "namespace"],
        [
            "sed",
            "s#RUNTIME_IMAGE#deepagent-temporal/runtime:e2e#",
            str(ROOT / "tests/e2e/kind/temporal-dev.yaml"),
        ],
        ["kubectl", "rollout", "status"],
        ["kubectl", "apply", "-n"],
        ["kubectl", "wait", "-n"],
        [
            "sed",
            "s#RUNTIME_IMAGE#deepagent-temporal/runtime:e2e#",
            str(ROOT / "tests/e2e/kind/client-job.yaml"),
        ],
        ["kubectl", "wait", "-n"],
        ["kubectl", "logs", "-n"],
        ["kubectl", "delete", "-n"],
    ]
    assert f"--config {ROOT / 'kind-config.yaml'}" in lines[0]
    assert "--for=condition=Ready deepagent/e2e-agent" in lines[9]
    assert "--for=condition=complete job/stream-one-answer" in lines[11]


def test_without_docker_or_kind_it_exits_2_with_a_reason(tmp_path):
    # A PATH that has only what the script needs before its tool check.
    for tool in ("bash", "dirname"):
        (tmp_path / tool).symlink_to(shutil.which(tool))
    result = _run({"PATH": str(tmp_path)})
    assert result.returncode == 2
    assert "e2e-kind needs: docker kind kubectl helm" in result.stderr


@pytest.mark.skipif(
    not (shutil.which("docker") and shutil.which("kind")),
    reason="make e2e-kind needs Docker and kind (no Docker engine on this machine)",
)
def test_e2e_kind():
    result = _run({}, timeout=3600)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    assert "e2e-kind passed" in result.stdout
