"""The sandbox's limits and switches, and the environment its workers start with.

Imports nothing of the platform: the worker reads the same module before it confines itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TENANT_CODE_FORMATS", "SandboxConfig", "clean_environment", "runs_tenant_code"]

TENANT_CODE_FORMATS = frozenset({"python"})
"""Model formats whose loading runs code the publisher wrote.

A TorchScript archive is deserialised by PyTorch's own loader and run by its interpreter, which
offers no file, process or network access; a ``python`` artifact is arbitrary Python."""


def runs_tenant_code(model_format: str) -> bool:
    """Tell whether loading a model of this format runs its publisher's code.

    Args:
        model_format: A manifest's ``format``.

    Returns:
        True for ``python`` (and any future format that runs what a tenant uploaded).
    """
    return model_format in TENANT_CODE_FORMATS


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """How untrusted model code is confined (see :mod:`model_store.sandbox`).

    Attributes:
        memory_bytes: Address-space limit of a worker (``RLIMIT_AS``); past it allocations fail,
            the worker reports the ``MemoryError`` and exits, and the call answers 503.
        cpu_seconds: CPU time a worker may use over its life (``RLIMIT_CPU``, killed at the
            limit); a worker past 80 % of it is replaced between calls.
        call_timeout_s: How long one ``predict`` may take before its worker is killed (503).
        load_timeout_s: How long starting a worker and loading the model may take.
        max_processes: ``RLIMIT_NPROC`` of the worker's own user: its threads and processes.
        max_open_files: ``RLIMIT_NOFILE``.
        max_file_bytes: ``RLIMIT_FSIZE``, the largest file a worker writes (its log included).
        scratch_bytes: Size of each writable tmpfs of a confined worker (``/tmp``, ``/dev/shm``;
            ``/sandbox`` gets this plus twice the artifact).
        max_message_bytes: The largest reply (all outputs together) taken from a worker.
        namespaces: Confine workers with Linux namespaces, a minimal root and a user of their
            own when the platform runs as root.
        require_namespaces: Refuse to run tenant code (503, 422 on upload) when that
            confinement is unavailable, instead of running it with the limits alone.
        work_dir: Where each worker's folder is made (default: the system's temp dir).
    """

    memory_bytes: int = 4 << 30
    cpu_seconds: int = 3600
    call_timeout_s: float = 30.0
    load_timeout_s: float = 120.0
    max_processes: int = 64
    max_open_files: int = 256
    max_file_bytes: int = 64 << 20
    scratch_bytes: int = 256 << 20
    max_message_bytes: int = 256 << 20
    namespaces: bool = True
    require_namespaces: bool = False
    work_dir: Path | None = None


_THREADS_ONE = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def clean_environment(home: str = "/sandbox") -> dict[str, str]:
    """The whole environment of a worker: nothing of the platform's, no secrets.

    Only a fixed ``PATH``, a UTF-8 locale, ``HOME``/``TMPDIR``, one thread per numeric library
    (threads count against ``RLIMIT_NPROC`` and address space) and two malloc arenas (each
    arena reserves address space that ``RLIMIT_AS`` counts). ``LD_LIBRARY_PATH`` is kept: it
    names folders, and the interpreter may need it to find its own library.

    Args:
        home: The worker's ``HOME``.

    Returns:
        The environment.
    """
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": home,
        "TMPDIR": "/tmp",
        "MALLOC_ARENA_MAX": "2",
        "TOKENIZERS_PARALLELISM": "false",
    }
    env.update(dict.fromkeys(_THREADS_ONE, "1"))
    library_path = os.environ.get("LD_LIBRARY_PATH")
    if library_path:
        env["LD_LIBRARY_PATH"] = library_path
    return env
