"""A durable, append-only local spool of usage events with group commit.

:class:`Spool` is the front: an event's life in it reads top to bottom.

1. :meth:`Spool.append` returns only after the event's bytes are written *and* fsynced
   (``fdatasync`` on Linux; a new segment's directory entry is fsynced too). There is no window
   in which an acknowledged event lives only in memory: the gateway sends its response after
   ``append`` returns, so every response that was sent has its event on disk. Concurrent
   appends share one write and one fsync (:mod:`billing.spool.group_commit`).
2. The bytes land in checksummed segment files (:mod:`billing.spool.segments`: the directory
   layout, preallocation, and what a failed write leaves behind).
3. :meth:`Spool.read_pending` returns the oldest undelivered events and a cursor;
   :meth:`Spool.mark_delivered` is called with that cursor only after the database commit, and
   persists the checkpoint with write-temp + fsync + rename + directory fsync. Segments wholly
   before the checkpoint are deleted.
4. On open, everything after the checkpoint is pending again: a torn or corrupt tail is
   truncated, a corrupt record in the middle is skipped and counted
   (:mod:`billing.spool.recovery`, which also holds :func:`inspect_spool`, the read-only look
   at a spool directory that ``citybrain usage status`` takes).

One spool directory belongs to one process (each server worker needs its own directory); the
``LOCK`` file enforces it. All public methods are thread-safe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from billing.errors import MeteringUnavailableError, SpoolLockedError
from billing.metrics import BillingMetrics
from billing.spool.group_commit import _GATHER_S, _GroupCommit, _WriteQueue, _writer_main
from billing.spool.recovery import SpoolSnapshot, _Recovery, inspect_spool
from billing.spool.segments import _DEFAULT_SEGMENT_BYTES, PendingBatch, SpoolCursor

__all__ = ["PendingBatch", "Spool", "SpoolCursor", "SpoolSnapshot", "SpoolStats", "inspect_spool"]

# One logger for the whole spool package, so its records read as they always have.
log = logging.getLogger("billing.spool")


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """Counters of one spool instance since it was opened.

    Attributes:
        appended: Events made durable by this instance.
        replayed: Undelivered events found on disk when the spool was opened.
        append_failures: Events whose append failed with ``MeteringUnavailableError``.
        fsyncs: Group commits (one write + one fsync each).
        bytes_written: Bytes made durable.
        delivered: Events marked delivered.
        backlog: Events durable but not yet delivered.
        corrupt_records: Corrupt records skipped (replay and reads) or truncated (torn tails).
        segments: Segment files not yet deleted.
        available: Whether the last attempt to write succeeded.
        last_error: The last write error, if any.
    """

    appended: int
    replayed: int
    append_failures: int
    fsyncs: int
    bytes_written: int
    delivered: int
    backlog: int
    corrupt_records: int
    segments: int
    available: bool
    last_error: str | None


class Spool(_GroupCommit, _Recovery):
    """A durable local append-only spool of usage events (see the module docstring).

    Example::

        spool = Spool(Path("var/spool/worker-0"))
        await spool.append(event)            # returns once the event is fsynced
        batch = spool.read_pending(5000)
        ...insert batch.events, commit...
        spool.mark_delivered(batch.cursor)   # only after the commit
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        segment_max_bytes: int = _DEFAULT_SEGMENT_BYTES,
        recent_window_s: float = 48 * 3600.0,
        recent_capacity: int = 200_000,
        metrics: BillingMetrics | None = None,
        group_commit_wait_s: float = _GATHER_S,
    ) -> None:
        """Open (or create) the spool and replay what is pending.

        If the directory cannot be created or read (full disk, a path under a regular file...),
        the spool still opens: appends fail with ``MeteringUnavailableError`` and each new append
        retries opening, so metering recovers once the disk does.

        Args:
            directory: The spool directory (one per process).
            segment_max_bytes: A segment is rotated once it holds at least this many bytes.
            recent_window_s: How long appended event ids stay in the in-memory index.
            recent_capacity: At most this many ids are kept in the in-memory index.
            metrics: Where to report appends, fsync group sizes and the backlog.
            group_commit_wait_s: How long a group may gather under load at most (see
                :mod:`billing.spool.group_commit`); 0 hands every group to the writer thread
                at once.

        Raises:
            SpoolLockedError: Another live process owns the directory.
        """
        if segment_max_bytes < 1:
            raise ValueError("segment_max_bytes must be positive")
        if not 0.0 <= group_commit_wait_s <= 1.0:
            raise ValueError("group_commit_wait_s must be between 0 and 1 second")
        self._dir = Path(directory)
        self._segment_max_bytes = segment_max_bytes
        self._recent_window_s = recent_window_s
        self._recent_capacity = recent_capacity
        self._metrics = metrics

        self._lock = threading.RLock()  # state below
        # Held while a group is written and fsynced: by the writer thread, or by an event loop
        # committing its own group (see ``append``).
        self._commit_lock = threading.Lock()
        self._read_lock = threading.Lock()  # serialises read_pending / mark_delivered
        self._opened = False
        self._closed = False
        self._lock_fd = None
        self._active_seq = None
        self._active_fd = None
        self._active_size = 0
        self._prepared_end = 0  # the active segment is zero-filled (and durable) up to here
        self._prealloc_retry_at = 0.0  # after a failed preallocation, append plainly until then
        self._next_seq = 1
        self._durable = {}  # segment -> end of its last durable record
        self._checkpoint = SpoolCursor(0, 0, 0)
        self._appended_ordinal = 0
        self._recent = OrderedDict()
        # (ordinal, segment, end offset, event) of every event after the checkpoint, or None
        # while the backlog holds events not in it (replayed, or past _TAIL_MAX_EVENTS).
        self._tail = None

        self._replayed = 0
        self._appended = 0
        self._append_failures = 0
        self._fsyncs = 0
        self._bytes_written = 0
        self._delivered = 0
        self._corrupt = 0
        self._available = True
        self._last_error = None

        try:
            self._ensure_open()
        except SpoolLockedError:
            raise
        except OSError as exc:
            self._note_error(f"usage spool {self._dir} cannot be opened: {exc}")
            log.error("%s; metered calls will fail until it can", self._last_error)

        # Groups committed on an event loop (see append), and how long such commits take.
        self._loop_groups = {}
        self._loop_parked = weakref.WeakKeyDictionary()
        self._gather_s = group_commit_wait_s
        self._loop_commit_s = 0.0  # moving average of one group's write + fsync
        self._loop_commit_retry_at = 0.0  # until then, groups go to the writer thread

        self._queue = _WriteQueue()
        weakref.finalize(self, self._queue.shutdown)
        self._writer = threading.Thread(
            target=_writer_main,
            args=(weakref.ref(self), self._queue),
            name=f"usage-spool-writer[{self._dir.name}]",
            daemon=True,
        )
        self._writer.start()

    # ------------------------------------------------------------------ public API

    @property
    def directory(self) -> Path:
        """The spool directory."""
        return self._dir

    def read_pending(self, max_events: int) -> PendingBatch:
        """Return up to ``max_events`` undelivered events, oldest first, from the checkpoint on.

        Reading does not consume: until :meth:`mark_delivered` is called, the same events are
        returned again.

        Args:
            max_events: The most events to return.

        Returns:
            The events and the cursor just after the last of them.

        Raises:
            MeteringUnavailableError: The spool directory cannot be opened or read.
        """
        if max_events < 1:
            raise ValueError("max_events must be positive")
        with self._read_lock:
            try:
                self._ensure_open()
                return self._read(max_events)
            except MeteringUnavailableError:
                raise
            except OSError as exc:
                raise MeteringUnavailableError(
                    f"usage spool {self._dir} cannot be read: {exc}"
                ) from exc

    def mark_delivered(self, cursor: SpoolCursor) -> None:
        """Persist that everything before ``cursor`` is in the database; call after the commit.

        The checkpoint is written to a temporary file, fsynced and renamed over the old one (then
        the directory is fsynced); afterwards wholly delivered segments are deleted. A cursor at or
        before the current checkpoint is ignored.

        Args:
            cursor: A cursor returned by :meth:`read_pending` of this spool.

        Raises:
            ValueError: The cursor points past what is durable.
            MeteringUnavailableError: The checkpoint cannot be written (the events are then
                delivered again later, which the database ignores).
        """
        with self._read_lock:
            with self._lock:
                current = self._checkpoint
                if cursor <= current:
                    return
                durable_end = self._durable.get(cursor.segment)
                if durable_end is not None and cursor.offset > durable_end:
                    raise ValueError(f"cursor {cursor} is past the spool's durable end")
                if cursor.ordinal < current.ordinal or cursor.ordinal > self._appended_ordinal:
                    raise ValueError(f"cursor {cursor} does not belong to this spool instance")
            try:
                self._write_checkpoint(cursor)
            except OSError as exc:
                raise MeteringUnavailableError(
                    f"usage spool checkpoint cannot be written: {exc}"
                ) from exc
            with self._lock:
                self._delivered += cursor.ordinal - current.ordinal
                self._checkpoint = cursor
                tail = self._tail
                while tail and tail[0][0] <= cursor.ordinal:
                    tail.popleft()
                doomed = sorted(s for s in self._durable if s < cursor.segment)
                for seq in doomed:
                    del self._durable[seq]
                self._update_backlog_gauge()
            for seq in doomed:
                try:
                    os.unlink(self._segment_path(seq))
                except FileNotFoundError:
                    pass
                except OSError as exc:  # replay deletes it next time
                    log.warning("usage spool: cannot delete delivered segment %s: %s", seq, exc)

    def backlog(self) -> int:
        """Return the number of events durable in the spool and not yet delivered."""
        with self._lock:
            return self._appended_ordinal - self._checkpoint.ordinal

    def seen_recently(self, tenant_id: int, event_id: str, window_s: float | None = None) -> bool:
        """Whether this spool made an event with this id durable within the window.

        Only durable events are indexed (an id is never "claimed" before its event is on disk).
        The index is in memory, bounded and per process; a miss means "ask the database".

        Args:
            tenant_id: The tenant.
            event_id: The event id (idempotency key).
            window_s: Only count events whose ``at`` is this recent (default: the spool's window).

        Returns:
            True if such an event is in the index.
        """
        window = self._recent_window_s if window_s is None else window_s
        with self._lock:
            at = self._recent.get((tenant_id, event_id))
        return at is not None and at >= time.time() - window

    def stats(self) -> SpoolStats:
        """Return this spool instance's counters."""
        with self._lock:
            return SpoolStats(
                appended=self._appended,
                replayed=self._replayed,
                append_failures=self._append_failures,
                fsyncs=self._fsyncs,
                bytes_written=self._bytes_written,
                delivered=self._delivered,
                backlog=self._appended_ordinal - self._checkpoint.ordinal,
                corrupt_records=self._corrupt,
                segments=len(self._durable),
                available=self._available,
                last_error=self._last_error,
            )

    def close(self, timeout_s: float = 30.0) -> None:
        """Finish the queued appends, stop the writer thread and release the directory.

        Appends after ``close`` fail with ``MeteringUnavailableError``. Idempotent.

        Args:
            timeout_s: How long to wait for the writer thread.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.shutdown()
        if self._writer is not threading.current_thread():
            self._writer.join(timeout_s)
        # A group an event loop is committing right now finishes first: cutting the segment
        # under it would erase events it is about to confirm.
        if not self._commit_lock.acquire(timeout=timeout_s):
            log.error("usage spool %s: a commit is still running; left open", self._dir)
            return
        try:
            with self._lock:
                if self._active_fd is not None:
                    with contextlib.suppress(OSError):  # sealed: cut its preallocated zeros
                        os.ftruncate(self._active_fd, self._active_size)
                    os.close(self._active_fd)
                    self._active_fd = None
                if self._lock_fd is not None:
                    os.close(self._lock_fd)  # releases the flock
                    self._lock_fd = None
        finally:
            self._commit_lock.release()

    def __enter__(self) -> Spool:
        """Return the spool itself."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the spool."""
        self.close()

    def __del__(self) -> None:
        """Release the file descriptors of a spool dropped without ``close`` (as a crash would)."""
        for name in ("_active_fd", "_lock_fd"):
            fd = getattr(self, name, None)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _note_error(self, message: str) -> None:
        with self._lock:
            self._available = False
            self._last_error = message
