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


def _copied_files(dockerfile: Path) -> list[Path]:
    """Files of the build context that the Dockerfile's ``COPY`` instructions take."""
    files: list[Path] = []
    for line in dockerfile.read_text().splitlines():
        parts = line.split()
        if not parts or parts[0] != "COPY" or any(p.startswith("--from") for p in parts):
            continue
        for source in (p for p in parts[1:-1] if not p.startswith("--")):
            path = ROOT / source
            if path.is_dir():
                files.extend(f for f in path.rglob("*") if f.is_file())
            elif path.is_file():
                files.append(path)
    return [f for f in files if "__pycache__" not in f.parts and ".egg-info" not in str(f)]


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_images_carry_no_tests_or_test_harness(image):
    copied = [f.relative_to(ROOT).as_posix() for f in _copied_files(DOCKERFILES[image])]
    assert copied, "the Dockerfile copies the package sources"
    offenders = [
        f
        for f in copied
        if f.startswith("tests/") or "/tests/" in f or "harness" in f or f.endswith("/testing.py")
    ]
    assert not offenders


def test_product_modules_stay_small():
    """One concern per module: no module of the two packages is over about 500 lines."""
    packages = [ROOT / "runtime/deepagent_temporal", ROOT / "operator/deepagent_operator"]
    sizes = {
        path.relative_to(ROOT).as_posix(): len(path.read_text().splitlines())
        for package in packages
        for path in package.rglob("*.py")
    }
    assert {path: n for path, n in sizes.items() if n > 500} == {}
