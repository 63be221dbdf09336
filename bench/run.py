"""`make bench`: runs each benchmark script in turn and prints their tables together.

Each script prints a markdown table of its own (our numbers beside the baseline measured
in the same run). Numbers are wall-clock on whatever machine runs this, so the header
says which machine that is; compare ratios, not absolute times.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    "bench_streaming.py",
    "bench_runtime.py",
    "bench_gateway.py",
    "bench_operator.py",
    "bench_long_runs.py",
]


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def main() -> int:
    print(f"# make bench — {datetime.date.today().isoformat()} — {machine()}\n")
    failed = []
    for script in SCRIPTS:
        path = HERE / script
        if not path.exists():
            failed.append(f"{script} (missing)")
            continue
        print(f"## {script}\n", flush=True)
        result = subprocess.run([sys.executable, str(path)], cwd=HERE.parent)
        if result.returncode != 0:
            failed.append(f"{script} (exit {result.returncode})")
        print(flush=True)
    if failed:
        print("benchmarks that did not finish: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
