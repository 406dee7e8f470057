#!/usr/bin/env bash
# Builds the pinned control-plane binaries (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl) from the Go module proxy and caches them by version outside
# the work tree. Prints the directory holding them (the KUBEBUILDER_ASSETS convention).
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces the staging modules
# with local paths. A wrapper module requires it and points each staging module at
# its published v0.<minor>.<patch> instead.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.35.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
CACHE=${NBKUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nbkube}
OUT="$CACHE/k8s/$K8S_VERSION-etcd$ETCD_VERSION"
BINS=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl)

log() { echo "build-k8s: $*" >&2; }
die() { echo "build-k8s: ERROR: $*" >&2; exit 1; }

complete() {
  local b
  for b in "${BINS[@]}"; do [[ -x "$OUT/$b" ]] || return 1; done
  [[ -f "$OUT/.complete" ]]
}

if complete; then echo "$OUT"; exit 0; fi

command -v go >/dev/null 2>&1 || die "no Go toolchain on PATH: install Go 1.25 or newer (Debian: apt-get install golang-go, or use the official tarball), or set KUBEBUILDER_ASSETS to a directory holding ${BINS[*]}"

mkdir -p "$CACHE"
exec 9>"$CACHE/build.lock"
if ! flock -n 9; then
  log "another build holds $CACHE/build.lock; waiting for it"
  flock 9
  if complete; then echo "$OUT"; exit 0; fi
fi

WORKDIR=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf "$WORKDIR"' EXIT
export GOFLAGS=-mod=mod CGO_ENABLED=0
export GOPATH=${GOPATH:-$HOME/go}
minor=${K8S_VERSION#v1.}
start=$(date +%s)

log "resolving staging modules of k8s.io/kubernetes@$K8S_VERSION"
gomod=$(cd "$WORKDIR" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
[[ -f "$gomod" ]] || die "could not download k8s.io/kubernetes@$K8S_VERSION from the Go module proxy"
mapfile -t staging < <(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod")
[[ ${#staging[@]} -gt 10 ]] || die "found no staging replacements in $gomod"

mkdir -p "$WORKDIR/k8s" "$WORKDIR/etcd"
{
  echo "module nbkube.local/k8sbuild"
  echo "go 1.25.0"
  echo "require k8s.io/kubernetes $K8S_VERSION"
  for m in "${staging[@]}"; do echo "replace $m => $m v0.$minor"; done
} > "$WORKDIR/k8s/go.mod"
cat > "$WORKDIR/k8s/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor%%.*} -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitTreeState=clean"
(
  cd "$WORKDIR/k8s"
  log "go mod tidy (kubernetes $K8S_VERSION)"
  go mod tidy -e >/dev/null 2>"$WORKDIR/tidy.log" || { cat "$WORKDIR/tidy.log" >&2; die "go mod tidy failed for the kubernetes wrapper module"; }
  for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    log "building $c"
    go build -trimpath -ldflags "$ldflags" -o "$WORKDIR/bin/$c" "k8s.io/kubernetes/cmd/$c" || die "go build of $c failed (see above)"
  done
)
(
  cd "$WORKDIR/etcd"
  cat > go.mod <<GOMOD
module nbkube.local/etcdbuild
go 1.25.0
require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
  cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  log "building etcd $ETCD_VERSION"
  go mod tidy >/dev/null 2>"$WORKDIR/tidy-etcd.log" || { cat "$WORKDIR/tidy-etcd.log" >&2; die "go mod tidy failed for etcd"; }
  go build -trimpath -ldflags "-s -w" -o "$WORKDIR/bin/etcd" . || die "go build of etcd failed (see above)"
)
mkdir -p "$(dirname "$OUT")"
rm -rf "$OUT"
mv "$WORKDIR/bin" "$OUT"
echo "$K8S_VERSION etcd $ETCD_VERSION built in $(( $(date +%s) - start ))s" > "$OUT/.complete"
log "done in $(( $(date +%s) - start ))s: $OUT"
echo "$OUT"
