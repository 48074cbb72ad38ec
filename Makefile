# One command sets up .venv/ and runs each job: `make demo`, `make test` (or `make test-fast` while editing).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# PyTorch first, pinned, so that pip takes a known build; override e.g. TORCH="torch torchvision".
TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup test test-fast lint demo bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# CI (.ci/run) runs `make test`: the linters, the type checker and every test.
test: lint
	$(BIN)/python -m pytest -q

# The tests that train for seconds or start several processes are left out: more than half of the time.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not distributed"

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

demo: setup
	$(BIN)/cyclip demo

bench: setup
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python benchmarks/objective.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/data_loading.py
	$(BIN)/python benchmarks/communication.py
	$(BIN)/python benchmarks/evaluation.py
	$(BIN)/python benchmarks/checkpointing.py
	$(BIN)/python benchmarks/search.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
