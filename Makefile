# Two commands: `make run` serves the app, `make test` runs every test. Both make the
# virtual environment and install into it first, once (again only when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
E2E_DEPS := tests/e2e/node_modules/.installed

.PHONY: run test lint bench load clean

run: $(INSTALLED)
	$(PY) -m web

test: $(INSTALLED) $(E2E_DEPS) lint
	$(PY) -m pytest

lint: $(INSTALLED)
	$(VENV)/bin/ruff check web tests bench
	$(VENV)/bin/ruff format --check web tests bench
	$(VENV)/bin/mypy

bench: $(INSTALLED)
	$(PY) -m bench

load: $(INSTALLED)
	$(PY) -m bench.load

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# axe-core for the accessibility checks, from the npm registry; skipped where npm is missing
# (the browser tests then say so, and CI, which has npm, requires them).
$(E2E_DEPS): tests/e2e/package.json
	if command -v npm >/dev/null; then cd tests/e2e && npm ci --no-audit --no-fund --silent && touch node_modules/.installed; fi

clean:
	rm -rf $(VENV) tests/e2e/node_modules .pytest_cache .mypy_cache .ruff_cache
