"""The spool's files: the directory layout, the segment and checkpoint formats, and their I/O.

Layout of the spool directory::

    LOCK                      flock()ed by the one process that owns the spool
    checkpoint                "<crc32> {"segment": S, "offset": O}\\n": delivered up to (S, O)
    0000000000000001.seg      segment files of checksummed records (see billing.events)
    0000000000000002.seg      ...

This module owns writing a group of records durably into the active segment (one ``pwrite``,
one fsync: :meth:`_SegmentLog._commit`), rotating segments, the checkpoint's encoding, and reading
pending events back, from the in-memory tail or from the segments. When and by whom a group is
committed is :mod:`billing.spool.group_commit`'s; how a directory found on disk is replayed is
:mod:`billing.spool.recovery`'s.

Preallocation: the active segment is zero-filled ahead of the write position, a chunk at a time
(``_PREALLOC_BYTES``, made durable once), so a group commit overwrites blocks that already exist
and its ``fdatasync`` has no file size or block map to journal. On ext4 that is what keeps the
fsync at the disk's own flush latency even while other writers (the database on the same disk)
keep the filesystem journal busy; an appending ``fdatasync`` waits for a journal commit that
carries everyone's metadata. Records never contain a zero byte, so a zero-filled tail is told
apart from a torn record; it is cut off when the segment is sealed or replayed. Where a chunk
does not fit (a nearly full disk), records are appended without it.

Failure: any ``OSError`` while opening, rotating, writing or syncing (``ENOSPC``, ``EACCES``,
``EROFS``, a directory that is a file...) fails exactly the callers of that group with
:class:`~billing.errors.MeteringUnavailableError`; the partly written bytes are truncated away (or,
if even that fails, the segment is sealed at its last good record and never read past it) and the
next group tries again. A failed event is never counted, indexed or delivered.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import itertools
import json
import logging
import os
import re
import threading
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from billing.errors import MeteringUnavailableError
from billing.events import CorruptRecordError, UsageEvent, decode_record
from billing.metrics import BillingMetrics

# One logger for the whole spool package, so its records read as they always have.
log = logging.getLogger("billing.spool")

_SEGMENT_RE = re.compile(r"(\d{16})\.seg\Z")
_CHECKPOINT = "checkpoint"
_LOCK = "LOCK"
_READ_CHUNK = 1 << 20
_DEFAULT_SEGMENT_BYTES = 64 << 20
_PREALLOC_BYTES = 1 << 20
_PREALLOC_RETRY_S = 5.0
# The events appended since the backlog was last empty are also kept in memory, so the flusher
# takes them from there instead of reading back and decoding what was just written; past this
# many undelivered events the copy is dropped and the flusher reads the segments.
_TAIL_MAX_EVENTS = 50_000


def _write_all(fd: int, data: bytes, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (``pwrite`` may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:  # pragma: no cover - pwrite raises rather than returning 0 on Linux
            raise OSError("pwrite wrote nothing")
        view = view[written:]
        offset += written


def _sync_file(fd: int) -> None:
    """Make a file's data (and the metadata needed to read it back) durable."""
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:  # pragma: no cover - macOS
        os.fsync(fd)


def _sync_dir(path: Path) -> None:
    """Make a directory's entries (created, renamed, removed files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True, order=True)
class SpoolCursor:
    """A position in the spool: everything before ``(segment, offset)``.

    Attributes:
        segment: The segment's sequence number.
        offset: The byte offset in that segment (always a record boundary).
        ordinal: How many events this spool instance has seen up to here (internal bookkeeping
            for the backlog; not part of the ordering).
    """

    segment: int
    offset: int
    ordinal: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class PendingBatch:
    """Undelivered events, oldest first, and the cursor to pass to ``mark_delivered``.

    Attributes:
        events: The events (may be empty).
        cursor: The position just after the last event returned.
    """

    events: list[UsageEvent]
    cursor: SpoolCursor


class _Record(Protocol):
    """What a commit takes of one queued append (``billing.spool.group_commit._Item``)."""

    data: bytes
    event: UsageEvent


class _SegmentLog(abc.ABC):
    """The segment files and what is known of them: a base of :class:`~billing.spool.Spool`.

    It only declares the attributes it works on; ``Spool.__init__`` sets them. ``_lock`` guards
    them, and ``_commit`` runs under the spool's commit lock, so one group is written at a time.
    """

    _dir: Path
    _segment_max_bytes: int
    _recent_window_s: float
    _recent_capacity: int
    _metrics: BillingMetrics | None
    _lock: threading.RLock
    _opened: bool
    _closed: bool
    _lock_fd: int | None
    _active_seq: int | None
    _active_fd: int | None
    _active_size: int
    _prepared_end: int
    _prealloc_retry_at: float
    _next_seq: int
    _durable: dict[int, int]
    _checkpoint: SpoolCursor
    _appended_ordinal: int
    _recent: OrderedDict[tuple[int, str], float]
    _tail: deque[tuple[int, int, int, UsageEvent]] | None
    _appended: int
    _append_failures: int
    _fsyncs: int
    _bytes_written: int
    _corrupt: int
    _available: bool
    _last_error: str | None

    @abc.abstractmethod
    def _ensure_open(self) -> None:
        """Create, lock and replay the directory, once; raise OSError on failure.

        :class:`billing.spool.recovery._Recovery` implements it: opening is replaying.
        """

    def _segment_path(self, seq: int) -> Path:
        return self._dir / f"{seq:016d}.seg"

    def _keep_in_tail(self, batch: Sequence[_Record], seq: int, start: int) -> None:
        """Keep a just-committed group in the in-memory tail (caller holds ``_lock``)."""
        if self._tail is None:
            if self._appended_ordinal != self._checkpoint.ordinal:
                return  # a backlog not in memory: the flusher reads the segments until it drains
            self._tail = deque()
        if len(self._tail) + len(batch) > _TAIL_MAX_EVENTS:
            self._tail = None
            return
        ordinal, end = self._appended_ordinal, start
        for item in batch:
            ordinal += 1
            end += len(item.data)
            self._tail.append((ordinal, seq, end, item.event))

    def _update_backlog_gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.spool_backlog.set(self._appended_ordinal - self._checkpoint.ordinal)

    def _remember(self, events: Iterable[UsageEvent]) -> None:
        """Add durable events to the recent-id index (caller holds ``_lock``)."""
        recent = self._recent
        for event in events:
            key = (event.tenant_id, event.id)
            recent[key] = event.at.timestamp()
            recent.move_to_end(key)
        cutoff = time.time() - self._recent_window_s
        while recent:
            key, at = next(iter(recent.items()))
            if len(recent) <= self._recent_capacity and at >= cutoff:
                break
            del recent[key]

    def _read_checkpoint(self) -> tuple[int, int] | None:
        path = self._dir / _CHECKPOINT
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            if len(raw) < 10 or raw[-1:] != b"\n" or zlib.crc32(raw[9:-1]) != int(raw[:8], 16):
                raise ValueError("checksum mismatch")
            data = json.loads(raw[9:-1])
            return int(data["segment"]), int(data["offset"])
        except (ValueError, KeyError, TypeError) as exc:
            # Safe direction: replay everything still on disk; the database ignores duplicates.
            log.error("usage spool: corrupt checkpoint (%s); replaying all segments", exc)
            return None

    def _write_checkpoint(self, cursor: SpoolCursor) -> None:
        payload = json.dumps(
            {"segment": cursor.segment, "offset": cursor.offset}, separators=(",", ":")
        ).encode()
        data = b"%08x %s\n" % (zlib.crc32(payload), payload)
        tmp = self._dir / (_CHECKPOINT + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            _write_all(fd, data, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._dir / _CHECKPOINT)
        _sync_dir(self._dir)

    def _iter_records(self, fd: int, pos: int, end: int) -> Iterable[tuple[UsageEvent | None, int]]:
        """Yield ``(event or None if corrupt, end offset)`` for each record in ``[pos, end)``.

        A final fragment without a newline is not yielded (it is a torn record).
        """
        while pos < end:
            buf = os.pread(fd, min(_READ_CHUNK, end - pos), pos)
            if not buf:
                return
            last_nl = buf.rfind(b"\n")
            if last_nl < 0:
                if pos + len(buf) >= end:
                    return  # torn tail
                buf = os.pread(fd, end - pos, pos)  # a record longer than a chunk (corrupt)
                last_nl = buf.rfind(b"\n")
                if last_nl < 0:
                    return
            i = 0
            while i <= last_nl:
                j = buf.index(b"\n", i) + 1
                try:
                    event: UsageEvent | None = decode_record(buf[i:j])
                except CorruptRecordError:
                    self._corrupt += 1
                    event = None
                yield event, pos + j
                i = j
            pos += last_nl + 1

    def _read(self, max_events: int) -> PendingBatch:
        with self._lock:
            checkpoint = self._checkpoint
            tail = self._tail
            if tail is not None:
                if not tail:
                    return PendingBatch([], checkpoint)
                if tail[0][0] == checkpoint.ordinal + 1:
                    taken = list(itertools.islice(tail, max_events))
                    ordinal, seq, end, _ = taken[-1]
                    return PendingBatch([t[3] for t in taken], SpoolCursor(seq, end, ordinal))
                self._tail = None  # cannot happen; the segments are the truth
            durable = dict(self._durable)
            active = self._active_seq
        events: list[UsageEvent] = []
        seg, off = checkpoint.segment, checkpoint.offset
        for seq in sorted(s for s in durable if s >= checkpoint.segment):
            start = checkpoint.offset if seq == checkpoint.segment else 0
            end = durable[seq]
            pos = start
            if pos < end:
                fd = os.open(self._segment_path(seq), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    for event, record_end in self._iter_records(fd, pos, end):
                        pos = record_end
                        if event is not None:
                            events.append(event)
                            if len(events) >= max_events:
                                break
                finally:
                    os.close(fd)
            seg, off = seq, pos
            if len(events) >= max_events and pos < end:
                break
            if seq != active:  # sealed and read to its end: move on to the next segment
                seg, off = seq + 1, 0
            if len(events) >= max_events:
                break
        return PendingBatch(events, SpoolCursor(seg, off, checkpoint.ordinal + len(events)))

    def _rotate(self) -> None:
        """Start a new segment (caller is the writer thread)."""
        seq = self._next_seq
        path = self._segment_path(seq)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            self._next_seq = seq + 1
            raise
        try:
            _sync_dir(self._dir)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        with self._lock:
            old, old_size = self._active_fd, self._active_size
            self._active_seq, self._active_fd, self._active_size = seq, fd, 0
            self._prepared_end = 0
            self._durable[seq] = 0
            self._next_seq = seq + 1
        if old is not None:
            # Sealed: cut its preallocated zeros (replay would, if this is lost in a crash).
            with contextlib.suppress(OSError):
                os.ftruncate(old, old_size)
            os.close(old)

    def _preallocate(self, fd: int, needed: int) -> None:
        """Zero-fill the active segment up to at least ``needed`` bytes, durably (writer
        thread). Where the chunk does not fit (ENOSPC, EDQUOT), leave it: the records are then
        appended, and may still fit. Any other error fails the group, as a failed write would."""
        if time.monotonic() < self._prealloc_retry_at:
            return
        chunk = min(_PREALLOC_BYTES, max(4096, self._segment_max_bytes))
        target = max(needed, self._prepared_end + chunk)
        try:
            _write_all(fd, bytes(target - self._prepared_end), self._prepared_end)
            _sync_file(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, max(self._prepared_end, self._active_size))
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            log.warning("usage spool: cannot preallocate %d bytes (%s)", target, exc)
            self._prealloc_retry_at = time.monotonic() + _PREALLOC_RETRY_S
            return
        self._prepared_end = target

    def _seal_broken_active(self) -> None:
        with self._lock:
            fd = self._active_fd
            self._active_fd = None
            self._active_seq = None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _commit(self, batch: Sequence[_Record]) -> str | None:
        """Write and fsync one group; return None on success or the error message."""
        data = b"".join(item.data for item in batch)
        started = time.perf_counter()
        try:
            self._ensure_open()
            if self._active_fd is None or self._active_size >= self._segment_max_bytes:
                self._rotate()
            fd = self._active_fd
            assert fd is not None
            start = self._active_size
            if start + len(data) > self._prepared_end:
                self._preallocate(fd, start + len(data))
            try:
                _write_all(fd, data, start)
                _sync_file(fd)
            except OSError:
                try:  # take the partial write back so the segment ends at a good record
                    self._prepared_end = start
                    os.ftruncate(fd, start)
                    _sync_file(fd)
                except OSError:
                    self._seal_broken_active()  # never read past `start` of that segment
                raise
        except (OSError, MeteringUnavailableError) as exc:
            message = f"usage spool {self._dir} cannot be written: {exc}"
            with self._lock:
                self._append_failures += len(batch)
                self._available = False
                self._last_error = message
            if self._metrics is not None:
                self._metrics.append_failures.inc(len(batch))
            log.error("%s (%d events refused)", message, len(batch))
            return message
        elapsed = time.perf_counter() - started
        with self._lock:
            self._active_size = start + len(data)
            assert self._active_seq is not None
            self._durable[self._active_seq] = self._active_size
            self._keep_in_tail(batch, self._active_seq, start)
            self._appended_ordinal += len(batch)
            self._appended += len(batch)
            self._fsyncs += 1
            self._bytes_written += len(data)
            self._available = True
            self._remember(item.event for item in batch)
            self._update_backlog_gauge()
        if self._metrics is not None:
            self._metrics.events_appended.inc(len(batch))
            self._metrics.fsync_group_size.observe(len(batch))
            self._metrics.fsync_latency.observe(elapsed)
        return None
