# Two entry points for a new user (see README): `make demo` and `make test`.
# Each creates .venv on first use and installs exactly the versions in requirements/lock.txt (with hashes), then
# the project itself without touching them. `make lock` refreshes the lock from pyproject.toml.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements/lock.txt
UV_VERSION := 0.13.9

.PHONY: demo test venv lock clean

$(STAMP): $(LOCK) pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

venv: $(STAMP)

# The demo makes its synthetic clips on first use (skipped when data/synthetic is complete), then trains a
# tiny EVA through the DALI pipeline (on the GPU when there is one) and evaluates it multi-view.
demo: $(STAMP)
	$(BIN)/python tools/make_synthetic_dataset.py --out data/synthetic
	$(BIN)/python train.py --cfg configs/demo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest tests

# One lock for Python 3.11 and newer on every platform (markers pick the right wheels), default DALI for CUDA 13,
# dev and bench extras included. uv resolves it; pip installs it.
lock:
	$(PY) -m venv .lockenv
	.lockenv/bin/python -m pip install uv==$(UV_VERSION)
	.lockenv/bin/uv pip compile pyproject.toml --extra cuda13 --extra dev -c requirements/constraints.in \
		--universal --python-version 3.11 --generate-hashes --no-emit-package eva-dali-video \
		--custom-compile-command "make lock" -o $(LOCK)

clean:
	rm -rf $(VENV) .lockenv build *.egg-info
