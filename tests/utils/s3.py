"""A real S3-protocol server for tests: moto's server mode, run as its own process on loopback.

Nothing is patched in-process: the platform (and any server process a test starts) reaches it
through s3fs with the standard ``AWS_*`` variables, exactly as it would reach a production
object store. :func:`moto_s3` starts ``moto_server``, waits until it answers, creates the
buckets asked for, and stops it afterwards.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

_READY_TIMEOUT_S = 60.0  # a bound on waiting for the server to start, never a measurement


@dataclass(frozen=True)
class S3Server:
    """A running moto S3 server: its endpoint and the variables that reach it."""

    endpoint: str
    env: dict[str, str]  # AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... for this and child processes
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-3000:]
    except OSError:
        return ""


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
    port = _free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "citybrain-test",
        "AWS_SECRET_ACCESS_KEY": "citybrain-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited ({proc.returncode}):\n{_tail(log)}")
            try:
                if httpx.get(f"{endpoint}/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not answer:\n{_tail(log)}")
            time.sleep(0.1)
        for bucket in buckets:
            # A plain S3 CreateBucket call (us-east-1 takes no location constraint).
            r = httpx.put(f"{endpoint}/{bucket}", timeout=10)
            if r.status_code != 200:
                raise RuntimeError(f"creating bucket {bucket}: {r.status_code} {r.text}")
        yield S3Server(endpoint=endpoint, env=env, log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
