# Everything runs from a project-local virtual environment that the targets create.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: test lint typecheck pytest pytest-postgresql fuzz demo demo-serve bench clean

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

# What the tests need from outside Python, installed if missing: Debian's chromium and
# chromedriver (the browser tests), the npm packages pinned in tests/js/package-lock.json
# (the @atproto/api session) and Debian's nftables (the harness's namespace mode).
# Then the storage-facing tests again on PostgreSQL (a throwaway server from the
# machine's packages, installed if missing; tests/pg.py, docs/postgresql.md).
# Both runs are spread over PYTEST_WORKERS pytest-xdist processes, by default one more
# than the machine has cores (most tests wait on subprocesses, a browser, the reference
# PDS, fsync or the network namespaces, not on a core; on 2 cores 3 workers were as
# fast as 4 and 1.5x faster than 2, bench/RESULTS.md): PYTEST_WORKERS=0 runs them in
# this process, one at a time. The workers take the longest tests first
# (tests/conftest.py).
PYTEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$((n + 1)))
XDIST := -n $(PYTEST_WORKERS) --dist loadgroup
PG_TESTS ?= tests/test_node_api.py tests/test_federation.py tests/test_crash.py \
	tests/test_migrations.py tests/test_postgres.py tests/test_views.py \
	tests/test_moderation.py tests/test_takedown.py tests/test_rotation.py \
	tests/test_labels.py tests/test_portable_identity.py \
	tests/test_notifications.py tests/test_blobs.py
pytest: $(STAMP)
	scripts/ensure-chromium.sh
	scripts/ensure-npm-packages.sh
	scripts/ensure-nftables.sh
	$(BIN)/pytest $(XDIST)
	scripts/ensure-postgresql.sh
	SKYFED_TEST_STORAGE=postgresql $(BIN)/pytest $(XDIST) $(PG_TESTS)

# Only the PostgreSQL half of the above.
pytest-postgresql: $(STAMP)
	scripts/ensure-postgresql.sh
	SKYFED_TEST_STORAGE=postgresql $(BIN)/pytest $(XDIST) $(PG_TESTS)

test: lint typecheck pytest

# The hostile-input fuzz harness at length (make test runs it small): FUZZ_EXAMPLES
# examples per XRPC method, peer message type and page, the whole run cut off after
# FUZZ_SECONDS. What it found is recorded in docs/security.md.
FUZZ_EXAMPLES ?= 300
FUZZ_SECONDS ?= 900
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) timeout $(FUZZ_SECONDS) \
		$(BIN)/pytest tests/test_fuzz.py -p no:randomly -q -s --timeout=$(FUZZ_SECONDS)

# The story on three local nodes, then exit; demo-serve keeps the nodes up (Ctrl-C ends).
demo: $(STAMP)
	$(BIN)/python examples/demo.py

demo-serve: $(STAMP)
	$(BIN)/python examples/demo.py --serve

bench: $(STAMP)
	$(BIN)/python bench/protocol.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
