# `make test` and `make repro` set up .venv once (re-done only when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-fast repro lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade -q pip
	$(BIN)/python -m pip install -q --no-compile -e '.[dev]'
	# bytecode for every installed module, on all cores (pip compiles on one: ~10 s more);
	# like pip, it skips the few files of other Python versions that packages ship
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib >/dev/null || true
	touch $(STAMP)

install: $(STAMP)

# Two pytest workers (pytest-xdist), one file per worker at a time: most slow tests wait on
# subprocesses (DVC stages, Hydra jobs), so the two cores stay busy; a module's fixtures stay
# in one worker. Files go out in collection order, the longest first (tests/conftest.py).
TEST_WORKERS ?= 2

test: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Everything but the tests marked slow (pipeline, sweeps, server, end-to-end): < 2 minutes.
test-fast: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -m "not slow"

repro: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) outputs multirun
