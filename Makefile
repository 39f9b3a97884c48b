# Two commands: `make demo` (set up + run the main job) and `make test` (set up + run the tests).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export TH_THREADS ?= 2
export OMP_WAIT_POLICY ?= PASSIVE
# pytest-xdist processes, one torch thread each: most tests are single-threaded or wait on a child process
TEST_WORKERS ?= 2

.PHONY: setup demo test bench lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/python scripts/demo.py

test: setup
	TH_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS)

bench: setup
	$(BIN)/python bench/bench_watermark.py
	$(BIN)/python bench/bench_model.py

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf out .pytest_cache
