# The two commands of the README: `make demo` (the main job) and `make test` (every test tier).
# Both install what they need from the registries into .venv first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup host-packages demo test unit lint crd manifests golden images

$(BIN)/.installed: pyproject.toml devcluster/pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]' -e ./devcluster
	touch $@

setup: $(BIN)/.installed

# What a real node and the image builds need from the OS (runc, CNI plugins, iptables, buildah, debootstrap):
# installed with apt-get as root when missing, else named (docs/real-node.md).
host-packages:
	@scripts/host_packages.sh

# The whole loop on a machine with no cluster: local control plane, a real node running our images, fake
# GPU/Apple nodes, CRD, the operator (Helm chart), the examples, and a conversation with SmolLM2.
demo: setup host-packages
	$(BIN)/modeldeploy dev demo

# Every tier: unit, cluster (real control plane built from the Kubernetes Go modules), engine.
test: setup host-packages
	$(BIN)/ruff check operator devcluster tests bench
	$(BIN)/mypy
	$(BIN)/pytest tests

unit: setup
	$(BIN)/pytest tests/unit

lint: setup
	$(BIN)/ruff check operator devcluster tests bench
	$(BIN)/ruff format --check operator devcluster tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

crd: setup
	$(BIN)/modeldeploy crd > crds/modeldeploy.io_modeldeployments.yaml

# The chart's CRD copy and deploy/ (plain manifests) are generated from crds/ and the chart.
manifests: crd
	$(BIN)/python scripts/gen_manifests.py

golden: setup
	MODELDEPLOY_UPDATE_GOLDEN=1 $(BIN)/pytest tests/unit/render -q

# The images in images/ for this machine's platform, tagged ghcr.io/modeldeploy/<image>:<version> as the
# chart and the operator pull them: with docker or podman when one works, else with buildah on bases built
# from Debian's packages (the local cluster's images; `make images IMAGES="operator llamacpp"` for some).
# The release workflow (.github/workflows/release.yaml) builds the same Dockerfiles for linux/amd64 and
# linux/arm64 on the upstream bases and pushes them on a tag.
images:
	scripts/build_images.sh $(IMAGES)
