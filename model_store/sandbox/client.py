"""The gateway's side of a sandbox worker: start it, talk to it, replace it when it fails.

:class:`SandboxedModel` is a :class:`~model_store.formats.LoadedModel` whose ``predict``
sends the inputs to a worker process (:mod:`model_store.sandbox.worker`) and reads the
outputs back (:mod:`model_store.sandbox.protocol`). What can go wrong, and what the caller
sees:

* the model's code raises: :class:`ModelCodeError` (the embedded runtime answers 500, upload
  validation 422 naming the exception); the worker goes on serving;
* it returns an output no v2 datatype holds: ``OutputMismatchError``;
* the worker dies (a crash, ``RLIMIT_CPU``, ``MemoryError`` past ``RLIMIT_AS``, a garbled
  reply) or does not answer within ``call_timeout_s``: it is killed with everything it
  started, and the call fails with ``ModelUnavailableError`` (503). The next call starts a
  new worker; after more than two failures in a row, restarts wait (1, 2, 4... up to 30 s,
  answered 503 with ``Retry-After``), so a model that always crashes cannot keep the host
  busy starting interpreters.

One call runs at a time per model (a lock), as the embedded runtime calls it anyway.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_store.errors import ModelUnavailableError
from model_store.formats.base import Arrays, OutputMismatchError
from model_store.manifest import ModelManifest
from model_store.sandbox import protocol
from model_store.sandbox.config import SandboxConfig, clean_environment

__all__ = ["ModelCodeError", "SandboxedModel", "WorkerInfo"]

log = logging.getLogger(__name__)

_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)
# Registers the packages a worker needs without running their __init__ modules (see worker.py).
_BOOTSTRAP = """\
import sys, types
package = sys.argv[1]
for name, sub in (("model_store", ""), ("model_store.formats", "/formats"),
                  ("model_store.sandbox", "/sandbox")):
    module = types.ModuleType(name)
    module.__path__ = [package + sub]
    sys.modules[name] = module
from model_store.sandbox.worker import main
sys.exit(main(sys.argv[2:]))
"""
# Worker users: a range no distribution gives to accounts, below 2**31 (some tools read uids as
# signed); random, so that two gateways on one host rarely pick the same.
_UID_BASE = 2_000_000_000
_UID_SPAN = 1 << 24
_CLOSE_WAIT_S = 2.0
_RESTART_FREELY = 2
_MAX_BACKOFF_S = 30.0
_RECYCLE_AT = 0.8
_LOG_TAIL = 2000
_MESSAGE_CHARS = 500


def _now() -> float:
    """The clock of restart pauses (a seam for tests)."""
    return time.monotonic()


class ModelCodeError(Exception):
    """The model's own code raised an exception in its worker.

    Attributes:
        type_name: The exception's class name (as the worker reported it).
        message: Its message (at most 500 characters).
        phase: ``"load"`` or ``"predict"``.
    """

    def __init__(self, type_name: str, message: str, *, phase: str) -> None:
        """Create the error.

        Args:
            type_name: The exception's class name.
            message: Its message.
            phase: ``"load"`` or ``"predict"``.
        """
        self.type_name = type_name
        self.message = message
        self.phase = phase
        super().__init__(f"{type_name}: {message}" if message else type_name)


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """What a worker reported about itself before running any of the model's code.

    Attributes:
        pid: The worker's process id (the outer one when it has a PID namespace).
        uid: The user id it runs as.
        isolation: What it achieved: ``environment``, ``descriptors``, ``limits`` always;
            ``filesystem``, ``network``, ``processes``, ``ipc`` with namespaces; ``user`` when
            it runs as a user of its own.
        without: Why namespaces are missing ("" when they are not).
    """

    pid: int
    uid: int
    isolation: tuple[str, ...]
    without: str


class _WorkerLost(Exception):
    """The worker died, hung or spoke garbage; it has been killed."""


def _text(value: object, limit: int = _MESSAGE_CHARS) -> str:
    return str(value)[:limit] if isinstance(value, str) else ""


def _exited(pid: int) -> bool:
    """Whether a worker has exited, without reaping it.

    Until it is reaped its pid, which is its process group's id, cannot be reused, so killing
    that group afterwards reaches what the worker forked (a worker without a PID namespace
    leaves its children behind when it exits) and nothing else.
    """
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _wait_exit(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not _exited(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def _reap(proc: subprocess.Popen[bytes], sock: socket.socket, folder: Path) -> None:
    """Kill a worker's process group (the worker, whatever it forked), reap the worker, close
    its socket, remove its folder."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    sock.close()
    shutil.rmtree(folder, ignore_errors=True)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    if code > 128 and code - 128 < 65:  # the outer process exits 128 + its child's signal
        try:
            return f"killed by {signal.Signals(code - 128).name}"
        except ValueError:
            pass
    return f"exit status {code}"


class _Worker:
    """One started worker process with its model loaded."""

    def __init__(self, manifest: ModelManifest, artifact: Path, config: SandboxConfig, name: str):
        self.name = name
        self.label = f"model '{name}'" if name else "the model"
        self.config = config
        base = config.work_dir or Path(tempfile.gettempdir())
        self.folder = Path(tempfile.mkdtemp(prefix="citybrain-sandbox-", dir=base))
        os.chmod(self.folder, 0o711)
        (self.folder / "root").mkdir()
        work = self.folder / "work"
        work.mkdir()
        uid = _UID_BASE + secrets.randbelow(_UID_SPAN) if os.geteuid() == 0 else None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        spec = {
            "fd": theirs.fileno(),
            "parent_pid": os.getpid(),
            "package_dir": _PACKAGE_DIR,
            "artifact": str(Path(artifact).resolve()),
            "artifact_name": "artifact.zip",
            "root": str(self.folder / "root"),
            "uid": uid,
            "namespaces": config.namespaces,
            "require_namespaces": config.require_namespaces,
            "scratch_bytes": config.scratch_bytes,
            "max_message_bytes": config.max_message_bytes,
            "limits": {
                "memory_bytes": config.memory_bytes,
                "cpu_seconds": config.cpu_seconds,
                "max_processes": config.max_processes,
                "max_open_files": config.max_open_files,
                "max_file_bytes": config.max_file_bytes,
            },
        }
        command = [sys.executable, "-I", "-B", "-c", _BOOTSTRAP, _PACKAGE_DIR, json.dumps(spec)]
        try:
            with open(self.folder / "worker.log", "ab") as output:
                self.proc = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=output,
                    env=clean_environment(),
                    cwd=work,
                    close_fds=True,
                    pass_fds=(theirs.fileno(),),
                    start_new_session=True,
                )
        except OSError as e:
            ours.close()
            shutil.rmtree(self.folder, ignore_errors=True)
            raise ModelUnavailableError(f"{self.label} could not be started") from e
        finally:
            theirs.close()
        self.sock = ours
        self._finalizer = weakref.finalize(self, _reap, self.proc, ours, self.folder)
        self.info = self._start(manifest)

    def _start(self, manifest: ModelManifest) -> WorkerInfo:
        deadline = time.monotonic() + self.config.load_timeout_s
        hello = self._receive(deadline, "while starting", self.config.load_timeout_s)
        if hello.op == "error":
            self.kill()
            raise ModelUnavailableError(
                f"{self.label} cannot run isolated: {_text(hello.header.get('message'))}"
            )
        raw = hello.header.get("isolation")
        isolation = tuple(x for x in raw if isinstance(x, str)) if isinstance(raw, list) else ()
        uid = hello.header.get("uid")
        info = WorkerInfo(
            pid=self.proc.pid,
            uid=uid if isinstance(uid, int) else -1,
            isolation=isolation,
            without=_text(hello.header.get("without")),
        )
        self._send("load", {"manifest": manifest.model_dump(mode="json")}, deadline)
        ready = self._receive(deadline, "while loading", self.config.load_timeout_s)
        if ready.op == "ready":
            return info
        self.kill()
        if ready.op == "error" and ready.header.get("kind") in ("load", "oom"):
            raise ModelCodeError(
                _text(ready.header.get("type"), 100) or "Exception",
                _text(ready.header.get("message")),
                phase="load",
            )
        raise ModelUnavailableError(f"{self.label} failed to start")

    def _send(
        self, op: str, fields: dict[str, Any], deadline: float, tensors: Arrays | None = None
    ) -> None:
        try:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            protocol.send(self.sock, op, fields, tensors)
        except TimeoutError:
            raise self._lost("did not take its inputs in time") from None
        except OSError:
            raise self._lost("stopped") from None

    def _receive(self, deadline: float, when: str, seconds: float) -> protocol.Message:
        try:
            return protocol.recv(
                self.sock, max_payload=self.config.max_message_bytes, deadline=deadline
            )
        except TimeoutError:
            raise self._lost(f"did not answer within {seconds:g} s") from None
        except protocol.ProtocolError as e:
            raise self._lost(f"sent a malformed reply ({e})") from None
        except OSError:
            raise self._lost(f"exited {when}".rstrip(), exiting=True) from None
        except EOFError:
            raise self._lost(f"exited {when}".rstrip(), exiting=True) from None

    def _lost(self, what: str, *, exiting: bool = False) -> _WorkerLost:
        detail = self.kill(exiting=exiting)
        return _WorkerLost(f"{what} ({detail})" if detail else what)

    def call(self, inputs: Arrays) -> protocol.Message:
        """Send one predict and return the worker's reply (``result`` or ``error``).

        Raises:
            _WorkerLost: The worker died, hung or garbled its reply (it is killed).
        """
        deadline = time.monotonic() + self.config.call_timeout_s
        self._send("predict", {}, deadline, inputs)
        return self._receive(deadline, "", self.config.call_timeout_s)

    def kill(self, *, exiting: bool = False) -> str:
        """Kill the worker (if alive), log the end of its output; say how it ended.

        ``exiting``: the worker closed its socket, so it is on its way out; give it a moment
        to, so that its own exit status is what gets reported.
        """
        if not self._finalizer.alive:
            return ""
        was_running = not _wait_exit(self.proc.pid, _CLOSE_WAIT_S if exiting else 0.0)
        tail = self._log_tail()
        self._finalizer()
        ended = "killed" if was_running else _describe_exit(self.proc.returncode)
        if tail:
            log.warning("%s: worker %s; its last output: %r", self.label, ended, tail)
        return ended

    def _log_tail(self) -> str:
        path = self.folder / "worker.log"
        try:
            with path.open("rb") as f:
                f.seek(max(path.stat().st_size - _LOG_TAIL, 0))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def close(self) -> None:
        """Ask the worker to close its model and exit; kill it if it does not in time."""
        if not self._finalizer.alive:
            return
        with contextlib.suppress(OSError):
            self.sock.settimeout(_CLOSE_WAIT_S)
            protocol.send(self.sock, "close")
            _wait_exit(self.proc.pid, _CLOSE_WAIT_S)
        self._finalizer()


class SandboxedModel:
    """A python-format model running in a confined worker process (see the module docstring).

    Args:
        manifest: The artifact's manifest.
        artifact_path: The artifact (copied into the worker's own file system).
        config: The limits (default :class:`SandboxConfig`).
        name: How messages and logs name the model (its runtime key; "": "the model").

    Raises:
        ModelCodeError: Importing or loading the model raised (the worker is gone).
        ModelUnavailableError: The worker could not start, confine itself, or died or hung
            while loading.

    Example:
        >>> model = SandboxedModel(manifest, Path("model.zip"), name="acme.m:1")  # doctest: +SKIP
        >>> model.predict({"x": np.ones((1, 4), np.float32)})  # doctest: +SKIP
        >>> model.close()  # doctest: +SKIP
    """

    def __init__(
        self,
        manifest: ModelManifest,
        artifact_path: Path,
        config: SandboxConfig | None = None,
        *,
        name: str = "",
    ) -> None:
        self._manifest = manifest
        self._artifact = Path(artifact_path)
        self._config = config or SandboxConfig()
        self._name = name
        self._label = f"model '{name}'" if name else "the model"
        self._lock = threading.Lock()
        self._closed = False
        self._failures = 0
        self._retry_at = 0.0
        self._worker: _Worker | None = self._start()
        self._last_info = self._worker.info

    @property
    def info(self) -> WorkerInfo:
        """What the current (or last) worker reported about its confinement."""
        return self._worker.info if self._worker is not None else self._last_info

    def _start(self) -> _Worker:
        try:
            worker = _Worker(self._manifest, self._artifact, self._config, self._name)
        except _WorkerLost as lost:
            raise ModelUnavailableError(f"{self._label} {lost}") from None
        log.info(
            "%s runs in sandbox worker %d as uid %d (%s)%s",
            self._label,
            worker.info.pid,
            worker.info.uid,
            ", ".join(worker.info.isolation),
            f"; no namespaces: {worker.info.without}" if worker.info.without else "",
        )
        return worker

    def _restart(self) -> _Worker:
        wait = self._retry_at - _now()
        if wait > 0:
            raise ModelUnavailableError(
                f"{self._label} keeps failing; it is restarted in {math.ceil(wait)} s",
                headers={"Retry-After": str(math.ceil(wait))},
            )
        try:
            worker = self._start()
        except ModelCodeError as e:
            self._failed()
            raise ModelUnavailableError(f"{self._label} could not be restarted") from e
        except ModelUnavailableError:
            self._failed()
            raise
        self._worker = worker
        self._last_info = worker.info
        return worker

    def _failed(self) -> None:
        self._worker = None
        self._failures += 1
        if self._failures > _RESTART_FREELY:
            backoff = min(2.0 ** (self._failures - _RESTART_FREELY - 1), _MAX_BACKOFF_S)
            self._retry_at = _now() + backoff

    def predict(self, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        """Run the model in its worker (starting a new one if the last one failed).

        Args:
            inputs: Every declared input, by name.

        Returns:
            The outputs, by name, as the worker sent them.

        Raises:
            ModelCodeError: The model's ``predict`` raised.
            OutputMismatchError: An output has no v2 datatype.
            ModelUnavailableError: The worker died, hung, ran out of memory or could not be
                restarted (503); the next call starts a new one.
        """
        with self._lock:
            if self._closed:
                raise ModelUnavailableError(f"{self._label} was unloaded")
            worker = self._worker or self._restart()
            try:
                reply = worker.call(inputs)
            except _WorkerLost as lost:
                self._failed()
                raise ModelUnavailableError(
                    f"{self._label} {lost}; it is restarted on the next call"
                ) from None
            if reply.op == "result":
                self._failures = 0
                cpu = reply.header.get("cpu_s")
                if isinstance(cpu, int | float) and cpu > _RECYCLE_AT * self._config.cpu_seconds:
                    worker.close()  # before RLIMIT_CPU kills it in the middle of a call
                    self._worker = None
                return reply.tensors
            return self._raise(worker, reply)

    def _raise(self, worker: _Worker, reply: protocol.Message) -> Arrays:
        kind = reply.header.get("kind")
        type_name = _text(reply.header.get("type"), 100) or "Exception"
        message = _text(reply.header.get("message"))
        if reply.op == "error" and kind == "model":
            raise ModelCodeError(type_name, message, phase="predict")
        if reply.op == "error" and kind == "output":
            raise OutputMismatchError(message)
        ended = worker.kill()
        self._failed()
        if reply.op == "error" and kind == "oom":
            limit = self._config.memory_bytes / (1 << 20)
            raise ModelUnavailableError(
                f"{self._label} ran out of memory (limit {limit:g} MiB); it is "
                "restarted on the next call"
            )
        log.warning("%s: worker sent %r (%s)", self._label, reply.op, ended)
        raise ModelUnavailableError(
            f"{self._label} sent a malformed reply; it is restarted on the next call"
        )

    def close(self) -> None:
        """Stop the worker; later calls fail with ``ModelUnavailableError``."""
        with self._lock:
            self._closed = True
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.close()
