"""The chart's images, the Makefile's image names, the Dockerfiles and the CLIs agree."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from deepagent_operator.children import WORKER_COMMAND
from tests.k8s.test_chart_helm import env_of, operator_container, render

ROOT = Path(__file__).resolve().parents[2]
APP_VERSION = yaml.safe_load((ROOT / "charts/deepagent-operator/Chart.yaml").read_text())[
    "appVersion"
]


def _makefile_images() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"docker build -f \S+ -t (\S+):\$\(IMAGE_TAG\)", text))


def test_chart_defaults_name_the_images_make_builds(k8s_cluster):
    docs = render(k8s_cluster)
    operator_image = operator_container(docs)["image"]
    runtime_image = env_of(docs)["DEEPAGENT_DEFAULT_IMAGE"]
    assert operator_image == f"deepagent-temporal/operator:{APP_VERSION}"
    assert runtime_image == f"deepagent-temporal/runtime:{APP_VERSION}"
    assert _makefile_images() == {"deepagent-temporal/operator", "deepagent-temporal/runtime"}


def test_chart_args_are_a_command_of_the_operator_cli(k8s_cluster):
    container = operator_container(render(k8s_cluster))
    assert "command" not in container, "the chart relies on the image's ENTRYPOINT"
    args = [a for a in container["args"] if not a.startswith("--liveness")]
    result = subprocess.run(
        [sys.executable, "-m", "deepagent_operator", *args, "--help"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_worker_deployment_runs_the_runtime_cli():
    command = WORKER_COMMAND
    runtime_dockerfile = (ROOT / "runtime/Dockerfile").read_text()
    assert f'ENTRYPOINT ["{command[0]}"]' in runtime_dockerfile
    result = subprocess.run(
        [str(Path(sys.executable).parent / command[0]), *command[1:], "--help"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "DEEPAGENT_GRAPH" in result.stdout or "--graph" in result.stdout
