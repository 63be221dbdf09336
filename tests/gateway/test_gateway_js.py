"""The JS ``@langchain/langgraph-sdk`` (npm, unmodified) run by Node against a
``deepagent-temporal serve`` process: the same stream and join as the Python SDK."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from deepagent_temporal.contract import WorkerEnv
from deepagent_temporal.dev.servers import ManagedProcess, free_port
from deepagent_temporal.examples import shapes
from tests.gateway.conftest import GRAPHS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = Path(__file__).parent / "js"
#: npm installs the SDK here once (keyed by the pinned package.json)
CACHE = ROOT / ".cache" / "gateway-js"


def _npm_install() -> Path:
    spec = (JS_DIR / "package.json").read_text()
    CACHE.mkdir(parents=True, exist_ok=True)
    stamp = CACHE / ".installed"
    if not stamp.exists() or stamp.read_text() != spec:
        (CACHE / "package.json").write_text(spec)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=CACHE,
            check=True,
            timeout=300,
        )
        stamp.write_text(spec)
    shutil.copy(JS_DIR / "stream_and_join.mjs", CACHE / "stream_and_join.mjs")
    return CACHE / "stream_and_join.mjs"


@pytest.fixture(scope="module")
def served_gateway(temporal_server, redis_server, gateway_worker, tmp_path_factory):
    """``deepagent-temporal serve`` as its own process, configured by WorkerEnv."""
    log_dir = tmp_path_factory.mktemp("gateway")
    keys = log_dir / "api-keys"
    keys.write_text("# one key a line\njs-test-key\n")
    port = free_port()
    env = WorkerEnv.render(
        graph=GRAPHS,
        temporal_address=temporal_server.address,
        temporal_task_queue=gateway_worker.task_queue,
        redis_url=redis_server.url,
        gateway_host="127.0.0.1",
        gateway_port=port,
        gateway_api_keys_file=str(keys),
    )
    proc = ManagedProcess(
        "gateway", [sys.executable, "-m", "deepagent_temporal", "serve"], log_dir, env=env
    )
    proc.start()

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ok", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    proc.wait_until(up, 60)
    yield f"http://127.0.0.1:{port}", "js-test-key"
    proc.stop()


def test_js_sdk_stream_and_join(served_gateway):
    url, key = served_gateway
    script = _npm_install()
    out = subprocess.run(
        ["node", str(script)],
        cwd=script.parent,
        env={
            **os.environ,
            "GATEWAY_URL": url,
            "GATEWAY_API_KEY": key,
            "ASSISTANT": f"{shapes.__name__}:deep_agent",
            "LONG_ASSISTANT": f"{shapes.__name__}:long_agent",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["events"][0] == "metadata" and result["events"][-1] == "end"
    # the two model calls' tokens and the tool's result (sent whole, as LangGraph does)
    assert sorted(result["full"].values()) == sorted(
        [shapes.DEEP_SCRIPT[0]["content"], "5", shapes.DEEP_SCRIPT[1]]
    )
    merged = dict(result["first"])
    for mid, text in result["rest"].items():
        merged[mid] = merged.get(mid, "") + text
    assert sorted(merged.values()) == sorted(["Adding first.", "2", shapes.LONG_TEXT])
    assert result["rest"] and "metadata" not in result["restEvents"]
    # useStream-style: resumable, the run goes on after the page left; rejoining from
    # "-1" replays the whole run, from the last id gives exactly the rest
    page = result["page"]
    assert page["created"]["run_id"] and page["status"] == "success"
    whole = sorted(["Adding first.", "2", shapes.LONG_TEXT])
    assert page["rejoinedEvents"][0] == "metadata" and page["rejoinedEvents"][-1] == "end"
    assert sorted(page["rejoined"].values()) == whole
    merged = dict(page["seenBeforeLeaving"])
    for mid, text in page["resumed"].items():
        merged[mid] = merged.get(mid, "") + text
    assert sorted(merged.values()) == whole
