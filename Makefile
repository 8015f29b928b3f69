# Everything runs from a project-local virtual environment that the targets create.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: test lint typecheck pytest demo demo-serve bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict protocol node

# The browser test needs Debian's chromium and chromedriver; this installs them if missing.
pytest: $(STAMP)
	scripts/ensure-chromium.sh
	$(BIN)/pytest

test: lint typecheck pytest

# The story on three local nodes, then exit; demo-serve keeps the nodes up (Ctrl-C ends).
demo: $(STAMP)
	$(BIN)/python examples/demo.py

demo-serve: $(STAMP)
	$(BIN)/python examples/demo.py --serve

bench: $(STAMP)
	$(BIN)/python bench/protocol.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
