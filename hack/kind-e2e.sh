#!/usr/bin/env bash
# End to end on kind, for machines with Docker: create the cluster, build and load both images,
# helm install the chart, run the examples, wait for them, fetch the executed notebook, tear down.
#   make kind-e2e                      (KIND_CLUSTER=nbkube-e2e)
#   KEEP_CLUSTER=1 make kind-e2e       keeps the cluster for a look around
# Needs docker, kind, kubectl, git, curl; helm comes from hack/install-helm.sh if not on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${1:-nbkube-e2e}
TAG=${TAG:-e2e}
OPERATOR_IMAGE=nbkube/operator:$TAG
KERNEL_IMAGE=nbkube/kernel-python:$TAG
NS=nbkube
WORK=nbkube-e2e
OUT=${OUT:-$PWD/.kind-e2e}
log() { printf '\n== %s\n' "$*"; }
die() { echo "kind-e2e: ERROR: $*" >&2; exit 1; }

for tool in docker kind kubectl git curl; do
  command -v "$tool" >/dev/null || die "$tool is not on PATH"
done
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"
HELM=$(command -v helm || PYTHON=${PYTHON:-python3} bash hack/install-helm.sh)
NBKUBE=${NBKUBE:-.venv/bin/nbkube}  # the CLI (make kind-e2e installs the venv first)

cleanup() {
  local rc=$?
  if (( rc != 0 )); then
    log "failed ($rc): state for debugging"
    kubectl get nbenv,nbrun,pods -A -o wide || true
    kubectl -n "$NS" logs deploy/nbkube --tail=100 || true
  fi
  if [[ -z "${KEEP_CLUSTER:-}" ]]; then
    log "deleting kind cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" || true
  else
    log "kept: kind cluster $CLUSTER (kind delete cluster --name $CLUSTER)"
  fi
  exit "$rc"
}
trap cleanup EXIT

log "kind cluster $CLUSTER"
kind get clusters 2>/dev/null | grep -qx "$CLUSTER" && kind delete cluster --name "$CLUSTER"
kind create cluster --name "$CLUSTER" --config kind-config.yaml --wait 120s
kubectl config use-context "kind-$CLUSTER" >/dev/null

log "images"
docker build -f operator/Dockerfile -t "$OPERATOR_IMAGE" .
docker build -f operator/nbkube/gateway/Dockerfile -t "$KERNEL_IMAGE" .
kind load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE" "$KERNEL_IMAGE"

log "helm install"
"$HELM" install nbkube charts/nbkube --namespace "$NS" --create-namespace \
  --set image.repository=nbkube/operator --set image.tag="$TAG" --set image.pullPolicy=Never \
  --set networkPolicy.enabled=true --wait --timeout 5m
kubectl -n "$NS" rollout status deployment/nbkube --timeout=180s

log "examples"
kubectl create namespace "$WORK"
# the examples name nbkube/kernel-python:dev; the loaded image is :$TAG and must never be pulled
sed -e "s#image: nbkube/kernel-python:dev#image: $KERNEL_IMAGE#" \
    -e "s#^spec:#spec:\n  imagePullPolicy: Never#" examples/environment.yaml | kubectl -n "$WORK" apply -f -
kubectl -n "$WORK" wait --for=condition=Ready nbenv/py --timeout=300s
kubectl -n "$WORK" create configmap analysis --from-file=examples/analysis.ipynb
kubectl -n "$WORK" apply -f examples/run.yaml -f examples/failing-run.yaml -f examples/sweep.yaml

state() { kubectl -n "$WORK" get nbrun "$1" -o jsonpath='{.status.state}'; }
wait_run() {  # name expected-state expected-reason
  local name=$1 want=$2 reason=$3 got=""
  for _ in $(seq 1 300); do
    got=$(state "$name")
    case "$got" in Succeeded|Failed|Cancelled) break ;; esac
    sleep 2
  done
  local why
  why=$(kubectl -n "$WORK" get nbrun "$name" -o jsonpath='{.status.reason}')
  [[ "$got" == "$want" && "$why" == "$reason" ]] || die "$name ended '$got' ($why), expected $want ($reason)"
  echo "$name: $got ($why)"
}
wait_run analysis-1 Succeeded Succeeded
wait_run failing-1 Failed CellError
wait_run analysis-sweep Succeeded Succeeded
kubectl -n "$WORK" get nbrun -o wide

log "fetch the executed notebook through the API server (the user-facing APIService)"
mkdir -p "$OUT"
kubectl wait --for=condition=Available apiservice/v1alpha1.subresources.nbkube.io --timeout=120s
COMMIT=$(kubectl -n "$WORK" get nbrun analysis-1 -o jsonpath='{.status.result.commit}')
FILE=$(kubectl -n "$WORK" get nbrun analysis-1 -o jsonpath='{.status.result.path}')
kubectl get --raw "/apis/subresources.nbkube.io/v1alpha1/namespaces/$WORK/repositories/results/files/$FILE?ref=$COMMIT" \
  > "$OUT/analysis-1.ipynb"
rm -rf "$OUT/results" && "$NBKUBE" clone -n "$WORK" "$OUT/results"
git -C "$OUT/results" cat-file -e "$COMMIT:$FILE"
grep -q '"image/png"' "$OUT/analysis-1.ipynb" || die "the executed notebook has no figure"
echo "executed notebook: $OUT/analysis-1.ipynb (commit $COMMIT); results repository: $OUT/results"

log "kind e2e passed"
