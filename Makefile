# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.llv-installed
LLV    := $(BIN)/llv

.PHONY: setup demo test test-all bench reproduce lint clean

setup: $(STAMP)

# Re-installs only when the project metadata changed; the first run takes minutes (torch).
$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev,mpi,html]'
	touch $(STAMP)

# The embedded default: train on digits, a 21x21 filter-normalized surface, its contour plot.
demo: setup
	$(LLV) train
	$(LLV) surface
	$(LLV) plot contour outputs/surface/latest/surface.h5 --log
	@echo "demo: checkpoints in outputs/train/latest/, surface and figures in outputs/surface/latest/"

# The suite, then every docstring example of the package (pytest --doctest-modules llv).
test: setup
	$(BIN)/python -m pytest -q --durations=15
	$(BIN)/python -m pytest -q --doctest-modules llv -p no:cacheprovider

# Including the slow tests (paper presets, long distributed runs).
test-all: setup
	$(BIN)/python -m pytest -q -m "slow or not slow"

bench: setup
	$(BIN)/python benchmarks/run.py

# The CPU twin of a paper experiment: make reproduce NAME=fig5 (names: docs/reproduction.md).
reproduce: setup
	$(BIN)/python scripts/reproduce.py $(NAME) --cpu

lint: setup
	$(BIN)/ruff check llv tests benchmarks

clean:
	rm -rf build dist *.egg-info outputs
