"""How a worker confines itself before it runs any tenant code (Linux system calls).

Run by the worker (:mod:`model_store.sandbox.worker`) on itself, in this order:

1. :func:`enter_namespaces` (as root): new mount, network, PID, IPC and UTS namespaces. The
   network namespace holds only a loopback interface that is down: no address, local or
   remote, is reachable (PostgreSQL and Redis on 127.0.0.1 included), and abstract Unix
   sockets of the host are out of reach too.
2. :func:`build_root` (as root, inside the mount namespace): a root file system of its own on
   a small tmpfs, holding read-only bind mounts of what the interpreter needs (``/usr``, the
   Python installation and its virtualenv, the ``model_store`` package), a few device nodes,
   a fresh ``/proc`` (of the new PID namespace: only the worker's own processes), writable
   size-limited tmpfs ``/tmp`` and ``/dev/shm``, and ``/sandbox``, a size-limited tmpfs
   holding a copy of the artifact. Nothing else of the host exists there: not the data
   directory, the database file, the artifact store, ``/run`` (PostgreSQL's socket) nor the
   platform's source tree. The worker then ``chroot``\\ s into it.
3. :func:`apply_limits`: ``RLIMIT_AS``, ``RLIMIT_CPU``, ``RLIMIT_NPROC``, ``RLIMIT_NOFILE``,
   ``RLIMIT_FSIZE``, no core files.
4. :func:`drop_privileges` (as root): a user id of its own (random, in a range no account
   uses), no supplementary groups, ``no_new_privs``. Without root's capabilities it can leave
   none of the above, and ``RLIMIT_NPROC`` counts only its own processes.

Each step is skipped where it cannot apply (not root: no namespaces, no user change) and the
worker reports what it achieved; the gateway logs it.
"""

from __future__ import annotations

import ctypes
import os
import resource
import shutil
import signal
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CLONE_FLAGS",
    "Limits",
    "apply_limits",
    "build_root",
    "drop_privileges",
    "enter_namespaces",
    "set_parent_death_signal",
]

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_FLAGS = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWNET

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38

_DEVICES = ("null", "zero", "full", "random", "urandom")
_TOP_LEVEL = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0), f"prctl({option})")


def set_parent_death_signal() -> None:
    """Have the kernel SIGKILL this process when the thread that started it exits."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def enter_namespaces() -> None:
    """Move into new mount, network, IPC and UTS namespaces; children get a new PID namespace.

    Raises:
        OSError: Not permitted (not root, or a container without ``CAP_SYS_ADMIN``).
    """
    _check(_libc.unshare(CLONE_FLAGS), "unshare")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def _bind(source: str, target: str, *, read_only: bool = True, devices: bool = False) -> None:
    _mount(source, target, None, MS_BIND | MS_REC)
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID
    if read_only:
        flags |= MS_RDONLY
    if not devices:
        flags |= MS_NODEV
    _mount(None, target, None, flags)


def _tmpfs(target: str, size: int, mode: int, *, flags: int = MS_NOSUID | MS_NODEV) -> None:
    _mount("tmpfs", target, "tmpfs", flags, f"size={max(size, 1 << 20)},mode={mode:o}")


def _inside(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _read_only_sources(package_dir: str) -> list[str]:
    """The host folders a confined worker sees, read-only: the system's and Python's files
    and the ``model_store`` package, never the folder around it."""
    wanted = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        package_dir,
    }
    wanted |= {os.path.realpath(p) for p in list(wanted)}
    return sorted(p for p in wanted if p and p != "/" and os.path.isdir(p))


@dataclass(frozen=True, slots=True)
class RootPlan:
    """What :func:`build_root` makes.

    Attributes:
        root: An empty folder to build the new root on (a tmpfs is mounted there).
        artifact: The artifact file to copy in (read before the ``chroot``).
        artifact_name: Its name under ``/sandbox``.
        package_dir: The ``model_store`` package folder (bound read-only at the same path).
        scratch_bytes: Size of ``/tmp`` and ``/dev/shm``; ``/sandbox`` gets this plus twice the
            artifact.
        uid: The user the worker becomes (owner of ``/sandbox``).
    """

    root: Path
    artifact: Path
    artifact_name: str
    package_dir: str
    scratch_bytes: int
    uid: int


def build_root(plan: RootPlan) -> None:
    """Build the worker's root file system and ``chroot`` into it (cwd: ``/sandbox``).

    Must run as root inside a new mount namespace, and after the fork into the new PID
    namespace (``/proc`` shows that namespace's processes).

    Args:
        plan: What to build.

    Raises:
        OSError: A mount failed.
    """
    # Nothing done here may reach the host's mount table.
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    new = str(plan.root)
    _tmpfs(new, 8 << 20, 0o755)
    bound: list[str] = []
    for name in _TOP_LEVEL:
        host = f"/{name}"
        if os.path.islink(host):
            os.symlink(os.readlink(host), f"{new}{host}")
        elif os.path.isdir(host):
            os.mkdir(f"{new}{host}")
            _bind(host, f"{new}{host}")
            bound.append(host)
    # /tmp before the sources: an interpreter or checkout under /tmp (a CI clone) is bound
    # inside the tmpfs rather than hidden by it.
    os.mkdir(f"{new}/tmp")
    _tmpfs(f"{new}/tmp", plan.scratch_bytes, 0o1777)
    for source in _read_only_sources(plan.package_dir):
        if _inside(source, bound) or _inside(os.path.realpath(source), bound):
            continue
        os.makedirs(f"{new}{source}", exist_ok=True)
        _bind(source, f"{new}{source}")
        bound.append(source)
    _make_etc(new, plan.uid)
    _make_dev(new, plan.scratch_bytes)
    os.mkdir(f"{new}/proc")
    _mount("proc", f"{new}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    size = plan.artifact.stat().st_size
    os.mkdir(f"{new}/sandbox")
    _tmpfs(f"{new}/sandbox", plan.scratch_bytes + 2 * size, 0o700)
    target = f"{new}/sandbox/{plan.artifact_name}"
    shutil.copyfile(plan.artifact, target)
    os.chmod(target, 0o444)
    os.chown(f"{new}/sandbox", plan.uid, plan.uid)
    # The root itself becomes read-only: the worker writes only to its tmpfs folders.
    _mount(None, new, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(new)
    os.chroot(".")
    os.chdir("/sandbox")


def _make_etc(new: str, uid: int) -> None:
    etc = f"{new}/etc"
    os.mkdir(etc)
    files = {
        "passwd": (
            f"root:x:0:0::/:/usr/sbin/nologin\nsandbox:x:{uid}:{uid}::/sandbox:/usr/sbin/nologin\n"
        ),
        "group": f"root:x:0:\nsandbox:x:{uid}:\n",
        "hosts": "127.0.0.1 localhost\n",
        "hostname": "sandbox\n",
    }
    for name, text in files.items():
        Path(etc, name).write_text(text)
    if os.path.isfile("/etc/ld.so.cache"):
        Path(etc, "ld.so.cache").touch()
        _bind("/etc/ld.so.cache", f"{etc}/ld.so.cache")
    if os.path.islink("/etc/localtime"):
        os.symlink(os.readlink("/etc/localtime"), f"{etc}/localtime")


def _make_dev(new: str, scratch_bytes: int) -> None:
    dev = f"{new}/dev"
    os.mkdir(dev)
    for name in _DEVICES:
        host = f"/dev/{name}"
        if os.path.exists(host) and stat.S_ISCHR(os.stat(host).st_mode):
            Path(dev, name).touch()
            _bind(host, f"{dev}/{name}", read_only=False, devices=True)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, f"{dev}/{name}")
    os.mkdir(f"{dev}/shm")
    _tmpfs(f"{dev}/shm", scratch_bytes, 0o1777)


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits of a worker (see :class:`~model_store.sandbox.SandboxConfig`)."""

    memory_bytes: int
    cpu_seconds: int
    max_processes: int | None
    max_open_files: int
    max_file_bytes: int


def apply_limits(limits: Limits) -> None:
    """Set the worker's rlimits (soft and hard alike, so its code cannot raise them again).

    Args:
        limits: The limits; ``max_processes`` None leaves ``RLIMIT_NPROC`` alone (without a
            user of its own it would count the platform's processes too).
    """
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.max_open_files, limits.max_open_files))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_file_bytes, limits.max_file_bytes))
    if limits.max_processes is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))


def drop_privileges(uid: int, *, own_pid_namespace: bool) -> None:
    """Become ``uid`` (and group ``uid``) for good, with no way back to more privileges.

    Args:
        uid: The user id; any number works, no account needs to exist.
        own_pid_namespace: The worker is alone in a PID namespace (then it stays dumpable).

    Raises:
        OSError: The system refused (e.g. an id outside a container's mapped range).
    """
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    if own_pid_namespace:
        # setuid made the process non-dumpable, which hands its /proc/self files to root; its
        # own code (and libraries reading /proc/self) should see them. It can ptrace nothing
        # else: in its PID namespace only its own processes exist.
        _prctl(PR_SET_DUMPABLE, 1)
