"""Secrets hygiene, checked over a whole scenario against a real server process.

The server runs as ``citybrain serve`` at debug level with every secret it can hold: a database
URL with a password, a Stripe key, an OIDC client secret. The scenario makes and uses API keys
(created over HTTP, rotated, revoked, forged, sent in every way a client may send one, in a
query string too), signs portal users in with tokens from the real OpenID provider of
tests/oidc, calls a model, reads metrics, readiness and the audit log, then syncs Stripe
(``citybrain billing stripe-sync``, at debug level, against the local Stripe fake of
tests/unit/billing/test_stripe_sync.py: Stripe has no local server) and upgrades the database
from the CLI. Everything that comes back — every response's status line, headers and body,
the server's stdout and stderr, the CLI's output — is kept, and no secret may appear in any of
it, except a key's secret in the one response that created it.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from billing.tables import usage_event
from marketplace.config import Settings
from marketplace.db import make_engine, make_session_factory, transaction
from marketplace.seed import seed_demo_city
from model_store import BlobStore
from tests.integration.test_oidc import SECRET as OIDC_CLIENT_SECRET
from tests.integration.test_oidc import provider, token  # noqa: F401 (the fixture)
from tests.unit.billing.test_stripe_sync import FakeStripe, fake_stripe  # noqa: F401
from tests.utils.postgres import admin_connection, scratch_database
from tests.utils.server import ServerProcess, free_port, isolated_env

ROOT = Path(__file__).resolve().parents[2]
MODEL = "traffic-police.flow-smoother"
FLOW = {"inputs": [{"name": "flow", "datatype": "FP32", "shape": [1, 8], "data": [1.0] * 8}]}
_DEADLINE_S = 120.0  # a bound for "eventually", never asserted as a duration
# Runs a CLI command with every logger at debug level, as the server's are.
_DEBUG_CLI = (
    "import logging, sys; logging.basicConfig(level=logging.DEBUG, stream=sys.stderr);"
    " from marketplace.cli import app; sys.exit(app())"
)


@dataclass
class Transcript:
    """Everything the platform said, and the responses that created a secret."""

    seen: list[tuple[str, str]] = field(default_factory=list)
    creations: dict[str, str] = field(default_factory=dict)  # secret -> where it was created

    def add(self, where: str, text: str) -> None:
        self.seen.append((where, text))

    def response(self, where: str, r: httpx.Response) -> httpx.Response:
        headers = "\n".join(f"{k}: {v}" for k, v in r.headers.items())
        self.add(where, f"{r.status_code} {r.reason_phrase}\n{headers}\n\n{r.text}")
        return r

    def leaks(self, secret: str) -> list[str]:
        made_at = self.creations.get(secret)
        return [where for where, text in self.seen if secret in text and where != made_at]


@pytest.fixture
def secret_database() -> Iterator[str]:
    """A database of its own, reached by a URL with a password (trust auth ignores it, so
    the password travels everywhere the URL does and is refused nowhere)."""
    with scratch_database("citybrain_secrets") as db:
        password = f"pw-{secrets.token_urlsafe(18)}"
        yield make_url(db.url).set(password=password).render_as_string(hide_password=False)


def _environ(tmp_path: Path, url: str, **more: str) -> dict[str, str]:
    return isolated_env(
        {
            "CITYBRAIN_DATABASE_URL": url,
            "CITYBRAIN_DATA_DIR": str(tmp_path / "var"),
            "CITYBRAIN_LOG_LEVEL": "debug",
            "CITYBRAIN_BILLING__FLUSH_INTERVAL_S": "0.1",
            **more,
        }
    )


def _cli(
    env: dict[str, str], *args: str, transcript: Transcript
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-c", _DEBUG_CLI, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    transcript.add(f"cli {' '.join(args)}", f"{done.stdout}\n{done.stderr}")
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@contextlib.contextmanager
def _server(env: dict[str, str], log: Path) -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, "-m", "marketplace.cli", "serve", "--port", str(port)]
    with ServerProcess(argv, port, log, env=env, ready_timeout_s=_DEADLINE_S) as server:
        yield server.url


def _secret_of(key: str) -> str:
    return key.split("_", 2)[2]


def test_no_secret_appears_after_its_creation(
    secret_database: str,
    tmp_path: Path,
    provider: str,  # noqa: F811
    fake_stripe: tuple[FakeStripe, str],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.CRITICAL)  # this process's own logs are not the platform's
    stripe, stripe_base = fake_stripe
    stripe_key = f"sk_test_{secrets.token_urlsafe(24)}"
    db_password = make_url(secret_database).password
    assert db_password
    env = _environ(
        tmp_path,
        secret_database,
        CITYBRAIN_STRIPE__API_KEY=stripe_key,
        CITYBRAIN_STRIPE__API_BASE=stripe_base,
        CITYBRAIN_OIDC__SERVER_URL=provider,
        CITYBRAIN_OIDC__REALM="citybrain",
        CITYBRAIN_OIDC__CLIENT_ID="parkeasy-admin",
        CITYBRAIN_OIDC__CLIENT_SECRET=OIDC_CLIENT_SECRET,
        CITYBRAIN_OIDC__INTROSPECT="true",
    )
    said = Transcript()
    log = tmp_path / "server.log"
    tokens: list[str] = []
    with _server(env, log) as base:
        # The demo city, seeded beside the running server (its keys never pass through it).
        settings = Settings(data_dir=tmp_path / "var", database_url=secret_database)
        engine = make_engine(secret_database)
        factory = make_session_factory(engine)
        assert settings.model_store.artifact_url is not None
        with transaction(factory) as session:
            seeded = seed_demo_city(
                session, blobs=BlobStore(settings.model_store.artifact_url)
            ).keys
        operator, parkeasy = seeded["data-bureau"], seeded["parkeasy"]
        client = httpx.Client(base_url=base, timeout=60)

        def call(method: str, path: str, **kw: Any) -> httpx.Response:
            return said.response(f"{method} {path}", client.request(method, path, **kw))

        # Keys sent every way a client may send one, and wrong ways too.
        assert call("GET", "/api/v1/me", headers={"Authorization": f"Bearer {operator}"}).is_success
        assert call("GET", "/api/v1/me", headers={"X-API-Key": operator}).is_success
        forged = f"cbk_{operator.split('_')[1]}_{secrets.token_urlsafe(32)}"
        assert call("GET", "/api/v1/me", headers={"X-API-Key": forged}).status_code == 401
        assert (
            call("GET", "/api/v1/me", headers={"Authorization": f"Token {operator}"}).status_code
            == 401
        )
        assert call("GET", f"/api/v1/nowhere?api_key={operator}").status_code == 404
        assert call(
            "GET", f"/api/v1/products?key={parkeasy}", headers={"X-API-Key": parkeasy}
        ).is_success
        # A key made over HTTP, used, rotated, used both ways in the grace period, revoked.
        made = call(
            "POST",
            "/api/v1/keys",
            json={"scopes": ["infer", "catalog:read"], "name": "ci"},
            headers={"X-API-Key": parkeasy},
        )
        assert made.status_code == 201, made.text
        new_key, key_id = made.json()["token"], made.json()["id"]
        said.creations[_secret_of(new_key)] = said.seen[-1][0] + " #create"
        said.seen[-1] = (said.creations[_secret_of(new_key)], said.seen[-1][1])
        assert call("GET", "/api/v1/me", headers={"X-API-Key": new_key}).is_success
        infer = call(
            "POST",
            f"/v2/models/{MODEL}/infer",
            json=FLOW,
            headers={"Authorization": f"Bearer {new_key}", "Idempotency-Key": "hygiene-1"},
        )
        assert infer.status_code == 200, infer.text
        rotated = call("POST", f"/api/v1/keys/{key_id}/rotate", headers={"X-API-Key": parkeasy})
        assert rotated.status_code == 200, rotated.text
        rotated_key = rotated.json()["token"]
        said.creations[_secret_of(rotated_key)] = said.seen[-1][0] + " #create"
        said.seen[-1] = (said.creations[_secret_of(rotated_key)], said.seen[-1][1])
        assert call("GET", "/api/v1/me", headers={"X-API-Key": new_key}).is_success  # grace
        assert call("GET", "/api/v1/me", headers={"X-API-Key": rotated_key}).is_success
        assert call("DELETE", f"/api/v1/keys/{key_id}", headers={"X-API-Key": parkeasy}).is_success
        assert call("GET", "/api/v1/me", headers={"X-API-Key": rotated_key}).status_code == 401
        assert call("GET", "/api/v1/keys", headers={"X-API-Key": parkeasy}).is_success
        # Portal users: real tokens, accepted and refused.
        member = token(provider, "parkeasy-admin")
        elsewhere = token(provider, "parkeasy-admin", realm="elsewhere")
        tampered = member[:-6] + ("AAAAAA" if not member.endswith("AAAAAA") else "BBBBBB")
        tokens += [member, elsewhere, tampered]
        bearer = {"Authorization": f"Bearer {member}"}
        assert call("GET", "/api/v1/me", headers=bearer).is_success
        assert call("GET", "/api/v1/products", headers=bearer).is_success
        call("POST", f"/v2/models/{MODEL}/infer", json=FLOW, headers=bearer)
        assert (
            call("GET", "/api/v1/me", headers={"Authorization": f"Bearer {elsewhere}"}).status_code
            == 401
        )
        assert (
            call("GET", "/api/v1/me", headers={"Authorization": f"Bearer {tampered}"}).status_code
            == 401
        )
        # What operators and probes read.
        for path in ("/metrics", "/api/v1/audit?per_page=100", "/api/v1/usage"):
            assert call("GET", path, headers={"X-API-Key": operator}).is_success, path
        for path in ("/v2/health/ready", "/api/v1/health", "/v2", "/openapi.json"):
            assert call("GET", path).is_success, path
        # The call above is billed: wait for its event to reach the database, then sync Stripe.
        deadline = time.monotonic() + _DEADLINE_S
        with engine.connect() as conn:
            while not conn.execute(
                select(func.count()).select_from(usage_event).where(usage_event.c.id == "hygiene-1")
            ).scalar_one():
                assert time.monotonic() < deadline, "the usage event never reached the database"
                time.sleep(0.1)
        engine.dispose()
        _cli(env, "billing", "stripe-sync", transcript=said)
        assert stripe.customers and stripe.meter_events  # the sync really talked to "Stripe"
        _cli(env, "db", "upgrade", transcript=said)
        _cli(env, "usage", "status", transcript=said)
        client.close()
        # Errors are where URLs and secrets slip out: the database goes away under the server.
        with admin_connection() as conn:
            conn.execute(f'DROP DATABASE "{make_url(secret_database).database}" WITH (FORCE)')
        outage = [
            ("GET", "/api/v1/me", {"X-API-Key": operator}),
            ("GET", "/api/v1/products", {"Authorization": f"Bearer {parkeasy}"}),
            ("GET", "/api/v1/me", bearer),
            ("GET", "/v2/health/ready", {}),
        ]
        # A first failure and a repeated one; the key reader's pool waits for a connection
        # (30 s) before it gives up, so the inference call goes once.
        outage = [*outage, ("POST", f"/v2/models/{MODEL}/infer", {"X-API-Key": parkeasy}), *outage]
        statuses = []
        for method, path, headers in outage:
            # A connection of its own each: the server closes one after an unhandled error.
            with httpx.Client(base_url=base, timeout=60) as alone:
                r = alone.request(
                    method, path, headers=headers, json=FLOW if method == "POST" else None
                )
            statuses.append(said.response(f"{method} {path} (database gone)", r).status_code)
        assert statuses[3] == statuses[8] == 503  # readiness says so
        assert statuses[4] == 503  # the key cannot be read: unavailable, not unauthenticated
    said.add("server log", log.read_text(errors="replace"))

    server_log = next(text for where, text in said.seen if where == "server log")
    assert "citybrain.access" in server_log and " DEBUG " in server_log  # debug level, all in
    checked = {
        "the database password": db_password,
        "the Stripe key": stripe_key,
        "the OIDC client secret": OIDC_CLIENT_SECRET,
        **{f"{slug}'s key": _secret_of(k) for slug, k in seeded.items()},
        "a forged key": _secret_of(forged),
        "the key made over HTTP": _secret_of(new_key),
        "the rotated key": _secret_of(rotated_key),
        **{f"portal token {i}": t for i, t in enumerate(tokens)},
        **{f"portal token {i}'s signature": t.rsplit(".", 1)[1] for i, t in enumerate(tokens)},
    }
    leaks = {name: said.leaks(secret) for name, secret in checked.items()}
    assert {name: where for name, where in leaks.items() if where} == {}
    # The secrets made over HTTP were shown once, where they were made.
    for secret in (_secret_of(new_key), _secret_of(rotated_key)):
        assert any(secret in text for where, text in said.seen if where == said.creations[secret])
