# One place for the commands the README and CI use.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# CPU build of torch; this machine serves it from a local wheel. Elsewhere point pip at
# PyTorch's CPU index, e.g. make setup TORCH_PIP_ARGS="--index-url <cpu index url>".
TORCH ?= torch==2.13.0
TORCH_PIP_ARGS ?=

.PHONY: setup demo test lint typecheck check bench-smoke clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)" $(TORCH_PIP_ARGS)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/anomalyd replay examples/machine.csv --plot machine.png

# The model-dependent end-to-end tests again on torch's generic kernels: another CPU's floats.
test: setup
	$(BIN)/pytest
	ATEN_CPU_CAPABILITY=default $(BIN)/pytest -q -m kernels

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
