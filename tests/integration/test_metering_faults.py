"""Exactly-once usage metering under faults, against the real server (a subprocess) on PostgreSQL.

Each test starts ``python -m marketplace.cli serve --no-migrate`` on a database of this module's
own (created, migrated and seeded with the demo city here, dropped at the end), with its own data
directory and spool, and drives ``/v2/models/traffic-police.flow-smoother/infer`` with an httpx
async client. What is counted is the ``usage_event`` table, read directly with psycopg: the
rows must be exactly the calls the client saw succeed, each once.

Waits are bounded polls (a deadline, never a timing assertion). Servers are always killed in
``finally``; their output goes to a log file whose tail is shown when something fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from marketplace.cli.usage import spool_status
from model_store import BlobStore
from model_store.builtin import flow_smoother
from tests.utils.city import migrate_and_seed
from tests.utils.postgres import ScratchDatabase, scratch_database
from tests.utils.server import ServerProcess, free_port, isolated_env

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MODEL = flow_smoother.NAME
INFER_PATH = f"/v2/models/{MODEL}/infer"
BODY = json.dumps(
    {"inputs": [{"name": "flow", "shape": [2, 16], "datatype": "FP32", "data": [1.0] * 32}]}
).encode()
DRAIN_S = 60.0  # the longest any test waits for the spool to reach the database

T = TypeVar("T")


# ---------------------------------------------------------------------------- the city


@dataclass(frozen=True)
class City:
    database: str  # the database's name
    url: str  # SQLAlchemy URL
    artifacts: Path
    developer_key: str  # parkeasy: a third-party developer
    operator_key: str  # data-bureau: the platform operator
    pg: ScratchDatabase

    def via(self, port: int) -> str:
        """The same database, reached through ``127.0.0.1:port`` (the test's TCP proxy)."""
        return self.pg.via("127.0.0.1", port)


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[City]:
    with scratch_database("citybrain_test_metering") as db:
        artifacts = tmp_path_factory.mktemp("artifacts")
        seeded = migrate_and_seed(db.url, blobs=BlobStore(artifacts))
        yield City(
            database=db.name,
            url=db.url,
            artifacts=artifacts,
            developer_key=seeded.keys["parkeasy"],
            operator_key=seeded.keys["data-bureau"],
            pg=db,
        )


def _db(city: City) -> psycopg.Connection[Any]:
    return psycopg.connect(
        make_url(city.url).set(drivername="postgresql").render_as_string(hide_password=False),
        autocommit=True,
        connect_timeout=5,
    )


@pytest.fixture(autouse=True)
def no_usage_yet(city: City) -> None:
    with _db(city) as conn:
        conn.execute("TRUNCATE usage_event")


def usage_ids(city: City) -> list[str]:
    """Every recorded event id (duplicates would show twice; the key forbids them anyway)."""
    with _db(city) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM usage_event")]


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = DRAIN_S) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.1)


def usage_request_ids(city: City) -> list[tuple[str, str]]:
    """Every recorded ``(request id, event id)``."""
    with _db(city) as conn:
        return [(r[0], r[1]) for r in conn.execute("SELECT request_id, id FROM usage_event")]


def wait_for_rows(city: City, expected: set[str], *, by: str = "id") -> list[str]:
    """Wait until ``expected`` is recorded (event ids, or with ``by="request_id"`` request ids);
    return what is recorded."""

    def recorded() -> list[str]:
        if by == "id":
            return usage_ids(city)
        return [rid for rid, _ in usage_request_ids(city)]

    return wait_for(
        f"{len(expected)} usage rows",
        lambda: ids if set(ids := recorded()) >= expected else None,
    )


# ---------------------------------------------------------------------------- the server


@dataclass
class Server(ServerProcess):
    """A platform process with its own spool folder."""

    spool_dir: Path = Path("spool")

    def log_tail(self) -> str:
        return self.tail()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.stop(sig, grace_s=20)


def start_server(city: City, data_dir: Path, **env: str) -> Server:
    """Serve the city from ``data_dir`` (its own spool) on a free port; wait until ready."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    environ = isolated_env(
        {
            "CITYBRAIN_DATABASE_URL": city.url,
            "CITYBRAIN_DATA_DIR": str(data_dir),
            "CITYBRAIN_MODEL_STORE__ARTIFACT_URL": str(city.artifacts),
            "CITYBRAIN_LOG_LEVEL": "warning",
            "CITYBRAIN_BILLING__FLUSH_INTERVAL_S": "0.1",
            **env,
        }
    )
    server = Server(
        argv=[
            sys.executable,
            "-m",
            "marketplace.cli",
            "serve",
            "--port",
            str(port),
            "--no-migrate",
        ],
        port=port,
        log=data_dir / f"server-{port}.log",
        env=environ,
        ready_timeout_s=90,
        spool_dir=Path(environ.get("CITYBRAIN_BILLING__SPOOL_DIR", data_dir / "spool")),
    )
    server.start()
    return server


@contextlib.contextmanager
def serving(city: City, data_dir: Path, **env: str) -> Iterator[Server]:
    server = start_server(city, data_dir, **env)
    try:
        yield server
    except BaseException:
        print(f"--- server log ({server.log}):\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        server.kill(signal.SIGTERM)


def usage_status_cli(spool_dir: Path) -> dict[str, Any]:
    """``citybrain usage status --json`` in its own process (as an operator would run it)."""
    command = [sys.executable, "-m", "marketplace.cli", "usage", "status", "--json"]
    out = subprocess.run(
        [*command, "--spool-dir", str(spool_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    state: dict[str, Any] = json.loads(out.stdout)
    return state


def scrape(server: Server, city: City) -> dict[str, float]:
    """``/metrics`` with the operator's key, as {sample name: value} (unlabelled samples)."""
    r = httpx.get(
        f"{server.url}/metrics",
        headers={"Authorization": f"Bearer {city.operator_key}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return {
        s.name: s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
        if not s.labels
    }


# ---------------------------------------------------------------------------- the client


@dataclass
class Load:
    """What the client saw, per event id (the Idempotency-Key or, without one, the request id)."""

    status: dict[str, int] = field(default_factory=dict)  # 0: no response (transport error)
    replayed: set[str] = field(default_factory=set)
    bodies: dict[str, Any] = field(default_factory=dict)
    retry_after: dict[str, str | None] = field(default_factory=dict)
    sent_at: dict[str, float] = field(default_factory=dict)

    def ok(self) -> set[str]:
        return {i for i, s in self.status.items() if s == 200}

    def failed(self) -> set[str]:
        return {i for i, s in self.status.items() if s != 200}


async def drive(
    server: Server,
    key: str,
    ids: list[str],
    *,
    concurrency: int,
    idempotency: bool = True,
    load: Load | None = None,
    on_done: Callable[[int], None] | None = None,
) -> Load:
    """Send one call per id, ``concurrency`` in flight; ``on_done(n)`` after the n-th answer.

    With ``idempotency`` each call carries ``Idempotency-Key: <id>``; without, ``X-Request-Id:
    <id>`` (the event then takes a fresh id of the platform's and keeps the request id beside it).
    """
    load = load or Load()
    queue = iter(ids)
    done = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal done
            for event_id in queue:
                headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
                headers["Idempotency-Key" if idempotency else "X-Request-Id"] = event_id
                load.sent_at[event_id] = time.monotonic()
                try:
                    r = await client.post(INFER_PATH, content=BODY, headers=headers)
                except httpx.TransportError:
                    load.status[event_id] = 0
                else:
                    load.status[event_id] = r.status_code
                    if r.headers.get("Idempotent-Replayed") == "true":
                        load.replayed.add(event_id)
                    if r.status_code != 200:
                        load.bodies[event_id] = r.json()
                        load.retry_after[event_id] = r.headers.get("Retry-After")
                done += 1
                if on_done is not None:
                    on_done(done)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return load


# ---------------------------------------------------------------------------- a TCP proxy


class TcpProxy:
    """127.0.0.1:<port> → PostgreSQL, in threads; :meth:`cut` refuses and drops every connection
    (as a database that went away does), :meth:`restore` listens on the same port again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._stop = threading.Event()
        self._acceptor: threading.Thread | None = None
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> TcpProxy:
        self.restore()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        listener.settimeout(0.05)
        self._stop = threading.Event()
        self._acceptor = threading.Thread(
            target=self._accept, args=(listener, self._stop), daemon=True
        )
        self._acceptor.start()

    def cut(self) -> None:
        self._stop.set()
        if self._acceptor is not None:
            self._acceptor.join(10)  # the listener is closed when it returns
            self._acceptor = None
        with self._lock:
            doomed, self._sockets = self._sockets, set()
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(10)
        self._threads = []
        for sock in doomed:
            sock.close()

    def _accept(self, listener: socket.socket, stop: threading.Event) -> None:
        with listener:
            while not stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                client.settimeout(None)
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                except OSError:
                    client.close()
                    continue
                upstream.settimeout(None)
                with self._lock:
                    self._sockets.update((client, upstream))
                for src, dst in ((client, upstream), (upstream, client)):
                    thread = threading.Thread(target=self._pump, args=(src, dst), daemon=True)
                    thread.start()
                    self._threads.append(thread)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):  # one side is gone: end both directions
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


# ---------------------------------------------------------------------------- (a)


def test_a_thousand_concurrent_calls_make_exactly_a_thousand_rows(
    city: City, tmp_path: Path
) -> None:
    """1,000 calls, 64 in flight, no Idempotency-Key: every 200 has its event (found by its
    request id), each exactly once under an id of its own; the metering metrics and
    ``citybrain usage status`` report the run."""
    ids = [f"a-{secrets.token_hex(4)}-{i:05d}" for i in range(1000)]
    with serving(city, tmp_path / "var") as server:
        load = asyncio.run(
            drive(server, city.developer_key, ids, concurrency=64, idempotency=False)
        )
        assert load.ok() == set(ids), {i: load.bodies.get(i) for i in load.failed()}

        recorded = wait_for_rows(city, set(ids), by="request_id")
        assert sorted(recorded) == sorted(ids)  # exactly these, each once
        event_ids = usage_ids(city)
        assert len(set(event_ids)) == 1000 and not set(event_ids) & set(ids)

        state = wait_for(
            "the server's published status to show all 1,000 delivered",
            lambda: s if (s := usage_status_cli(server.spool_dir))["delivered"] == 1000 else None,
            timeout_s=30,
        )
        assert state["server_running"] is True and state["server_pid"] == server.proc.pid
        assert state["backlog"] == 0 and state["appended"] == 1000
        assert state["flush_failures"] == 0 and state["last_error"] is None
        assert state["last_flush_at"] is not None and state["spool_available"] is True

        metrics = scrape(server, city)
        assert metrics["citybrain_billing_events_appended_total"] == 1000
        assert metrics["citybrain_billing_events_delivered_total"] == 1000
        assert metrics["citybrain_billing_spool_backlog_events"] == 0
        assert metrics["citybrain_billing_flush_seconds_count"] >= 1
        assert metrics["citybrain_billing_flush_failures_total"] == 0
        assert metrics["citybrain_billing_append_failures_total"] == 0


# ---------------------------------------------------------------------------- (b)


def test_b_sigkill_mid_load_loses_nothing_and_bills_retries_once(
    city: City, tmp_path: Path
) -> None:
    """The server is SIGKILLed while 32 calls are in flight, then restarted on the same data dir.
    Every call the client saw succeed is recorded (the restarted server replays the spool); the
    client retries the rest with the same Idempotency-Key until they succeed; in the end every
    key is recorded exactly once, also those whose event was durable but whose answer was lost."""
    ids = [f"b-{secrets.token_hex(4)}-{i:05d}" for i in range(800)]
    data_dir = tmp_path / "var"
    first = start_server(city, data_dir)
    try:

        def kill_midway(done: int) -> None:
            if done == 250:
                first.kill(signal.SIGKILL)

        load = asyncio.run(
            drive(first, city.developer_key, ids, concurrency=32, on_done=kill_midway)
        )
    finally:
        first.kill(signal.SIGKILL)
    assert first.proc.returncode == -signal.SIGKILL
    acked_before_kill = load.ok()
    assert 250 <= len(acked_before_kill) < len(ids)  # the kill did interrupt the load
    assert set(load.status.values()) <= {0, 200}, load.bodies

    with serving(city, data_dir) as second:
        # Nothing the client saw succeed is lost: the replayed spool reaches the database.
        wait_for_rows(city, acked_before_kill)
        for _ in range(3):  # the client retries what failed, with the same keys
            retry = [i for i in ids if load.status[i] != 200]
            if not retry:
                break
            asyncio.run(drive(second, city.developer_key, retry, concurrency=32, load=load))
        assert load.ok() == set(ids), {i: load.bodies.get(i) for i in load.failed()}
        recorded = wait_for_rows(city, set(ids))
        assert sorted(recorded) == sorted(ids)  # every key once: none lost, none twice
        assert load.replayed <= set(ids) - acked_before_kill


# ---------------------------------------------------------------------------- (c)


def test_c_usage_store_unreachable_calls_go_on_and_events_arrive_once(
    city: City, tmp_path: Path
) -> None:
    """The usage store goes away mid-load: the flusher reaches PostgreSQL through a TCP proxy
    (``CITYBRAIN_BILLING__DATABASE_URL``), which the test cuts (listener closed, connections
    dropped) while 32 calls are in flight. The gateway's own lookups use the main URL, so what
    goes away is the usage store only. Calls keep succeeding, their events wait in the spool (the
    status command and the metrics show the backlog and the failed flushes), and once the proxy is
    back every event arrives exactly once."""
    ids = [f"c-{secrets.token_hex(4)}-{i:05d}" for i in range(900)]
    with TcpProxy((city.pg.host, city.pg.port)) as proxy:
        env = {"CITYBRAIN_BILLING__DATABASE_URL": city.via(proxy.port)}
        with serving(city, tmp_path / "var", **env) as server:
            cut_at: list[float] = []

            def cut_midway(done: int) -> None:
                if done == 300:
                    proxy.cut()
                    cut_at.append(time.monotonic())

            load = asyncio.run(
                drive(server, city.developer_key, ids, concurrency=32, on_done=cut_midway)
            )
            assert load.ok() == set(ids), {i: load.bodies.get(i) for i in load.failed()}

            # While the store is away: the events wait in the spool, none reached the table.
            after_cut = {i for i in ids if load.sent_at[i] > cut_at[0]}
            assert len(after_cut) >= 500
            state = wait_for(
                "a failed flush in the published status",
                lambda: s if (s := usage_status_cli(server.spool_dir))["flush_failures"] else None,
                timeout_s=30,
            )
            assert state["last_error"] and state["server_running"] is True
            assert state["backlog"] >= len(after_cut)
            assert not after_cut & set(usage_ids(city))
            metrics = scrape(server, city)
            assert metrics["citybrain_billing_flush_failures_total"] >= 1
            assert metrics["citybrain_billing_spool_backlog_events"] >= len(after_cut)

            proxy.restore()
            recorded = wait_for_rows(city, set(ids))
            assert sorted(recorded) == sorted(ids)  # none lost, none twice
            wait_for(
                "the published status to clear the error",
                lambda: (
                    s["last_error"] is None and s["backlog"] == 0
                    if (s := usage_status_cli(server.spool_dir))
                    else None
                ),
                timeout_s=30,
            )


# ---------------------------------------------------------------------------- (d)


def test_d_a_flush_failing_part_way_marks_nothing_delivered(city: City, tmp_path: Path) -> None:
    """A trigger on usage_event raises for one event id, so the batch holding it fails part-way
    (after the rows before it were written, inside the transaction). The batch rolls back and the
    spool's checkpoint stays put: those events stay pending. Once the trigger is dropped every
    event arrives exactly once."""
    ids = [f"d-{secrets.token_hex(4)}-{i:05d}" for i in range(200)]
    poison = ids[120]
    with _db(city) as conn:
        conn.execute(
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.id = '{poison}' THEN RAISE EXCEPTION 'refusing %', NEW.id; END IF; "
            "RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON usage_event "
            "FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
        )
    try:
        with serving(city, tmp_path / "var") as server:
            load = asyncio.run(drive(server, city.developer_key, ids, concurrency=8))
            assert load.ok() == set(ids), {i: load.bodies.get(i) for i in load.failed()}

            state = wait_for(
                "two failed flushes",
                lambda: s if (s := spool_status(server.spool_dir))["flush_failures"] >= 2 else None,
                timeout_s=30,
            )
            assert "refusing" in state["last_error"]
            recorded = set(usage_ids(city))
            assert poison not in recorded
            # Nothing unwritten was marked delivered: all that is not in the table is pending.
            on_disk = spool_status(server.spool_dir)
            assert on_disk["backlog"] >= len(ids) - len(recorded) > 0

            with _db(city) as conn:
                conn.execute("DROP TRIGGER refuse_poison ON usage_event")
            recorded_ids = wait_for_rows(city, set(ids))
            assert sorted(recorded_ids) == sorted(ids)
            wait_for("an empty backlog", lambda: spool_status(server.spool_dir)["backlog"] == 0)
    finally:
        with _db(city) as conn:
            conn.execute("DROP TRIGGER IF EXISTS refuse_poison ON usage_event")
            conn.execute("DROP FUNCTION IF EXISTS refuse_poison()")


# ---------------------------------------------------------------------------- (e)


@contextlib.contextmanager
def tiny_tmpfs(path: Path, size: str = "256k") -> Iterator[Path]:
    path.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root/CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` to the last byte with one file; return it."""
    filler = directory / "filler"
    chunk = b"\0" * 4096
    with filler.open("wb", buffering=0) as fh:
        try:
            while True:
                fh.write(chunk)
        except OSError:
            pass
        try:
            while True:
                fh.write(b"\0")
        except OSError:
            pass
    return filler


def test_e_full_disk_fails_calls_with_503_never_unbilled(city: City, tmp_path: Path) -> None:
    """The spool lives on a 256 KiB tmpfs that the test then fills. A filled filesystem is what
    a full disk is; as root (CI runs as root) ``chmod`` would not stop the server's writes, but a
    tmpfs with a size limit fails them with ENOSPC exactly as a full disk does (without root the
    mount is refused and the test is skipped, saying so). Calls then fail with 503
    ``MeteringUnavailable`` and Retry-After, and none of them is recorded; after space is freed,
    a call retried with the same key succeeds and is billed once."""
    with tiny_tmpfs(tmp_path / "mnt") as mnt:
        spool_dir = mnt / "spool"
        with serving(city, tmp_path / "var", CITYBRAIN_BILLING__SPOOL_DIR=str(spool_dir)) as srv:
            before = [f"e-ok-{i:03d}" for i in range(20)]
            load = asyncio.run(drive(srv, city.developer_key, before, concurrency=4))
            assert load.ok() == set(before)
            filler = fill(mnt)

            # The spool's last, partly used page may still take a few records; then no more.
            refused: list[str] = []

            attempt = 0
            while len(refused) < 10:
                attempt += 1
                assert attempt <= 300, "the full disk never refused a call"
                event_id = f"e-full-{attempt:03d}"
                asyncio.run(drive(srv, city.developer_key, [event_id], concurrency=1, load=load))
                if load.status[event_id] != 200:
                    refused.append(event_id)
            for event_id in refused:
                assert load.status[event_id] == 503
                assert load.bodies[event_id]["code"] == "MeteringUnavailable"
                assert load.retry_after[event_id] is not None
                assert int(load.retry_after[event_id] or "0") > 0
            assert spool_status(srv.spool_dir)["server_running"] is True
            assert scrape(srv, city)["citybrain_billing_append_failures_total"] >= len(refused)

            # Space comes back: the same key now succeeds (a refused call never claimed it).
            filler.unlink()
            asyncio.run(drive(srv, city.developer_key, [refused[0]], concurrency=1, load=load))
            assert load.status[refused[0]] == 200 and refused[0] not in load.replayed

            billed = load.ok()
            recorded = wait_for_rows(city, billed)
            assert sorted(recorded) == sorted(billed)  # exactly the 200s, each once
            assert not set(refused[1:]) & set(recorded)
