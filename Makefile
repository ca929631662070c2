# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint unit integration bench clean serve system-deps

$(STAMP): pyproject.toml sdk/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is pinned to the CPU build (torch==2.13.0 in pyproject.toml) and resolved with
	# everything else in one pip run, so nothing pulls a CUDA build.
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# The SDK is its own distribution (sdk/pyproject.toml); its tests and the import contract
	# need it installed beside the platform.
	$(BIN)/python -m pip install --quiet -e "./sdk[all]"
	@touch $(STAMP)

# System packages the tests use: espeak-ng speaks the hotline test sentences.
system-deps:
	@command -v espeak-ng >/dev/null 2>&1 || { \
	  echo "installing espeak-ng (test audio)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null; }

# The real OpenID provider the integration tests sign users in with (tests/oidc).
OIDC_STAMP := tests/oidc/node_modules/.installed-stamp
$(OIDC_STAMP): tests/oidc/package-lock.json
	cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error
	@touch $(OIDC_STAMP)

## Set up, migrate, seed the demo city and serve it on http://127.0.0.1:8000 (SQLite, embedded).
demo: $(STAMP) system-deps
	$(BIN)/citybrain demo

serve: $(STAMP)
	$(BIN)/citybrain serve

## Lint (ruff, mypy, import-linter contracts), then the whole suite (SQLite and PostgreSQL).
test: $(STAMP) system-deps $(OIDC_STAMP) lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check marketplace model_store billing
	$(BIN)/mypy marketplace model_store billing
	$(BIN)/mypy --strict sdk/citybrain_sdk
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration

bench: $(STAMP)
	$(BIN)/python bench/catalog_search.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
