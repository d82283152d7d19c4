# Two commands for a fresh machine: `make demo` (set up + run the main job) and `make test` (set up + all tests).
# Set-up creates .venv and installs the package with torch pinned by constraints.txt (CPU wheel here; a user's
# own CUDA torch >= 2.2 also satisfies pyproject.toml).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,all]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/visionfm demo --output outputs/demo

test: setup
	$(PY) -m pytest -q

# The rule set is in pyproject.toml ([tool.ruff.lint]); CI runs this before the tests.
lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: setup
	$(PY) benchmarks/extract.py

clean:
	rm -rf $(VENV) outputs
