# deepagent-temporal: the README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test bench lint e2e-kind images deps system-deps k8s-binaries seaweedfs langgraph-dev clean

# Python environment: one editable install with every extra, rebuilt when pyproject changes.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[runtime,operator,gateway,dev]'
	touch $@

system-deps:
	bash tests/tools/install-system-deps.sh

# kube-apiserver, etcd, controller-manager, scheduler, kwok and helm, built once from
# their Go modules and cached by version (skipped when KUBEBUILDER_ASSETS or an
# existing cluster is used).
k8s-binaries:
	@if [ -n "$$USE_EXISTING_CLUSTER" ]; then echo "using existing cluster ($$KUBECONFIG)"; \
	else bash tests/tools/build-k8s-binaries.sh; fi

# weed (SeaweedFS, an S3-compatible server) for the payload storage tests, built once
# from its Go module and cached by version.
seaweedfs:
	bash tests/tools/build-seaweedfs.sh

# The reference server (`langgraph dev`) in its own venv, for the gateway's differential test.
langgraph-dev:
	bash tests/tools/build-langgraph-dev.sh

deps: $(VENV)/.installed system-deps k8s-binaries seaweedfs langgraph-dev

## demo: local Temporal + Redis + worker + example agent; streams one answer live.
demo: $(VENV)/.installed system-deps
	$(BIN)/deepagent-temporal demo

## test: lint, then unit, integration (Temporal + Redis), k8s and e2e tests on real services.
test: deps lint
	$(BIN)/pytest $(PYTEST_ARGS)

## bench: prints the comparison tables (streaming latency/throughput, operator).
bench: deps
	$(BIN)/python bench/run.py

## lint: ruff, and import-linter's layer contracts (pyproject.toml [tool.importlinter]).
lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

## e2e-kind: kind cluster + images + helm + DeepAgent + a streaming client Job (needs Docker).
e2e-kind:
	bash tests/e2e/kind/e2e-kind.sh

IMAGE_TAG ?= dev
## images: builds deepagent-temporal/runtime and deepagent-temporal/operator (needs Docker).
images:
	@command -v docker >/dev/null || { echo "make images needs docker" >&2; exit 2; }
	docker build -f runtime/Dockerfile -t deepagent-temporal/runtime:$(IMAGE_TAG) .
	docker build -f operator/Dockerfile -t deepagent-temporal/operator:$(IMAGE_TAG) .

clean:
	rm -rf $(VENV) .venv-langgraph-dev .pytest_cache .ruff_cache
