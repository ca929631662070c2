"""A spool directory as found on disk: its recovery when the spool opens, and its inspection.

Recovery (:class:`_Recovery`, a base of :class:`~billing.spool.Spool`): opening a spool
directory takes its ``LOCK`` and replays it. Everything after the checkpoint is pending again;
a torn or corrupt tail is truncated (a zero-filled preallocated tail is cut too, without being
counted as corrupt), a corrupt record in the middle is skipped and counted, and segments wholly
before the checkpoint, whose deletion a crash interrupted, are deleted. A missing or corrupt
checkpoint replays every segment: the database ignores the duplicates.

Inspection (:func:`inspect_spool`, behind ``citybrain usage status``): the same files read
without taking the lock, writing, truncating or deleting anything, so it is safe while the
owning server runs, and after a crash shows the backlog the next start will deliver.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import zlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from billing.errors import SpoolLockedError
from billing.events import CorruptRecordError, decode_record
from billing.spool.segments import (
    _CHECKPOINT,
    _LOCK,
    _READ_CHUNK,
    _SEGMENT_RE,
    SpoolCursor,
    _SegmentLog,
    _sync_file,
)

# One logger for the whole spool package, so its records read as they always have.
log = logging.getLogger("billing.spool")


def _zeros_from(path: Path, start: int, end: int) -> bool:
    """Whether ``path`` holds only zero bytes in ``[start, end)`` (a preallocated tail)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        pos = start
        while pos < end:
            chunk = os.pread(fd, min(_READ_CHUNK, end - pos), pos)
            if not chunk or chunk.count(0) != len(chunk):
                return False
            pos += len(chunk)
        return True
    finally:
        os.close(fd)


class _Recovery(_SegmentLog):
    """Opening a spool directory: lock it, then rebuild the state from its files."""

    _replayed: int

    def _ensure_open(self) -> None:
        """Create/lock the directory and replay it, once (raises OSError on failure)."""
        with self._lock:
            if self._opened:
                return
            if self._closed:
                raise OSError("usage spool is closed")
            self._dir.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(self._dir / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(lock_fd)
                raise SpoolLockedError(
                    f"usage spool {self._dir} is in use by another process; "
                    "give each process its own spool directory"
                ) from None
            except OSError:
                os.close(lock_fd)
                raise
            try:
                self._replay()
            except OSError:
                os.close(lock_fd)
                raise
            self._lock_fd = lock_fd
            self._opened = True
            self._update_backlog_gauge()

    def _replay(self) -> None:
        """Rebuild state from disk: everything after the checkpoint is pending again."""
        segments = sorted(
            int(m.group(1)) for name in os.listdir(self._dir) if (m := _SEGMENT_RE.match(name))
        )
        checkpoint = self._read_checkpoint()
        if checkpoint is None:
            checkpoint = (segments[0] if segments else 0, 0)
        cp_seg, cp_off = checkpoint
        for seq in segments:
            if seq < cp_seg:  # delivered; its deletion was interrupted
                self._segment_path(seq).unlink(missing_ok=True)
        pending = 0
        durable: dict[int, int] = {}
        for seq in (s for s in segments if s >= cp_seg):
            start = cp_off if seq == cp_seg else 0
            count, good_end = self._scan_segment(seq, start)
            pending += count
            durable[seq] = good_end
        self._durable = durable
        self._checkpoint = SpoolCursor(cp_seg, cp_off, 0)
        self._appended_ordinal = pending
        self._replayed = pending
        self._next_seq = max([*segments, cp_seg]) + 1
        if pending:
            log.warning("usage spool %s: %d undelivered events replayed", self._dir, pending)

    def _scan_segment(self, seq: int, start: int) -> tuple[int, int]:
        """Count valid records from ``start``, index them, truncate a torn/corrupt tail."""
        path = self._segment_path(seq)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if start > size:
                log.error("usage spool: checkpoint past the end of segment %s", seq)
                return 0, size
            count = 0
            good_end = start
            for event, end in self._iter_records(fd, start, size):
                if event is None:
                    continue
                count += 1
                good_end = end
                self._remember((event,))
        finally:
            os.close(fd)
        if good_end < size:
            if _zeros_from(path, good_end, size):
                log.debug("usage spool: cutting segment %s's preallocated tail", seq)
            else:
                self._corrupt += 1
                log.warning(
                    "usage spool: segment %s has a torn or corrupt tail (%d bytes); truncating",
                    seq,
                    size - good_end,
                )
            try:
                wfd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.ftruncate(wfd, good_end)
                    _sync_file(wfd)
                finally:
                    os.close(wfd)
            except OSError as exc:  # we never read past good_end anyway
                log.warning("usage spool: cannot truncate segment %s: %s", seq, exc)
        return count, good_end


@dataclass(frozen=True, slots=True)
class SpoolSnapshot:
    """What a spool directory holds, read from its files without taking its lock.

    Attributes:
        directory: The spool directory.
        exists: Whether the directory exists.
        checkpoint: The delivered-up-to position ``(segment, offset)``, or None if there is none
            (nothing was delivered yet, or the checkpoint is unreadable: all is pending).
        segments: Segment files on disk.
        pending_events: Complete, valid records after the checkpoint (the backlog on disk).
        pending_bytes: Bytes after the checkpoint (torn tails included, preallocated zeros not).
        corrupt_records: Complete records after the checkpoint whose checksum or JSON is bad.
        oldest_pending_at: The time of the oldest pending event, if any.
        locked: Whether a live process holds the spool's lock (None if that cannot be told).
    """

    directory: Path
    exists: bool
    checkpoint: tuple[int, int] | None
    segments: int
    pending_events: int
    pending_bytes: int
    corrupt_records: int
    oldest_pending_at: datetime | None
    locked: bool | None


def _lock_is_held(path: Path) -> bool | None:
    """Whether some process holds a ``flock`` on ``path``, from ``/proc/locks`` (Linux).

    Never takes the lock itself: even a brief probe could make a starting server fail to lock.
    """
    try:
        st = os.stat(path)
        wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        with open("/proc/locks", encoding="ascii") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return False if not path.exists() else None
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF" (blocked waiters have "->")
        if len(parts) >= 6 and parts[1] == "FLOCK" and "->" not in parts and parts[5] == wanted:
            return True
    return False


def inspect_spool(directory: str | os.PathLike[str]) -> SpoolSnapshot:
    """Read a spool directory's state without locking it (safe while its server runs).

    The result is a snapshot: the owning process may append, deliver or delete segments while it
    is read (a segment deleted meanwhile counts as delivered; a record being written is not
    counted until its newline is on disk). Nothing is written, truncated or locked.

    Args:
        directory: The spool directory.

    Returns:
        The snapshot.
    """
    path = Path(directory)
    try:
        names = os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return SpoolSnapshot(path, False, None, 0, 0, 0, 0, None, None)
    segments = sorted(int(m.group(1)) for name in names if (m := _SEGMENT_RE.match(name)))
    checkpoint: tuple[int, int] | None = None
    try:
        raw = (path / _CHECKPOINT).read_bytes()
        if len(raw) >= 10 and raw[-1:] == b"\n" and zlib.crc32(raw[9:-1]) == int(raw[:8], 16):
            data = json.loads(raw[9:-1])
            checkpoint = int(data["segment"]), int(data["offset"])
    except (OSError, ValueError, KeyError, TypeError):
        checkpoint = None
    cp_seg, cp_off = checkpoint if checkpoint is not None else (0, 0)
    pending = pending_bytes = corrupt = 0
    oldest: datetime | None = None
    for seq in (s for s in segments if s >= cp_seg):
        start = cp_off if seq == cp_seg else 0
        try:
            fd = os.open(path / f"{seq:016d}.seg", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # delivered and deleted meanwhile
            continue
        try:
            pos, size, tail = start, os.fstat(fd).st_size, b""
            while pos < size:
                chunk = os.pread(fd, min(_READ_CHUNK, size - pos), pos)
                if not chunk:
                    break
                pos += len(chunk)
                lines = (tail + chunk).split(b"\n")
                tail = lines.pop()  # no newline yet: torn, being written, or preallocated
                pending_bytes += sum(len(line) + 1 for line in lines)
                for line in lines:
                    try:
                        event = decode_record(line + b"\n")
                    except CorruptRecordError:
                        corrupt += 1
                        continue
                    pending += 1
                    if oldest is None or event.at < oldest:
                        oldest = event.at
            pending_bytes += len(tail.rstrip(b"\0"))  # a torn tail, not preallocation
        finally:
            os.close(fd)
    return SpoolSnapshot(
        directory=path,
        exists=True,
        checkpoint=checkpoint,
        segments=len(segments),
        pending_events=pending,
        pending_bytes=pending_bytes,
        corrupt_records=corrupt,
        oldest_pending_at=oldest,
        locked=_lock_is_held(path / _LOCK),
    )
