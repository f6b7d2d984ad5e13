# nas-service: `make demo` sets everything up and runs the main job; `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SPEC ?= examples/digits-spos.yaml

.PHONY: setup demo test lint bench clean

$(BIN)/nas: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: the local CPU build (any other request pulls GBs of CUDA packages)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev,ray]"
	touch $(BIN)/nas

setup: $(BIN)/nas

demo: setup
	rm -rf runs/demo
	$(BIN)/nas search $(SPEC) --local --output runs/demo

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python benchmarks/supernet_throughput.py
	$(BIN)/python benchmarks/end_to_end.py

clean:
	rm -rf runs .pytest_cache .ruff_cache
