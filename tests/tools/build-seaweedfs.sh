#!/usr/bin/env bash
# Build SeaweedFS (Apache-2.0), the S3-compatible server the payload-storage tests use, from
# its Go module (via the Go module proxy).
#
# Output: ${DEEPAGENT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/deepagent-temporal}/
#           seaweedfs-<ver>-r<rev>/bin/weed
# The bin dir path is printed as the last line of stdout. A second run with the cache present
# does nothing. The build goes to a temp dir that is renamed into place, so a killed build
# never leaves a half-filled cache.
#
# Usage: build-seaweedfs.sh [--cached-only]
#   --cached-only  print the bin dir if the cache is complete, else exit 2 without building.
#
# Needs: go (>= the go directive of the module below) and network access to the Go module
# proxy. `go install` refuses this module (its go.mod has replace directives), so the build
# downloads the module and runs `go build ./weed` inside it. About 5 minutes on 2 cores.
set -euo pipefail

# ---- pinned versions ------------------------------------------------------------------------
SEAWEEDFS_VERSION="v0.0.0-20261109003541-7506e5f91cd6"   # github.com/seaweedfs/seaweedfs
BUILD_REV="1"            # bump when the build recipe (flags, ldflags) changes
# ---------------------------------------------------------------------------------------------

MODULE="github.com/seaweedfs/seaweedfs"
CACHE_ROOT="${DEEPAGENT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/deepagent-temporal}"
KEY="seaweedfs-${SEAWEEDFS_VERSION}-r${BUILD_REV}"
DEST="${CACHE_ROOT}/${KEY}"
BINARIES=(weed)

log() { printf '[build-seaweedfs] %s\n' "$*" >&2; }

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
cleanup() { chmod -R u+w "${WORK}" 2>/dev/null || true; rm -rf "${WORK}"; }
trap cleanup EXIT
OUT="${WORK}/out/bin"
mkdir -p "${OUT}"

export CGO_ENABLED=0
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export GOWORK=off
export GOFLAGS="${GOFLAGS:-} -mod=mod"
start=$SECONDS

log "downloading ${MODULE}@${SEAWEEDFS_VERSION}"
# `go mod download` needs a module context; a throwaway one.
mkdir -p "${WORK}/dl"
printf 'module deepagent.local/seaweedfsbuild\n\ngo 1.26.0\n' >"${WORK}/dl/go.mod"
src="$(cd "${WORK}/dl" && go mod download -json "${MODULE}@${SEAWEEDFS_VERSION}" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
[[ -d "${src}" ]] || { log "error: could not download ${MODULE}@${SEAWEEDFS_VERSION}"; exit 1; }

# The module cache is read-only: build from a writable copy (go.sum may be updated).
cp -r "${src}" "${WORK}/src"
chmod -R u+w "${WORK}/src"
log "building weed (${SEAWEEDFS_VERSION})"
(
    cd "${WORK}/src"
    go build -trimpath -ldflags "-s -w" -o "${OUT}/weed" ./weed
)

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
