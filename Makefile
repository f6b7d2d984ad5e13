# nas-service: `make demo` sets everything up and runs the main job; `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SPEC ?= examples/digits-spos.yaml

.PHONY: setup demo demo-local test lint bench bench-service clean

$(BIN)/nas: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: the local CPU build (any other request pulls GBs of CUDA packages)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev,ray]"
	touch $(BIN)/nas

setup: $(BIN)/nas

# the main job, through the service: start `nas up` (SQLite, local Ray), submit SPEC with the SDK, follow it,
# download the trained winner to runs/demo and load it
demo: setup
	rm -rf runs/demo
	$(BIN)/python examples/service_demo.py $(SPEC) --data-dir runs/service --output runs/demo

# the same search without the service, in this process
demo-local: setup
	rm -rf runs/demo-local
	$(BIN)/nas search $(SPEC) --local --output runs/demo-local

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python benchmarks/supernet_throughput.py
	$(BIN)/python benchmarks/end_to_end.py

bench-service: setup
	$(BIN)/python benchmarks/service_load.py

clean:
	rm -rf runs .pytest_cache .ruff_cache
