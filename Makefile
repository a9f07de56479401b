# pmkeys — everything a newcomer needs is behind `make demo` and `make test`; both install
# what they need (Python venv, Go-built control plane and node, OpenBao, Debian packages, the
# images the node runs) by themselves.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: all deps venv binaries system-packages image test test-unit test-faults test-node bench demo demo-node down lint crd clean

all: test

$(STAMP): pyproject.toml dev/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' -e ./dev
	touch $(STAMP)

venv: $(STAMP)

binaries:
	bash hack/build-binaries.sh

system-packages:
	bash hack/install-system-packages.sh

# The image built from the Dockerfile (buildah, no Docker) plus the node's other images.
image: system-packages binaries
	bash hack/build-images.sh

deps: venv binaries system-packages

test: deps image lint
	$(PY) -m pytest $(PYTEST_ARGS)

# The chart in real pods on the local node (tests/node/); `make test` runs them too.
test-node: deps image
	$(PY) -m pytest tests/node $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

test-faults: deps
	$(PY) -m pytest -m faults -p no:randomly $(PYTEST_ARGS)

bench: deps
	@set -e; for script in bench/*.py; do echo "== $$script"; $(PY) $$script; done

demo: deps
	$(VENV)/bin/pmkeys demo

# The same on a real local node: the chart installed with helm, in pods from `make image`.
demo-node: deps image
	$(VENV)/bin/pmkeys demo --node

down: venv
	$(VENV)/bin/pmkeys dev down

lint: venv
	$(VENV)/bin/ruff check operator dev tests bench
	$(VENV)/bin/ruff format --check operator dev tests bench
	$(VENV)/bin/mypy
	$(PY) hack/check-structure.py

crd: venv
	$(PY) -m pmkeys.api.crd > crds/tenantapikeys.penguinmails.io.yaml

clean:
	rm -rf $(VENV) .cache
