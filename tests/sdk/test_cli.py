"""``citybrain-dev`` against the real platform, driven through typer's CliRunner: sign-in and the
config file's permissions, tables and ``--json``, access, keys, usage, invoices, infer from .npy
and JSON, model and dataset transfers, and errors that name the next command."""

from __future__ import annotations

import csv
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from citybrain_sdk.cli import config, get_app
from click.testing import Result
from typer.testing import CliRunner

from tests.sdk.conftest import publish_model
from tests.sdk.server import Platform
from tests.utils.server import free_port

SMOOTHER = "traffic-police.flow-smoother"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config file of the test's own; no credential from the surroundings leaks in."""
    path = tmp_path / "cfg" / "citybrain" / "config.toml"
    monkeypatch.setenv(config.CONFIG_ENV, str(path))
    for name in ("CITYBRAIN_DEV_URL", "CITYBRAIN_DEV_API_KEY", "CITYBRAIN_DEV_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # rich tables: no folding of handles
    return path


@pytest.fixture
def run(home: Path) -> Iterator[Any]:
    runner = CliRunner()
    cli_app = get_app()

    def invoke(*args: str) -> Result:
        return runner.invoke(cli_app, list(args), catch_exceptions=False)

    yield invoke


@pytest.fixture
def signed_in(run: Any, platform: Platform) -> Any:
    result = run("login", "--url", platform.url, "--api-key", platform.keys["parkeasy"])
    assert result.exit_code == 0, result.output
    return run


def _json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_login_stores_the_key_privately(run: Any, platform: Platform, home: Path) -> None:
    result = run("login", "--url", platform.url, "--api-key", platform.keys["parkeasy"])
    assert result.exit_code == 0, result.output
    assert "parkeasy" in result.stderr
    assert stat.S_IMODE(home.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.parent.stat().st_mode) == 0o700
    stored = config.load_profiles(home)["default"]
    assert stored == {"url": platform.url, "api_key": platform.keys["parkeasy"]}
    me = _json(run("whoami", "--json"))
    assert me["tenant"]["slug"] == "parkeasy"

    # A second profile keeps the first, and the file stays private after the rewrite.
    run(
        "login",
        "--profile",
        "env",
        "--url",
        platform.url,
        "--api-key",
        platform.keys["environment"],
    )
    assert stat.S_IMODE(home.stat().st_mode) == 0o600
    assert _json(run("--profile", "env", "whoami", "--json"))["tenant"]["slug"] == "environment"
    assert _json(run("whoami", "--json"))["tenant"]["slug"] == "parkeasy"
    run("logout", "--profile", "env")
    assert set(config.load_profiles(home)) == {"default"}


def test_a_bad_key_is_not_stored(run: Any, platform: Platform, home: Path) -> None:
    result = run("login", "--url", platform.url, "--api-key", "cbk_nope_nope")
    assert result.exit_code == 1
    assert "citybrain-dev login" in result.stderr and "request id" in result.stderr
    assert not home.exists()


def test_search_and_show(signed_in: Any) -> None:
    hits = _json(signed_in("search", "air", "--domain", "environment", "--json"))
    assert [p["handle"] for p in hits["data"]] == ["environment.air-quality"]
    assert hits["facets"]["tier"] == {"public": 1}
    table = signed_in("search", "flow")
    assert table.exit_code == 0 and SMOOTHER in table.stdout and "kind:" in table.stdout
    shown = _json(signed_in("show", SMOOTHER, "--json"))
    assert shown["product"]["kind"] == "model" and len(shown["versions"]) == 1
    assert "Traffic flow smoother" in signed_in("show", SMOOTHER).stdout


def test_missing_product_says_how_to_find_one(signed_in: Any) -> None:
    result = signed_in("show", "traffic-police.nope")
    assert result.exit_code == 1
    assert "not found" in result.stderr and "citybrain-dev search" in result.stderr


def test_request_access_and_decide(signed_in: Any, platform: Platform) -> None:
    handle = "health.clinic-capacity"
    asked = _json(
        signed_in("request-access", handle, "--purpose", "parking near clinics", "--json")
    )
    assert asked["state"] == "pending" and asked["scopes"] == ["data:read"]
    mine = _json(signed_in("access", "list", "--json"))
    assert asked["id"] in {r["id"] for r in mine}
    again = signed_in("request-access", handle, "--purpose", "twice")
    assert again.exit_code == 1 and "409" in again.stderr
    # The owner decides in its own profile.
    signed_in(
        "login", "--profile", "health", "--url", platform.url, "--api-key", platform.keys["health"]
    )
    decided = _json(
        signed_in(
            "--profile", "health", "access", "approve", asked["id"], "--reason", "ok", "--json"
        )
    )
    assert decided["state"] == "approved"
    grants = _json(signed_in("access", "grants", "--json"))
    assert decided["grant_id"] in {g["id"] for g in grants}


def test_keys(signed_in: Any) -> None:
    created = signed_in("keys", "create", "--scopes", "catalog:read", "--name", "cli-test")
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert token.startswith("cbk_") and "store the secret now" in created.stderr
    listed = _json(signed_in("keys", "--json"))
    key = next(k for k in listed if k["name"] == "cli-test")
    assert key["prefix"] in token and "cli-test" in signed_in("keys").stdout
    assert "revoked" in signed_in("keys", "revoke", key["id"]).stdout
    assert (
        next(k for k in _json(signed_in("keys", "--json")) if k["id"] == key["id"])["status"]
        == "revoked"
    )


def test_infer_from_npy_and_json(signed_in: Any, tmp_path: Path) -> None:
    flow = np.random.default_rng(5).poisson(20, size=(2, 12)).astype(np.float32)
    np.save(tmp_path / "flow.npy", flow)
    from_npy = _json(
        signed_in("infer", SMOOTHER, "--input", f"flow={tmp_path / 'flow.npy'}", "--json")
    )
    (tmp_path / "inputs.json").write_text(json.dumps({"flow": flow.tolist()}))
    # JSON numbers are cast to the model's declared FP32 before sending.
    out_path = tmp_path / "out.npz"
    from_json = signed_in(
        "infer", SMOOTHER, "--inputs", str(tmp_path / "inputs.json"), "-o", str(out_path)
    )
    assert from_json.exit_code == 0, from_json.output
    with np.load(out_path) as saved:
        np.testing.assert_array_equal(
            saved["smoothed"], np.asarray(from_npy["smoothed"]["data"], np.float32)
        )
    assert from_npy["smoothed"]["shape"] == [2, 12]
    inline = signed_in("infer", SMOOTHER, "-i", "flow=[[1,1,1,1]]")
    assert inline.exit_code == 0 and "smoothed float32 [1, 4]" in inline.stdout
    bad = signed_in("infer", SMOOTHER, "-i", "flow")
    assert bad.exit_code == 2 and "NAME=FILE" in bad.output


def test_no_grant_names_the_command_to_run(
    signed_in: Any,
    platform: Platform,
    smoother_artifact: tuple[Path, dict[str, Any]],
    tmp_path: Path,
) -> None:
    handle = publish_model(
        platform, "traffic-police", "cli-restricted", smoother_artifact, tier="restricted"
    )
    np.save(tmp_path / "flow.npy", np.ones((1, 4), np.float32))
    result = signed_in("infer", handle, "-i", f"flow={tmp_path / 'flow.npy'}")
    assert result.exit_code == 1
    assert (
        f"no grant for {handle}: run `citybrain-dev request-access {handle} --purpose"
        in result.stderr
    )


def test_models_push_and_pull(
    signed_in: Any, smoother_artifact: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    path, manifest = smoother_artifact
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    created = _json(
        signed_in(
            "create",
            "cli-smoother",
            "--kind",
            "model",
            "--title",
            "CLI",
            "--domain",
            "traffic",
            "--json",
        )
    )
    handle = created["handle"]
    pushed = signed_in(
        "models", "push", handle, str(path), "--manifest", str(tmp_path / "manifest.json")
    )
    assert pushed.exit_code == 0, pushed.output
    assert f"{handle} version 1: sha256:" in pushed.stdout
    assert "published" in signed_in("publish", handle).stdout
    pulled = signed_in("models", "pull", handle, str(tmp_path / "copy.pt"))
    assert pulled.exit_code == 0, pulled.output
    assert (tmp_path / "copy.pt").read_bytes() == path.read_bytes()


def test_usage_and_invoices(signed_in: Any) -> None:
    signed_in("infer", SMOOTHER, "-i", "flow=[[2,2,2]]")
    usage = _json(signed_in("usage", "--group-by", "product", "--json"))
    assert SMOOTHER in {r["product"] for r in usage}
    table = signed_in("usage")
    assert table.exit_code == 0 and SMOOTHER in table.stdout
    invoices = _json(signed_in("invoices", "--json"))
    assert set(invoices) >= {"data", "count"}
    assert signed_in("invoices").exit_code == 0


def test_query_and_dataset_transfers(signed_in: Any, tmp_path: Path) -> None:
    rows = "lot,free\nA,3\nB,5\nA,7\n"
    (tmp_path / "lots.csv").write_text(rows)
    (tmp_path / "schema.json").write_text(
        json.dumps(
            {"columns": [{"name": "lot", "type": "VARCHAR"}, {"name": "free", "type": "INTEGER"}]}
        )
    )
    handle = _json(
        signed_in(
            "create",
            "cli-lots",
            "--kind",
            "dataset",
            "--title",
            "Lots",
            "--domain",
            "traffic",
            "--json",
        )
    )["handle"]
    pushed = signed_in(
        "datasets",
        "push",
        handle,
        str(tmp_path / "lots.csv"),
        "--schema",
        str(tmp_path / "schema.json"),
    )
    if pushed.exit_code != 0 and (
        "no route" in pushed.stderr or "Method Not Allowed" in pushed.stderr
    ):
        pytest.skip("the platform has no data upload route yet (issue 16)")
    assert pushed.exit_code == 0, pushed.output
    assert "3 rows" in pushed.stdout
    signed_in("publish", handle)
    result = _json(
        signed_in(
            "query",
            handle,
            "--group-by",
            "lot",
            "--agg",
            "sum:free:total",
            "--order-by",
            "lot",
            "--json",
        )
    )
    assert result["rows"] == [["A", 10], ["B", 5]]
    filtered = signed_in("query", handle, "--where", "free gt 4", "--order-by", "-free")
    assert filtered.exit_code == 0 and "2 rows" in filtered.stderr
    written = signed_in(
        "query",
        handle,
        "--select",
        "lot,free",
        "--order-by",
        "lot,free",
        "-o",
        str(tmp_path / "q.csv"),
    )
    assert written.exit_code == 0, written.output
    with (tmp_path / "q.csv").open(newline="", encoding="utf-8") as f:
        assert list(csv.reader(f)) == [["lot", "free"], ["A", "3"], ["A", "7"], ["B", "5"]]
    downloaded = signed_in("datasets", "download", handle, str(tmp_path / "all.parquet"))
    assert downloaded.exit_code == 0 and (tmp_path / "all.parquet").stat().st_size > 0


def test_unreachable_platform_says_where_it_looked(run: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run("--url", url, "--api-key", "cbk_x_y", "search", "air")
    assert result.exit_code == 2
    assert url in result.stderr and "citybrain-dev login --url" in result.stderr


def test_flags_over_environment_over_profile(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config.save_profile(config.Profile("default", "http://stored:1", api_key="cbk_stored"))
    assert config.resolve() == config.Profile("default", "http://stored:1", api_key="cbk_stored")
    monkeypatch.setenv("CITYBRAIN_DEV_API_KEY", "cbk_env")
    monkeypatch.setenv("CITYBRAIN_DEV_URL", "http://env:2")
    assert config.resolve() == config.Profile("default", "http://env:2", api_key="cbk_env")
    flagged = config.resolve(url="http://flag:3", token="tok")
    assert flagged == config.Profile("default", "http://flag:3", token="tok")
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o600
