#!/usr/bin/env bash
# `make e2e-kind`: the end-to-end run a user does before trusting the product, on kind.
#   create cluster -> build + load images -> helm install -> in-cluster Temporal ->
#   apply a DeepAgent -> wait Ready -> a client Job streams one answer -> tear down.
# Needs docker and kind (exit 2 without them). E2E_DRY_RUN=1 prints the commands only.
# KEEP_CLUSTER=1 leaves the cluster up for debugging.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
HERE="$ROOT/tests/e2e/kind"
CLUSTER=${KIND_CLUSTER_NAME:-deepagent-e2e}
NAMESPACE=${E2E_NAMESPACE:-deepagent-e2e}
OPERATOR_NAMESPACE=${E2E_OPERATOR_NAMESPACE:-deepagent-system}
TAG=${E2E_IMAGE_TAG:-e2e}
RUNTIME_IMAGE="deepagent-temporal/runtime:$TAG"
OPERATOR_IMAGE="deepagent-temporal/operator:$TAG"
AGENT=e2e-agent
DRY_RUN=${E2E_DRY_RUN:-0}
KUBECTL=${KUBECTL:-kubectl}
HELM=${HELM:-helm}

run() {
  if [ "$DRY_RUN" = "1" ]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# Applies a manifest file after substituting the runtime image name.
apply_with_image() {
  if [ "$DRY_RUN" = "1" ]; then
    printf 'sed s#RUNTIME_IMAGE#%s# %q | %s apply -n %s -f -\n' "$RUNTIME_IMAGE" "$1" "$KUBECTL" "$NAMESPACE"
  else
    sed "s#RUNTIME_IMAGE#$RUNTIME_IMAGE#" "$1" | "$KUBECTL" apply -n "$NAMESPACE" -f -
  fi
}

require_tools() {
  local missing=()
  for tool in docker kind "$KUBECTL" "$HELM"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "e2e-kind needs: ${missing[*]} (not found on PATH); install them or run 'make test' for the local-cluster e2e" >&2
    exit 2
  fi
  if ! docker info >/dev/null 2>&1; then
    echo "e2e-kind needs a running Docker engine ('docker info' failed)" >&2
    exit 2
  fi
}

dump_diagnostics() {
  echo "----- e2e-kind failed: diagnostics -----" >&2
  "$KUBECTL" get all,deepagents -A -o wide || true
  "$KUBECTL" describe deepagents -n "$NAMESPACE" || true
  "$KUBECTL" get events -A --sort-by=.lastTimestamp || true
  "$KUBECTL" logs -n "$OPERATOR_NAMESPACE" -l app.kubernetes.io/name=deepagent-operator --tail=200 || true
  "$KUBECTL" logs -n "$NAMESPACE" -l "deepagent.dev/agent=$AGENT" --all-containers --tail=200 || true
  "$KUBECTL" logs -n "$NAMESPACE" job/stream-one-answer --tail=200 || true
}

teardown() {
  local status=$?
  if [ "$status" -ne 0 ]; then
    dump_diagnostics
  fi
  if [ "${KEEP_CLUSTER:-0}" != "1" ]; then
    kind delete cluster --name "$CLUSTER" || true
  fi
  exit "$status"
}

main() {
  if [ "$DRY_RUN" != "1" ]; then
    require_tools
    trap teardown EXIT
  fi

  run kind create cluster --name "$CLUSTER" --config "$ROOT/kind-config.yaml" --wait 120s
  run docker build -f "$ROOT/runtime/Dockerfile" -t "$RUNTIME_IMAGE" "$ROOT"
  run docker build -f "$ROOT/operator/Dockerfile" -t "$OPERATOR_IMAGE" "$ROOT"
  run kind load docker-image --name "$CLUSTER" "$RUNTIME_IMAGE" "$OPERATOR_IMAGE"

  run "$HELM" install deepagent-operator "$ROOT/charts/deepagent-operator" \
    --namespace "$OPERATOR_NAMESPACE" --create-namespace --wait --timeout 180s \
    --set "image.repository=deepagent-temporal/operator" --set "image.tag=$TAG" \
    --set "image.pullPolicy=IfNotPresent" \
    --set "runtimeImage.repository=deepagent-temporal/runtime" --set "runtimeImage.tag=$TAG"

  run "$KUBECTL" create namespace "$NAMESPACE"
  apply_with_image "$HERE/temporal-dev.yaml"
  run "$KUBECTL" rollout status -n "$NAMESPACE" deployment/temporal --timeout=180s

  run "$KUBECTL" apply -n "$NAMESPACE" -f "$HERE/deepagent.yaml"
  run "$KUBECTL" wait -n "$NAMESPACE" --for=condition=Ready "deepagent/$AGENT" --timeout=300s

  apply_with_image "$HERE/client-job.yaml"
  run "$KUBECTL" wait -n "$NAMESPACE" --for=condition=complete job/stream-one-answer --timeout=300s
  if [ "$DRY_RUN" = "1" ]; then
    run "$KUBECTL" logs -n "$NAMESPACE" job/stream-one-answer
  else
    local answer
    answer=$("$KUBECTL" logs -n "$NAMESPACE" job/stream-one-answer)
    echo "$answer"
    grep -q "Temporal" <<<"$answer" || { echo "the streamed answer does not mention Temporal" >&2; exit 1; }
  fi

  run "$KUBECTL" delete -n "$NAMESPACE" deepagent "$AGENT" --wait=true
  if [ "$DRY_RUN" != "1" ]; then
    echo "e2e-kind passed"
  fi
}

main "$@"
