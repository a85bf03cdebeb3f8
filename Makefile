# Two entry points for a new user (see README): `make demo` and `make test`.
# Each creates .venv on first use and installs the project with its pinned-by-range dependencies.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

# The demo makes its synthetic clips on first use (skipped when data/synthetic is complete), then trains a
# tiny EVA on the CPU through the DALI pipeline and evaluates it multi-view.
demo: $(STAMP)
	$(BIN)/python tools/make_synthetic_dataset.py --out data/synthetic
	$(BIN)/python train.py --cfg configs/demo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest tests

clean:
	rm -rf $(VENV) build *.egg-info
