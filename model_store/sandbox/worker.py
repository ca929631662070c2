"""The sandbox worker: a process that confines itself, loads one python-format model and
answers ``predict`` calls over its socket (:mod:`model_store.sandbox.protocol`).

Started by :mod:`model_store.sandbox.client` as ``python -I -B -c <bootstrap> <package dir>
<spec>`` with a clean environment, every inherited descriptor closed but its socket, and its
output going to a log file of its own. The bootstrap registers the ``model_store`` packages
without running their ``__init__`` modules, which import PyTorch and the runtimes (five
seconds and 200 MB per worker), so a worker imports only numpy, pydantic and the few modules
below.

As root the process splits in two after entering its namespaces: this one stays outside and
only waits (PID namespaces apply to children), and its child, process 1 of the new PID
namespace, confines itself (:mod:`model_store.sandbox.confine`) and serves. When the gateway
kills the outer process, the child gets its parent-death signal, and the kernel kills every
process of a PID namespace whose first process dies: nothing the model forked survives.

Replies: ``hello`` (what confinement was achieved, sent before any tenant code runs),
``ready`` (the model loaded), ``result`` (outputs, with the worker's CPU seconds so far) or
``error`` with a ``kind``: ``sandbox`` (confinement failed), ``load`` or ``model`` (the
model's code raised; ``type`` and ``message`` say what), ``output`` (an output no v2 datatype
holds), ``oom`` (``MemoryError``; the worker exits after saying so).
"""

from __future__ import annotations

import contextlib
import encodings.cp437  # noqa: F401  (zipfile decodes member names with it; see below)
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

from model_store.formats.python import PythonModel, load_python
from model_store.manifest import ModelManifest
from model_store.sandbox import confine, protocol

# Everything the worker itself needs is imported above, before it confines itself: after
# giving up root, a worker without a root file system of its own may not reach the
# interpreter's files (a Python installed under /root, say), and inside one only what is
# bound is there.

__all__ = ["main"]

_EXIT_OOM = 70
_MESSAGE_CHARS = 2000
_FALLBACK_UID = 65534  # nobody: mapped even in containers whose user range is small


def _error(sock: socket.socket, kind: str, error: BaseException | str) -> None:
    if isinstance(error, BaseException):
        fields = {"kind": kind, "type": type(error).__name__, "message": str(error)}
    else:
        fields = {"kind": kind, "type": "SandboxError", "message": error}
    fields["message"] = fields["message"][:_MESSAGE_CHARS]
    with contextlib.suppress(OSError):
        protocol.send(sock, "error", fields)


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _wait_for(child: int) -> int:
    while True:
        try:
            _, status = os.waitpid(child, 0)
        except ChildProcessError:
            return 1
        code = os.waitstatus_to_exitcode(status)
        return code if code >= 0 else 128 - code


def main(argv: list[str]) -> int:
    """Run the worker.

    Args:
        argv: One argument, the JSON spec the client wrote (socket descriptor, artifact,
            limits, user id, what to confine).

    Returns:
        The exit status.
    """
    spec: dict[str, Any] = json.loads(argv[0])
    sock = socket.socket(fileno=spec["fd"])
    confine.set_parent_death_signal()
    if os.getppid() != spec["parent_pid"]:
        return 1  # the gateway died while this process started
    achieved = ["environment", "descriptors", "limits"]
    namespaced = False
    why_not = "disabled by configuration"
    if spec["namespaces"]:
        if os.geteuid() != 0:
            why_not = "the platform does not run as root"
        else:
            try:
                confine.enter_namespaces()
                namespaced = True
            except OSError as e:
                why_not = str(e)
    if not namespaced and spec["require_namespaces"]:
        _error(sock, "sandbox", f"namespaces are required but unavailable: {why_not}")
        return 1
    if namespaced:
        child = os.fork()
        if child:
            sock.close()
            return _wait_for(child)
        # Process 1 of the new PID namespace. Should the outer process die before the next
        # line, the gateway has closed its end of the socket too: the first send fails.
        confine.set_parent_death_signal()
    return _serve(sock, spec, achieved, namespaced, why_not)


def _confine(spec: dict[str, Any], achieved: list[str], namespaced: bool) -> None:
    artifact = Path(spec["artifact"])
    root = os.geteuid() == 0
    uid: int = spec["uid"] if spec["uid"] is not None else _FALLBACK_UID
    if namespaced:
        confine.build_root(
            confine.RootPlan(
                root=Path(spec["root"]),
                artifact=artifact,
                artifact_name=spec["artifact_name"],
                package_dir=spec["package_dir"],
                scratch_bytes=spec["scratch_bytes"],
                uid=uid,
            )
        )
        achieved += ["filesystem", "network", "processes", "ipc"]
    else:
        here = os.getcwd()
        shutil.copyfile(artifact, spec["artifact_name"])
        os.chmod(spec["artifact_name"], 0o444)
        os.makedirs("tmp", exist_ok=True)
        os.environ["HOME"] = here
        os.environ["TMPDIR"] = os.path.join(here, "tmp")
        if root:
            for path in (".", "tmp"):
                os.chown(path, uid, uid)
    limits = spec["limits"]
    confine.apply_limits(
        confine.Limits(
            memory_bytes=limits["memory_bytes"],
            cpu_seconds=limits["cpu_seconds"],
            max_processes=limits["max_processes"] if root else None,
            max_open_files=limits["max_open_files"],
            max_file_bytes=limits["max_file_bytes"],
        )
    )
    if root:
        # Root inside the sandbox could undo all of it (leave the chroot, mount, unshare
        # again): a worker that cannot shed root does not run the model at all.
        for candidate in dict.fromkeys([uid, _FALLBACK_UID]):
            try:
                confine.drop_privileges(candidate, own_pid_namespace=namespaced)
                break
            except OSError:
                continue
        else:
            raise OSError("could not give up root (no user id is mapped)")
        achieved.append("user")
    os.closerange(3, sock_fd := spec["fd"])
    os.closerange(sock_fd + 1, limits["max_open_files"])


def _serve(
    sock: socket.socket, spec: dict[str, Any], achieved: list[str], namespaced: bool, why_not: str
) -> int:
    try:
        _confine(spec, achieved, namespaced)
    except OSError as e:
        _error(sock, "sandbox", f"confinement failed: {e}")
        return 1
    missing = "" if namespaced else why_not
    protocol.send(sock, "hello", {"isolation": achieved, "uid": os.getuid(), "without": missing})
    limit = spec["max_message_bytes"]
    try:
        request = protocol.recv(sock, max_payload=limit)
    except EOFError:
        return 0
    if request.op != "load":
        _error(sock, "sandbox", f"expected 'load', got {request.op!r}")
        return 1
    try:
        manifest = ModelManifest.model_validate(request.header["manifest"])
        if manifest.format != "python":
            raise ValueError(f"the sandbox runs python-format models, not {manifest.format}")
        model = load_python(
            manifest, Path(spec["artifact_name"]).resolve(), cache_dir=Path("models").resolve()
        )
    except MemoryError as e:
        _error(sock, "oom", e)
        return _EXIT_OOM
    except Exception as e:
        _error(sock, "load", e)
        return 1
    protocol.send(sock, "ready")
    return _loop(sock, model, limit)


def _loop(sock: socket.socket, model: PythonModel, limit: int) -> int:
    while True:
        try:
            request = protocol.recv(sock, max_payload=limit)
        except EOFError:
            return 0
        if request.op == "close":
            try:
                model.close()
            finally:
                protocol.send(sock, "closed")
            return 0
        if request.op != "predict":
            _error(sock, "sandbox", f"unknown request {request.op!r}")
            return 1
        try:
            outputs = model.predict(request.tensors)
        except MemoryError as e:
            _error(sock, "oom", e)
            return _EXIT_OOM
        except Exception as e:
            _error(sock, "model", e)
            continue
        del request
        try:
            protocol.send(sock, "result", {"cpu_s": _cpu_seconds()}, outputs)
        except MemoryError as e:
            _error(sock, "oom", e)
            return _EXIT_OOM
        except ValueError as e:
            _error(sock, "output", e)
        except OSError:
            return 0  # the gateway is gone
