"""The test OpenID provider (``tests/oidc/server.mjs``, panva's oidc-provider) in a subprocess.

It serves a Keycloak-shaped realm ``citybrain`` on a free loopback port and prints ``READY``
once it listens. Integration and end-to-end tests sign users in with it.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.utils.server import ServerFailed, free_port

__all__ = ["OIDC_DIR", "oidc_provider"]

OIDC_DIR = Path(__file__).resolve().parents[1] / "oidc"


@contextmanager
def oidc_provider(redirect_uri: str | None = None) -> Iterator[str]:
    """Start the provider (allowing ``redirect_uri`` for the portal's client); yield its URL."""
    node = shutil.which("node")
    if node is None or not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        raise ServerFailed(
            "the test OIDC provider is not installed: run `npm ci` in tests/oidc (make test does)"
        )
    port = free_port()
    argv = [node, str(OIDC_DIR / "server.mjs"), "--port", str(port)]
    if redirect_uri is not None:
        argv += ["--redirect-uri", redirect_uri]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY"):
            raise ServerFailed(f"the OIDC provider did not start: {line!r}")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
