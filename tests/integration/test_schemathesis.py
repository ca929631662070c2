"""Schemathesis over the whole API: the OpenAPI document is the contract, and nothing the
platform answers may contradict it.

A real server (``citybrain serve`` in a subprocess, SQLite, the demo city seeded, as
``tests/sdk/server.py`` starts it) is fuzzed by the schemathesis CLI once per kind of caller:
the operator (``data-bureau``), an agency (``traffic-police``, a government tenant) and a
developer (``parkeasy``), each with its own API key, given as the document's ``Bearer``
security scheme (so ``ignored_auth`` withholds or spoils it where the document says the
operation requires credentials, and expects 401). Every run has ``--checks all``, every
phase (examples, coverage, fuzzing, and the stateful phase, which follows the links it infers
between operations), a bounded number of examples per operation and a fixed seed (set
``FUZZ_SEED`` to explore another), and must report 0 failures and 0 errors.

Left out, and why:

- **Nothing of ``--checks all`` is disabled.** One check is narrowed for a few operations:
  ``positive_data_acceptance`` (a request valid by the schema must not get 400/422) also
  accepts 422 (and 400 or 415 for uploads) from the operations in :data:`SEMANTIC_422`. What makes
  their input valid is a rule no JSON Schema in the document can state: a relation between
  two fields or parameters (``from`` before ``to``; a quota's metric against its window; a
  price plan's fields by its kind), the content of a text in another language (SQL, a model
  manifest given as JSON in a query parameter, an uploaded archive or Parquet file), or the
  data itself (which columns a dataset has, and their types, are the dataset's, not the
  API's). For those the contract is the 422 with a message that names the problem; every
  other check still runs on them, including the response schema of that 422.
- **The fuzzer's own keys are never revoked or rotated by it** (``schemathesis_hooks.py``):
  it would lock itself out, and every later answer would be a 401 that tests nothing. Those
  calls go to an unknown key id instead (the route's 404).
- **One worker** (``-w 1``): Hypothesis describes strategies with ``ast.parse``, which is not
  thread-safe on CPython 3.11, and the v2 tensor schemas crash it under several workers
  ("AST constructor recursion depth mismatch") — an error of the tool, not of the API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.sdk.server import Platform, running_platform

HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "8"))
SEED = int(os.environ.get("FUZZ_SEED", "20261202"))

# One caller of each kind: the operator, an agency (government) and a developer.
CALLERS = {"operator": "data-bureau", "agency": "traffic-police", "developer": "parkeasy"}

# (method, path) whose valid input the schema cannot state; see the module docstring.
SEMANTIC_422 = {
    ("GET", "/api/v1/usage"): "'from' must be before 'to'",
    ("POST", "/api/v1/quotas"): "a subject is needed; units are limited per day or month",
    ("PUT", "/api/v1/products/{handle}/plan"): "a plan's fields are checked by its kind",
    ("POST", "/api/v1/products/{handle}/query"): "the dataset's columns and their types",
    ("POST", "/api/v1/products/{handle}/sql"): "SQL text",
    ("POST", "/api/v1/products/{handle}/versions/model"): "the manifest and the artifact",
    ("POST", "/api/v1/products/{handle}/versions/bentoml"): "the archive and its manifest",
    ("POST", "/api/v1/products/{handle}/versions/data"): "the data file and its schema",
}
_POSITIVE = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    if not SCHEMATHESIS.exists():
        pytest.fail(
            f"schemathesis is not installed beside {sys.executable} (pip install -e .[dev])"
        )
    with running_platform(tmp_path_factory.mktemp("fuzzed")) as running:
        yield running


def _config(platform: Platform, folder: Path, key: str) -> Path:
    """A schemathesis.toml: the key as the document's ``Bearer`` scheme (so that the
    ``ignored_auth`` check knows which credential to withhold or spoil), and
    ``positive_data_acceptance`` narrowed for :data:`SEMANTIC_422`."""
    document = httpx.get(f"{platform.url}/openapi.json", timeout=30).json()
    assert "Bearer" in document["components"]["securitySchemes"]
    lines = ["[auth.openapi.Bearer]", f"bearer = {json.dumps(key)}", ""]
    for (method, path), _why in sorted(SEMANTIC_422.items()):
        operation = document["paths"][path][method.lower()]  # KeyError: the list is stale
        statuses = [*_POSITIVE, "422"] + (["400", "415"] if "/versions/" in path else [])
        lines += [
            "[[operations]]",
            f'include-operation-id = "{operation["operationId"]}"',
            "checks.positive_data_acceptance.expected-statuses = " + json.dumps(statuses),
            "",
        ]
    config = folder / "schemathesis.toml"
    config.write_text("\n".join(lines))
    return config


@pytest.mark.parametrize("caller", sorted(CALLERS))
def test_the_api_keeps_its_openapi_contract(
    platform: Platform, caller: str, tmp_path: Path
) -> None:
    """Schemathesis (--checks all, every phase) finds no failure and no error."""
    keys = platform.keys
    report = tmp_path / "report.json"
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(_config(platform, tmp_path, keys[CALLERS[caller]])),
        "--no-color",
        "run",
        f"{platform.url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--request-timeout",
        "60",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": str(HOOKS),
        # Every demo key: whichever the run authenticates with stays usable.
        "FUZZ_PROTECTED_KEY_IDS": ",".join(k.split("_")[1] for k in keys.values()),
    }
    run = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    (tmp_path / "schemathesis.txt").write_text(run.stdout + run.stderr)
    summary = json.loads(report.read_text()) if report.exists() else {}
    failures = summary.get("failures", [])
    errors = summary.get("errors", [])
    cases = summary.get("test_cases", {})
    print(f"{caller}: {cases.get('generated')} cases, {len(failures)} kinds of failure")
    assert run.returncode == 0 and not failures and not errors, (
        f"schemathesis as the {caller} ({CALLERS[caller]}): exit {run.returncode}, "
        f"{cases.get('generated')} cases, {cases.get('unique_failures')} failures, "
        f"{len(errors)} errors\n{run.stdout[-20000:]}\n{run.stderr[-5000:]}"
    )
    tested = summary["operations"]
    assert tested["tested"] == tested["selected"] > 60, tested  # the whole API, not a part
