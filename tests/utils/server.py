"""Real server processes for tests and benches: a free port, a launch, a wait, a clean stop.

Every integration test, end-to-end test and bench that runs the platform (``citybrain serve``)
or another HTTP server in a subprocess starts it here:

* :func:`free_port` — a loopback port nobody listens on;
* :class:`ServerProcess` — one subprocess whose output goes to a log file, started and waited
  for until a readiness URL answers 200, stopped with SIGTERM (SIGKILL after a grace period);
  a context manager, and restartable (``stop`` then ``start`` appends to the same log);
* :func:`send_json` — a fake HTTP server's JSON answer;
* :func:`platform_server` — the ``python -m marketplace.cli serve`` command line on a free port.

Failures raise :class:`ServerFailed` with the tail of the log, so a test reports why its server
died and a bench (which has no pytest) does too.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

__all__ = [
    "ROOT",
    "ServerFailed",
    "ServerProcess",
    "free_port",
    "isolated_env",
    "platform_server",
    "running_platform_server",
    "send_json",
    "wait_http",
]

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 120.0  # a bound on waiting, never asserted as a duration


class ServerFailed(RuntimeError):
    """A server process exited or never became ready; the message holds its log's tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def send_json(handler: BaseHTTPRequestHandler, status: int, body: Any) -> None:
    """Answer ``body`` as JSON with ``status`` from a fake server's request handler."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def isolated_env(settings: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without its ``CITYBRAIN_*`` variables, plus ``settings``:
    a server whose settings come only from what the caller names."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")}
    env.update(settings)
    return env


def wait_http(
    url: str,
    proc: subprocess.Popen[bytes] | None = None,
    *,
    what: str = "the server",
    timeout_s: float = READY_TIMEOUT_S,
    log: Path | None = None,
) -> httpx.Response:
    """Poll ``url`` until it answers 200; fail early if ``proc`` exits.

    Returns the 200 response. Raises :class:`ServerFailed` (with the tail of ``log``) when the
    process exits first or ``timeout_s`` passes.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if proc is not None and proc.poll() is not None:
            raise ServerFailed(f"{what} exited ({proc.returncode}):\n{_tail(log)}")
        try:
            r = httpx.get(url, timeout=1)
            if r.status_code == 200:
                return r
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise ServerFailed(f"{what} did not become ready at {url}:\n{_tail(log)}")
        time.sleep(0.1)


def _tail(log: Path | None, chars: int = 4000) -> str:
    if log is None or not log.exists():
        return "(no log)"
    return log.read_text(errors="replace")[-chars:]


@dataclass
class ServerProcess:
    """One server subprocess, its port and its log file.

    ``ready_path`` is fetched on ``http://127.0.0.1:<port>`` until it answers 200 (``None``:
    don't wait). ``env`` replaces the environment (``os.environ`` when ``None``).
    """

    argv: list[str]
    port: int
    log: Path
    env: dict[str, str] | None = None
    ready_path: str | None = "/v2/health/ready"
    cwd: Path = ROOT
    what: str = "the server"
    ready_timeout_s: float = READY_TIMEOUT_S
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ServerFailed(f"{self.what} was not started")
        return self.proc.pid

    def start(self) -> ServerProcess:
        """Launch the process (output appended to ``log``) and wait until it is ready."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self) -> None:
        if self.ready_path is not None:
            wait_http(
                self.url + self.ready_path,
                self.proc,
                what=self.what,
                timeout_s=self.ready_timeout_s,
                log=self.log,
            )

    def stop(self, sig: int = signal.SIGTERM, grace_s: float = 30.0) -> None:
        """Send ``sig`` (SIGTERM: a clean shutdown) and wait; SIGKILL after ``grace_s``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def tail(self, chars: int = 4000) -> str:
        """The end of the log, for failure messages."""
        return _tail(self.log, chars)

    def __enter__(self) -> ServerProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def platform_server(
    *,
    database_url: str | None,
    data_dir: Path | None,
    log: Path,
    args: Sequence[str] = ("--no-migrate",),
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    ready_path: str | None = "/v2/health/ready",
) -> ServerProcess:
    """``python -m marketplace.cli serve`` on a free loopback port (not yet started).

    ``database_url`` and ``data_dir`` become ``--database-url``/``--data-dir`` when given
    (``None``: the settings come from ``env``); ``args`` are further ``serve`` options.
    ``env`` is added to ``os.environ`` with ``CITYBRAIN_LOG_LEVEL=warning`` by default.
    """
    port = port if port is not None else free_port()
    argv = [sys.executable, "-m", "marketplace.cli", "serve", "--port", str(port)]
    if database_url is not None:
        argv += ["--database-url", database_url]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    argv += list(args)
    return ServerProcess(
        argv=argv,
        port=port,
        log=log,
        env={**os.environ, "CITYBRAIN_LOG_LEVEL": "warning", **(env or {})},
        ready_path=ready_path,
        what="the platform",
    )


@contextmanager
def running_platform_server(
    *,
    database_url: str | None,
    data_dir: Path | None,
    log: Path,
    args: Sequence[str] = ("--no-migrate",),
    env: Mapping[str, str] | None = None,
) -> Iterator[ServerProcess]:
    """:func:`platform_server`, started and ready; stopped on exit."""
    with platform_server(
        database_url=database_url, data_dir=data_dir, log=log, args=args, env=env
    ) as server:
        yield server
