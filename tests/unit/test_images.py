"""The Dockerfiles are lint-clean and start the same console scripts the package ships."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {"runtime": ROOT / "runtime/Dockerfile", "operator": ROOT / "operator/Dockerfile"}
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def _instruction(dockerfile: Path, name: str) -> list[str] | None:
    """The JSON-form argument of the last ``name`` instruction (the final stage's)."""
    found = None
    for line in dockerfile.read_text().splitlines():
        match = re.match(rf"{name}\s+(\[.*\])\s*$", line)
        if match:
            found = json.loads(match.group(1))
    return found


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_hadolint_is_clean(image):
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(DOCKERFILES[image])], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_runtime_image_runs_the_worker_cli():
    assert _instruction(DOCKERFILES["runtime"], "ENTRYPOINT") == ["deepagent-temporal"]
    assert _instruction(DOCKERFILES["runtime"], "CMD") == ["worker"]
    assert SCRIPTS["deepagent-temporal"] == "deepagent_temporal.cli:main"


def test_operator_image_runs_the_operator_cli():
    assert _instruction(DOCKERFILES["operator"], "ENTRYPOINT") == ["deepagent-operator"]
    assert SCRIPTS["deepagent-operator"] == "deepagent_operator.__main__:main"


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_images_run_as_non_root(image):
    text = DOCKERFILES[image].read_text()
    final_stage = text.rsplit("FROM ", 1)[1]
    assert re.search(r"^USER 10001", final_stage, re.M)
    assert "pip install" not in final_stage, "no build tools in the final stage"


@pytest.mark.parametrize("extra", ["runtime", "operator"])
def test_lock_files_agree_with_pyproject_pins(extra):
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][
        extra
    ]
    lock = (ROOT / extra / "requirements.lock").read_text().lower()
    for pin in pins:
        if "==" in pin:
            assert pin.lower() in lock, f"{pin} is not what {extra}/requirements.lock pins"
