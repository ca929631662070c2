"""A ``tritonserver`` process that the platform starts, watches, restarts and stops itself.

The binary comes from the ``nvidia-pytriton`` wheel (Triton Inference Server 2.51 with its
Python backend). The wheel cannot be run in place: :func:`prepare_distribution` copies
``bin``, ``backends`` and ``caches`` once into ``<data_dir>/triton/dist/<tag>`` and adds the
Python-backend stub built for this interpreter's Python version (the wheel ships one stub per
version). The server then runs with:

* ``LD_LIBRARY_PATH`` = this interpreter's ``LIBDIR`` (so the stub embeds this libpython) and
  the wheel's ``nvidia_pytriton.libs`` (the copied binary's RPATH is relative);
* ``PATH`` starting with this interpreter's folder (so the stub's Python uses this
  virtualenv's site-packages: numpy<2, torch, ``model_store``);
* HTTP and gRPC on free loopback ports (never 8000, the platform's own port), metrics off;
* ``--model-control-mode=explicit``: nothing loads until asked through the repository API
  (``tritonclient.http`` ``load_model`` / ``unload_model``).

Example:
    >>> with ManagedTritonServer(Path("var")) as server:  # doctest: +SKIP
    ...     client = tritonclient.http.InferenceServerClient(server.address)
    ...     client.load_model("traffic-police--flow-smoother--1")
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.util
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import httpx

from model_store.errors import ModelUnavailableError

__all__ = [
    "ManagedTritonServer",
    "TritonServerError",
    "find_bundled_triton",
    "prepare_distribution",
]

logger = logging.getLogger(__name__)

_RESERVED_PORTS = frozenset({8000, 8001, 8002})
_PORT_ATTEMPTS = 3
_STOP_GRACE_S = 10.0
# What of the platform's environment the server (and so every python-backend stub) gets.
_KEPT_ENV = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR"})
_KEPT_ENV_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "OMP_")


class TritonServerError(ModelUnavailableError):
    """503 "ModelUnavailable": the Triton server could not be prepared, started or reached.

    The message says what failed and ends with the tail of the server's log when there is one.
    """


def find_bundled_triton() -> Path:
    """Locate the ``tritonserver`` folder bundled with the ``nvidia-pytriton`` wheel.

    Returns:
        ``<site-packages>/pytriton/tritonserver``.

    Raises:
        TritonServerError: The wheel is not installed.
    """
    spec = importlib.util.find_spec("pytriton")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / "tritonserver"
        if (candidate / "bin" / "tritonserver").is_file():
            return candidate
    raise TritonServerError(
        "the bundled tritonserver was not found; install nvidia-pytriton==0.7.0"
    )


def _library_path(bundle: Path) -> str:
    entries = [
        sysconfig.get_config_var("LIBDIR") or "",
        str(bundle.parent.parent / "nvidia_pytriton.libs"),
        os.environ.get("LD_LIBRARY_PATH", ""),
    ]
    return os.pathsep.join(e for e in entries if e)


def prepare_distribution(data_dir: Path, *, bundle: Path | None = None) -> Path:
    """Copy the bundled server into a folder of ours, once per bundle and Python version.

    Args:
        data_dir: The platform's data folder; the copy goes under ``triton/dist/``.
        bundle: The wheel's ``tritonserver`` folder (default: :func:`find_bundled_triton`).

    Returns:
        The prepared folder, holding ``bin/tritonserver``, ``backends/python`` (with the
        stub for this Python version) and ``caches``.

    Raises:
        TritonServerError: The bundle has no stub for this Python version.
    """
    bundle = bundle or find_bundled_triton()
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = bundle / "python_backend_stubs" / py / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonServerError(f"the bundled Triton has no Python backend stub for Python {py}")
    binary = (bundle / "bin" / "tritonserver").stat()
    fingerprint = f"{bundle.resolve()}:{binary.st_size}:{binary.st_mtime_ns}:{py}"
    tag = f"py{py}-{hashlib.sha256(fingerprint.encode()).hexdigest()[:12]}"
    root = Path(data_dir) / "triton" / "dist"
    target = root / tag
    if (target / ".complete").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{tag}-{secrets.token_hex(4)}"
    try:
        for part in ("bin", "backends", "caches"):
            shutil.copytree(
                bundle / part, staging / part, ignore=shutil.ignore_patterns("__pycache__")
            )
        shutil.copy2(stub, staging / "backends" / "python" / "triton_python_backend_stub")
        (staging / ".complete").write_text(fingerprint, encoding="utf-8")
        try:
            os.replace(staging, target)
        except OSError:
            # Another process prepared the same tag first; theirs is as good as ours.
            if not (target / ".complete").is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _free_port(host: str, taken: set[int]) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _RESERVED_PORTS and port not in taken:
            return port


def _stop_at_exit(ref: weakref.ReferenceType[ManagedTritonServer]) -> None:
    server = ref()
    if server is not None:
        server.stop()


class ManagedTritonServer:
    """Runs the bundled ``tritonserver`` as a child process on a model repository of ours.

    Args:
        data_dir: The platform's data folder: the prepared server goes under
            ``triton/dist``, logs under ``triton/logs``, and the model repository (unless
            given) is ``triton/models``.
        repository: The model repository folder (default: ``<data_dir>/triton/models``).
        http_port: The HTTP port (default: a free port, chosen once and kept across restarts
            while it stays free).
        grpc_port: The gRPC port (default: a free port).
        host: The address to bind (loopback by default).
        startup_timeout_s: How long :meth:`start` waits for the server to be ready.
        extra_args: More ``tritonserver`` flags.

    The server is not started by the constructor; call :meth:`start` (or use ``with``).
    It is stopped at interpreter exit if still running.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        repository: Path | None = None,
        http_port: int | None = None,
        grpc_port: int | None = None,
        host: str = "127.0.0.1",
        startup_timeout_s: float = 60.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        for port in (http_port, grpc_port):
            if port in _RESERVED_PORTS:
                raise ValueError(f"port {port} is Triton's default; the platform uses 8000")
        self._data_dir = Path(data_dir)
        self._repository = Path(repository) if repository else self._data_dir / "triton" / "models"
        self._wanted_ports = (http_port, grpc_port)
        self._fixed_ports = http_port is not None and grpc_port is not None
        self._http_port = http_port
        self._grpc_port = grpc_port
        self._host = host
        self._startup_timeout = startup_timeout_s
        self._extra_args = list(extra_args)
        self._process: subprocess.Popen[bytes] | None = None
        self._shm_prefix: str | None = None
        self._lock = threading.RLock()
        self._starts = 0
        self._log_dir = self._data_dir / "triton" / "logs"
        self._log_path = self._log_dir / f"tritonserver-{os.getpid()}-{secrets.token_hex(3)}.log"
        atexit.register(_stop_at_exit, weakref.ref(self))

    # ------------------------------------------------------------------ properties

    @property
    def repository(self) -> Path:
        """The model repository folder the server reads."""
        return self._repository

    @property
    def address(self) -> str:
        """``host:port`` of the HTTP endpoint, as ``tritonclient.http`` wants it (no scheme)."""
        if self._http_port is None:
            raise TritonServerError("the Triton server has not been started")
        return f"{self._host}:{self._http_port}"

    @property
    def url(self) -> str:
        """The HTTP endpoint's URL, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{self.address}"

    @property
    def grpc_address(self) -> str:
        """``host:port`` of the gRPC endpoint."""
        if self._grpc_port is None:
            raise TritonServerError("the Triton server has not been started")
        return f"{self._host}:{self._grpc_port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs, else None."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def log_path(self) -> Path:
        """The server's log file (stdout and stderr; appended across restarts)."""
        return self._log_path

    @property
    def starts(self) -> int:
        """How many times the server was started successfully."""
        return self._starts

    def is_running(self) -> bool:
        """Tell whether the server process is alive (not whether it is ready).

        Returns:
            True while the child process has not exited.
        """
        return self.pid is not None

    def is_ready(self, timeout_s: float = 1.0) -> bool:
        """Ask the server whether it is ready (``GET /v2/health/ready``).

        Args:
            timeout_s: How long to wait for the answer.

        Returns:
            True if the process runs and answered 200.
        """
        if not self.is_running():
            return False
        try:
            response = httpx.get(f"{self.url}/v2/health/ready", timeout=timeout_s)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def log_tail(self, lines: int = 30) -> str:
        """Return the last lines of the server's log.

        Args:
            lines: How many lines.

        Returns:
            The text (empty when there is no log yet).
        """
        try:
            with self._log_path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                text = f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the server and wait until it is ready (no-op while it runs).

        Raises:
            TritonServerError: It could not be prepared, exited early or was not ready within
                ``startup_timeout_s``; the message holds the log tail.
        """
        with self._lock:
            if self.is_running():
                return
            self._cleanup()
            dist = prepare_distribution(self._data_dir)
            self._repository.mkdir(parents=True, exist_ok=True)
            self._log_dir.mkdir(parents=True, exist_ok=True)
            for attempt in range(_PORT_ATTEMPTS):
                if attempt > 0 or self._http_port is None or self._grpc_port is None:
                    self._pick_ports()
                try:
                    self._spawn(dist)
                    self._wait_ready()
                except TritonServerError:
                    self._kill_group()
                    retry = attempt + 1 < _PORT_ATTEMPTS and not self._fixed_ports
                    if not (retry and self._port_conflict()):
                        raise
                    logger.warning("tritonserver could not bind its ports; retrying on others")
                    continue
                self._starts += 1
                logger.info("tritonserver ready at %s (pid %s)", self.url, self.pid)
                return

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL after a grace period; idempotent."""
        with self._lock:
            process = self._process
            if process is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=_STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    logger.warning("tritonserver did not stop in %.0f s; killing it", _STOP_GRACE_S)
            self._cleanup()

    def kill(self) -> None:
        """Kill the server and its backend stubs at once (SIGKILL), as a crash would."""
        with self._lock:
            self._cleanup()

    def restart(self) -> None:
        """Stop the server if it runs (or clean up after a crash) and start it again.

        The ports are kept when they are still free, so clients keep their URL. Models are
        not reloaded by the server (explicit model control): their owners load them again.

        Raises:
            TritonServerError: The new process did not become ready.
        """
        with self._lock:
            self.stop()
            self.start()

    def __enter__(self) -> ManagedTritonServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ internals

    def _pick_ports(self) -> None:
        wanted_http, wanted_grpc = self._wanted_ports
        taken = {p for p in self._wanted_ports if p is not None}
        self._http_port = wanted_http or _free_port(self._host, taken)
        taken.add(self._http_port)
        self._grpc_port = wanted_grpc or _free_port(self._host, taken)

    def _command(self, dist: Path) -> list[str]:
        assert self._shm_prefix is not None
        return [
            str(dist / "bin" / "tritonserver"),
            f"--model-repository={self._repository}",
            f"--backend-directory={dist / 'backends'}",
            f"--cache-directory={dist / 'caches'}",
            "--model-control-mode=explicit",
            f"--http-address={self._host}",
            f"--http-port={self._http_port}",
            f"--grpc-address={self._host}",
            f"--grpc-port={self._grpc_port}",
            "--allow-metrics=false",
            "--allow-gpu-metrics=false",
            "--allow-cpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",
            "--disable-auto-complete-config",
            "--strict-readiness=false",  # ready = serving; model readiness is asked per model
            "--exit-timeout-secs=2",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
            "--backend-config=python,shm-default-byte-size=4194304",
            *self._extra_args,
        ]

    def _spawn(self, dist: Path) -> None:
        # A fresh shared-memory prefix per start: a killed server leaves its regions behind.
        self._shm_prefix = f"citybrain{os.getpid()}x{secrets.token_hex(3)}"
        # Its python-backend stubs run models with this environment: none of the platform's
        # secrets (database URL, keys), only what a server and an interpreter need.
        env = {
            name: value
            for name, value in os.environ.items()
            if name in _KEPT_ENV or name.startswith(_KEPT_ENV_PREFIXES)
        }
        env["LD_LIBRARY_PATH"] = _library_path(find_bundled_triton())
        env["PYTHONNOUSERSITE"] = "1"
        # The stub embeds libpython, which finds its prefix by looking up "python3" on PATH
        # (PYTHONPATH is ignored): this interpreter's folder first makes the stub use our
        # virtualenv's site-packages. It matters before any model.py runs: the stub imports
        # numpy itself, and it must be the numpy torch was built against (numpy<2).
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        command = self._command(dist)
        with self._log_path.open("ab") as log:
            log.write(f"\n=== starting: {' '.join(command)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=dist,
                start_new_session=True,  # its own process group: the stubs die with it
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout
        process = self._process
        assert process is not None
        with httpx.Client(timeout=1.0) as client:
            while True:
                code = process.poll()
                if code is not None:
                    raise TritonServerError(
                        f"tritonserver exited with status {code} while starting; "
                        f"log tail:\n{self.log_tail()}"
                    )
                try:
                    response = client.get(f"{self.url}/v2/health/ready")
                    if response.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TritonServerError(
                        f"tritonserver was not ready within {self._startup_timeout:.0f} s; "
                        f"log tail:\n{self.log_tail()}"
                    )
                time.sleep(0.05)

    def _port_conflict(self) -> bool:
        tail = self.log_tail(60).lower()
        return "address already in use" in tail or "failed to start" in tail

    def _kill_group(self) -> None:
        process = self._process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=_STOP_GRACE_S)

    def _cleanup(self) -> None:
        """Kill what is left of the process group and remove its shared-memory regions."""
        self._kill_group()
        self._process = None
        prefix = self._shm_prefix
        if prefix:
            shm = Path("/dev/shm")
            if shm.is_dir():
                for region in shm.glob(f"{prefix}*"):
                    with contextlib.suppress(OSError):
                        region.unlink()
