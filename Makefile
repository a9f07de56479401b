# pmkeys — everything a newcomer needs is behind `make demo` and `make test`; both install
# what they need (Python venv, Go-built control plane, OpenBao, Debian packages) by themselves.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: all deps venv binaries system-packages test test-unit test-faults bench demo down lint crd clean

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

deps: venv binaries system-packages

test: deps lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

test-faults: deps
	$(PY) -m pytest -m faults -p no:randomly $(PYTEST_ARGS)

bench: deps
	@set -e; for script in bench/*.py; do echo "== $$script"; $(PY) $$script; done

demo: deps
	$(VENV)/bin/pmkeys demo

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
