# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint unit integration e2e bench clean serve system-deps image image-tools

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

# System packages the tests use: espeak-ng speaks the hotline test sentences; kubectl renders
# the Kustomize overlays in k8s/ (`kubectl kustomize`, offline) for tests/unit/k8s; Debian's
# chromium is the browser of the end-to-end tests (Playwright drives it; its own browser
# downloads are never used); fonts-noto-cjk lets pages and screenshots show Chinese.
system-deps:
	@command -v espeak-ng >/dev/null 2>&1 && test -x /usr/bin/chromium \
	  && fc-list :lang=zh | grep -q . || { \
	  echo "installing espeak-ng (test audio), chromium and fonts-noto-cjk (browser tests)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    espeak-ng chromium fonts-noto-cjk >/dev/null; }
	@command -v kubectl >/dev/null 2>&1 || { \
	  echo "installing kubectl (kubernetes-client: renders k8s/ for the tests)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null; }

# Container tools for `make image`: buildah/podman build and run daemonless; debootstrap makes
# the base image where no registry answers (see images/build.sh). Installed once, if missing.
image-tools:
	@command -v buildah >/dev/null 2>&1 && command -v podman >/dev/null 2>&1 \
	  && command -v debootstrap >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 || { \
	  echo "installing buildah, podman, debootstrap, skopeo, runc"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    buildah podman debootstrap skopeo runc >/dev/null; }

## The images: citybrain:latest (Dockerfile) and citybrain-tritonserver:latest (Dockerfile.triton).
## EXTRAS=city-models adds the city's own models' packages; BASE=... another base; TAG=... a tag.
image: image-tools
	BASE="$(BASE)" EXTRAS="$(EXTRAS)" TAG="$(TAG)" images/build.sh all

# The real OpenID provider the integration tests sign users in with (tests/oidc).
OIDC_STAMP := tests/oidc/node_modules/.installed-stamp
$(OIDC_STAMP): tests/oidc/package-lock.json
	cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error
	@touch $(OIDC_STAMP)

# axe-core, which the browser tests inject into the portal's pages (tests/e2e).
E2E_STAMP := tests/e2e/node_modules/.installed-stamp
$(E2E_STAMP): tests/e2e/package-lock.json
	cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error
	@touch $(E2E_STAMP)

## Set up, migrate, seed the demo city and serve it on http://127.0.0.1:8000 (SQLite, embedded).
demo: $(STAMP) system-deps
	$(BIN)/citybrain demo

serve: $(STAMP)
	$(BIN)/citybrain serve

## Lint (ruff, mypy, import-linter contracts), then the whole suite (SQLite and PostgreSQL).
test: $(STAMP) system-deps $(OIDC_STAMP) $(E2E_STAMP) lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check marketplace model_store billing tests bench
	$(BIN)/mypy marketplace model_store billing
	$(BIN)/mypy --strict sdk/citybrain_sdk
	$(BIN)/lint-imports

# Unit: SQLite and in-process stores only. Integration: what needs PostgreSQL, Redis or another
# real server, including the [postgresql]/[redis] runs of the suites in tests/unit.
unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration" tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest -q -m integration tests/unit tests/integration

## The portal in a real browser (Debian's chromium, headless); screenshots in var/screenshots/.
e2e: $(STAMP) system-deps $(OIDC_STAMP) $(E2E_STAMP)
	$(BIN)/python -m pytest -q tests/e2e

bench: $(STAMP)
	$(BIN)/python bench/catalog_search.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
