"""Untrusted model code, out of the platform's process.

A ``python``-format model is its publisher's code. The platform never imports it in the
process that holds the database, the keys and every tenant's data; it runs it in a worker
process that holds none of that, and talks to it over a Unix socket pair with v2 tensors
(length-prefixed JSON header + raw buffers, never pickle: :mod:`.protocol`).

What a worker gets (:mod:`.worker`, :mod:`.confine`):

* **no secrets**: an environment of its own (``PATH``, locale, ``HOME``; no ``CITYBRAIN_*``,
  no database URL, no keys) and no inherited descriptor but its socket (not the SQLite file's:
  a tenant closing a descriptor of that file in the gateway dropped every SQLite lock of it);
* **limits**: ``RLIMIT_AS`` (memory), ``RLIMIT_CPU``, ``RLIMIT_NPROC`` (forks and threads),
  ``RLIMIT_NOFILE``, ``RLIMIT_FSIZE``, no core files; a per-call timeout; it dies with the
  gateway (parent-death signal);
* as root (namespaces): **its own file system** — a minimal root with read-only ``/usr``,
  Python and the ``model_store`` package, tmpfs ``/tmp`` and ``/sandbox`` (a copy of the
  artifact) and nothing else of the host: not the data directory, the database file, the
  artifact store or ``/run``; **no network** (a network namespace with loopback down);
  **its own processes** (a PID namespace: everything it forks dies with it); a **user of its
  own** with no capabilities, ``no_new_privs``.

Not root: no namespaces and no user of its own. The worker keeps the clean environment, the
limits (but ``RLIMIT_NPROC``, which would count the platform's own processes), a working
directory holding only the artifact copy and its own process group, but it can read what the
platform's user can read and reach the network. ``SandboxConfig.require_namespaces`` refuses to
run tenant code at all then.

A crash, a hang past ``call_timeout_s`` or memory exhaustion fails that model's calls with 503
and the next call starts a new worker; the gateway is never affected. Upload validation loads
and runs uploads in a worker too (:func:`isolated_loader`). An operator may trust a government
tenant's model to run in process (:class:`Isolation`'s trust policy).
"""

from model_store.sandbox.client import ModelCodeError, SandboxedModel, WorkerInfo
from model_store.sandbox.config import (
    TENANT_CODE_FORMATS,
    SandboxConfig,
    clean_environment,
    runs_tenant_code,
)
from model_store.sandbox.policy import Isolation, TrustPolicy, isolated_loader

__all__ = [
    "TENANT_CODE_FORMATS",
    "Isolation",
    "ModelCodeError",
    "SandboxConfig",
    "SandboxedModel",
    "TrustPolicy",
    "WorkerInfo",
    "clean_environment",
    "isolated_loader",
    "runs_tenant_code",
]
