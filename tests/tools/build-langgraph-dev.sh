#!/usr/bin/env bash
# The reference LangGraph Agent Server, `langgraph dev` (PyPI `langgraph-cli[inmem]`), in
# its own virtualenv: tests/gateway/test_differential.py runs it beside our gateway and
# compares their streams. Its own venv, so its pins never touch the project's.
#
# Output: ${LANGGRAPH_DEV_VENV:-.venv-langgraph-dev}/bin/langgraph; a stamp file records
# the pins, so a second run with the same pins does nothing.
# Needs: python3 >= 3.11 and PyPI.
set -euo pipefail
cd "$(dirname "$0")/../.."

# ---- pinned versions (tested together) ------------------------------------------------------
# The graph libraries match the project's pins (pyproject.toml), so both servers run the same
# LangGraph; the server packages are the reference.
PINS=(
    "langgraph-cli[inmem]==0.4.40"
    "langgraph-api==0.16.7"
    "langgraph-runtime-inmem==0.36.7"
    "langgraph==1.2.22"
    "langgraph-checkpoint==4.3.2"
    "langchain-core==1.8.1"
)
# ---------------------------------------------------------------------------------------------

VENV="${LANGGRAPH_DEV_VENV:-.venv-langgraph-dev}"
PYTHON="${PYTHON:-python3}"
STAMP="${VENV}/.installed"
want="${PINS[*]}"

if [[ -x "${VENV}/bin/langgraph" && -f "${STAMP}" && "$(cat "${STAMP}")" == "${want}" ]]; then
    exit 0
fi
echo "[build-langgraph-dev] installing ${want} into ${VENV}" >&2
test -x "${VENV}/bin/python" || "${PYTHON}" -m venv "${VENV}"
"${VENV}/bin/python" -m pip install -q --upgrade pip
"${VENV}/bin/python" -m pip install -q "${PINS[@]}"
"${VENV}/bin/python" -m pip check
printf '%s' "${want}" > "${STAMP}"
