# nbkube developer entry points. Everything installs what it needs itself.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/hack:$(PYTHONPATH)
CLUSTER_DIR ?= $(CURDIR)/.cluster

.PHONY: help venv lint unit engine-test cluster-test test k8s-binaries cluster-up cluster-down bench-cluster \
        demo bench-engine bench-operator bench-sessions bench-results kind-e2e helm-lint clean

help: ## show the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed ## create the virtual environment with every dependency

k8s-binaries: ## build (once, cached) or locate etcd, kube-apiserver, controller-manager, scheduler, kubectl
	@if [ -n "$$KUBEBUILDER_ASSETS" ]; then echo "$$KUBEBUILDER_ASSETS"; else bash hack/build-k8s.sh; fi

lint: venv ## ruff, and mypy (strict, see pyproject.toml) on the package
	$(VENV)/bin/ruff check operator tests hack bench
	$(VENV)/bin/ruff format --check operator tests hack bench
	$(VENV)/bin/mypy

unit: venv ## fast tests: models, builders, no processes
	$(PY) -m pytest -m "not cluster and not gateway" -q

engine-test: venv ## kernel engine against real kernel gateway processes
	$(PY) -m pytest -m "gateway and not cluster" -q

cluster-test: venv k8s-binaries iptables ## tests on the local control plane
	KUBEBUILDER_ASSETS=$${KUBEBUILDER_ASSETS:-$$(bash hack/build-k8s.sh)} $(PY) -m pytest -m cluster -q

test: venv k8s-binaries iptables lint ## everything CI runs: lint, unit, engine and cluster tests
	KUBEBUILDER_ASSETS=$${KUBEBUILDER_ASSETS:-$$(bash hack/build-k8s.sh)} $(PY) -m pytest -q -ra

cluster-up: venv ## start the local control plane + node agent; prints `export KUBECONFIG=...`
	@$(PY) -m nbkube_testenv.cluster up --dir $(CLUSTER_DIR)

cluster-down: ## stop every process cluster-up started
	@if [ -x $(PY) ]; then $(PY) -m nbkube_testenv.cluster down --dir $(CLUSTER_DIR); \
	  else $(PYTHON) hack/nbkube_testenv/cluster.py down --dir $(CLUSTER_DIR); fi

bench-cluster: venv k8s-binaries ## local cluster: cold build time, warm start, control-plane RSS, pod-to-serving
	KUBEBUILDER_ASSETS=$${KUBEBUILDER_ASSETS:-$$(bash hack/build-k8s.sh)} $(PY) -m nbkube_testenv.measure

demo: venv k8s-binaries ## the local demo: cluster, CRDs, operator, a NotebookRun executed, results shown
	KUBEBUILDER_ASSETS=$${KUBEBUILDER_ASSETS:-$$(bash hack/build-k8s.sh)} $(PY) -m nbkube_testenv.demo --dir $(CURDIR)/.demo

bench-engine: venv ## per-cell overhead: raw ZMQ, nbclient, papermill, stock gateway, nbkube
	$(PY) bench/bench_engine.py

bench-operator: venv k8s-binaries ## apply-to-first-cell, 32x50 sweep, status patches, operator RSS
	KUBEBUILDER_ASSETS=$${KUBEBUILDER_ASSETS:-$$(bash hack/build-k8s.sh)} $(PY) bench/bench_operator.py

bench-sessions: venv k8s-binaries ## session create-to-Ready, per-cell overhead via the user API, 32 sessions x 50 cells
	KUBEBUILDER_ASSETS=$${KUBEBUILDER_ASSETS:-$$(bash hack/build-k8s.sh)} $(PY) bench/bench_sessions.py

bench-results: venv k8s-binaries ## results repository commits/s, fetch time, authorised vs direct fetch
	KUBEBUILDER_ASSETS=$${KUBEBUILDER_ASSETS:-$$(bash hack/build-k8s.sh)} $(PY) bench/bench_results.py

.PHONY: chromium
chromium: ## install Chromium from the Debian packages (once) for the browser test; prints its path
	@bash hack/install-chromium.sh

.PHONY: iptables
iptables: ## install iptables from the Debian packages (once): the node agent enforces NetworkPolicy egress with it
	@bash hack/install-iptables.sh >/dev/null

.PHONY: helm images crds
helm: venv ## install helm once (cached in ~/.cache/nbkube/helm) and print its path; HELM=path uses yours
	@PYTHON=$(PY) bash hack/install-helm.sh

helm-lint: venv ## helm lint --strict and helm template of charts/nbkube (defaults and every option)
	@helm=$$(PYTHON=$(PY) bash hack/install-helm.sh) && \
	  $$helm lint --strict charts/nbkube && \
	  $$helm lint --strict charts/nbkube -f charts/nbkube/ci/all-options-values.yaml && \
	  $$helm template nbkube charts/nbkube >/dev/null && \
	  $$helm template nbkube charts/nbkube -f charts/nbkube/ci/all-options-values.yaml >/dev/null && \
	  echo "chart OK"

crds: venv ## regenerate crds/ and the chart's CRD templates from the API models
	$(PY) -m nbkube.api.crdgen crds --chart charts/nbkube/templates/crds

images: ## docker build the operator and kernel images (needs a Docker engine)
	docker build -f operator/Dockerfile -t nbkube/operator:dev .
	docker build -f operator/nbkube/gateway/Dockerfile -t nbkube/kernel-python:dev .

KIND_CLUSTER ?= nbkube-e2e
kind-e2e: venv ## for machines with Docker: kind cluster, images, helm install, run the examples
	bash hack/kind-e2e.sh $(KIND_CLUSTER)

clean: cluster-down ## remove the venv and local state
	rm -rf $(VENV) .demo .pytest_cache .ruff_cache
