"""A real S3-protocol server for tests: moto's server mode, run as its own process on loopback.

Nothing is patched in-process: the platform (and any server process a test starts) reaches it
through s3fs with the standard ``AWS_*`` variables, exactly as it would reach a production
object store. :func:`moto_s3` starts ``moto_server``, waits until it answers, creates the
buckets asked for, and stops it afterwards.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.utils.server import ServerProcess, free_port

_READY_TIMEOUT_S = 60.0  # a bound on waiting for the server to start, never a measurement


@dataclass(frozen=True)
class S3Server:
    """A running moto S3 server: its endpoint and the variables that reach it."""

    endpoint: str
    env: dict[str, str]  # AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... for this and child processes
    log: Path


@contextmanager
def moto_s3(workdir: Path, buckets: tuple[str, ...] = ()) -> Iterator[S3Server]:
    """Run ``moto_server`` on a free loopback port with ``buckets`` created; stop it after.

    Raises:
        RuntimeError: ``moto_server`` is not installed (the dev extra's ``moto[server]``), or
            it exited or did not answer in time (its log's tail is in the message).
    """
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.is_file():
        raise RuntimeError("moto_server is missing: install the dev extra (moto[server])")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        port,
        workdir / "moto.log",
        ready_path="/",
        what="moto_server",
        ready_timeout_s=_READY_TIMEOUT_S,
    )
    env = {
        "AWS_ENDPOINT_URL": server.url,
        "AWS_ACCESS_KEY_ID": "citybrain-test",
        "AWS_SECRET_ACCESS_KEY": "citybrain-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with server:
        for bucket in buckets:
            # A plain S3 CreateBucket call (us-east-1 takes no location constraint).
            r = httpx.put(f"{server.url}/{bucket}", timeout=10)
            if r.status_code != 200:
                raise RuntimeError(f"creating bucket {bucket}: {r.status_code} {r.text}")
        yield S3Server(endpoint=server.url, env=env, log=server.log)
