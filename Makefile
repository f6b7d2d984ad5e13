# nas-service: `make demo` sets everything up and runs the main job; `make test` runs the test suite (`make test-fast`
# leaves out the slow end-to-end tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SPEC ?= examples/digits-spos.yaml

.PHONY: setup demo demo-local test test-fast lint lint-imports typecheck check bench bench-service clean

$(BIN)/nas: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: the local CPU build (any other request pulls GBs of CUDA packages)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[service,dev]"
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

# the inner loop: everything but the long end-to-end tests (marked `slow`), on two processes (pytest-xdist); about
# 70 s on 2 CPU cores
test-fast: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not slow" -n 2

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# the one-way imports of docs/architecture.md (contracts in pyproject.toml)
lint-imports: setup
	$(BIN)/lint-imports

# what CI checks besides the tests: import contracts and mypy on the engine's interfaces
check: lint-imports typecheck

# mypy on the interfaces: the spaces' supernets against the protocols they implement (nas.supernet, nas.space), the
# strategies that use them, the registries and tasks, the SDK and CLI, export, and the service packages
TYPECHECKED := nas/space.py nas/supernet.py nas/tasks.py nas/registry.py nas/strategies/base.py nas/strategies/bossnas \
	nas/strategies/spos.py nas/strategies/multitrial.py nas/data/registry.py nas/runner.py nas/events.py nas/spec.py \
	nas/arch.py nas/client nas/cli.py nas/cli_sdk.py nas/cli_common.py nas/cli_server.py nas/export nas/diagram \
	searchspaces/hytra/supernet.py searchspaces/mbconv/supernet.py searchspaces/fbnetv5/supernet.py service api workers

typecheck: setup
	$(BIN)/mypy $(TYPECHECKED)

bench: setup
	$(BIN)/python benchmarks/supernet_throughput.py
	$(BIN)/python benchmarks/end_to_end.py
	$(BIN)/python benchmarks/nas_info.py

bench-service: setup
	$(BIN)/python benchmarks/service_load.py

clean:
	rm -rf runs .pytest_cache .ruff_cache
