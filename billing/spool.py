"""A durable, append-only local spool of usage events with group commit.

Layout of the spool directory::

    LOCK                      flock()ed by the one process that owns the spool
    checkpoint                "<crc32> {"segment": S, "offset": O}\\n": delivered up to (S, O)
    0000000000000001.seg      segment files of checksummed records (see billing.events)
    0000000000000002.seg      ...

Durability: :meth:`Spool.append` returns only after the event's bytes are written *and* fsynced
(``fdatasync`` on Linux; a new segment's directory entry is fsynced too). There is no window in
which an acknowledged event lives only in memory: the gateway sends its response after ``append``
returns, so every response that was sent has its event on disk.

Group commit: the events appended while the previous group was being written are written with
one ``pwrite`` and made durable with one fsync, then all their callers wake. Appends from an
event loop are grouped on the loop itself: the first append leads a group and yields once, so
every call already ready on the loop joins it. Who then commits depends on what else the loop
has to do, which the caller says (``append(..., others_in_flight=n)``, counted by the gateway):

- a call alone on its loop (one client) commits inline: one fsync of blocking, but nothing else
  was waiting for the loop, and no thread handoff or interpreter-lock hand-over is paid;
- a group gathered while other calls are in flight goes to a writer thread, so the loop keeps
  serving them during the fsync. Under load (more than ``_GATHER_SIBLINGS`` others in flight,
  as PostgreSQL's ``commit_siblings``) the group first gathers for up to
  ``group_commit_wait_s`` (20 ms by default; as PostgreSQL's ``commit_delay``), while the loop
  has other work: it is committed as soon as at most ``_GATHER_SIBLINGS`` of the calls in
  flight are still being served (the others have joined it or wait for the writer's fsync of
  an earlier group), once the loop's thread has been mostly idle for ``_GATHER_CHECK_S`` (2 ms:
  the calls in flight are then busy elsewhere, in a slow model or a remote runtime, not queued
  on the loop), or once it holds ``_GATHER_MAX_EVENTS``. On a loop that is busy anyway
  the wait costs no throughput, and each fsync saved is CPU saved (on the VM these figures come
  from, one fsync under load cost about 400 us of the writer thread's CPU, kernel time
  included); the calls left being served keep the loop busy during the fsync.
  ``bench/metering.py`` part iii measures it; docs/metering.md has the figures.

When the disk's flush is slow (a moving average of loop commits above ``_LOOP_COMMIT_MAX_S``),
and for appends from threads without a loop, the writer thread commits every group.
The cost is one fsync latency (about 0.1-5 ms depending on the disk) added to each metered
call; under concurrency that fsync is shared, so throughput grows with the number of
concurrent callers while the added latency stays about one to two fsyncs.

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

Delivery: :meth:`Spool.read_pending` returns the oldest undelivered events and a cursor;
:meth:`Spool.mark_delivered` is called with that cursor only after the database commit, and
persists the checkpoint with write-temp + fsync + rename + directory fsync. Segments wholly before
the checkpoint are deleted. On open, everything after the checkpoint is pending again: a torn or
corrupt tail is truncated, a corrupt record in the middle is skipped and counted.

One spool directory belongs to one process (each server worker needs its own directory); the
``LOCK`` file enforces it. All public methods are thread-safe.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import fcntl
import itertools
import json
import logging
import os
import re
import threading
import time
import weakref
import zlib
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from billing.errors import MeteringUnavailableError, SpoolLockedError
from billing.events import CorruptRecordError, UsageEvent, decode_record
from billing.metrics import BillingMetrics

__all__ = ["PendingBatch", "Spool", "SpoolCursor", "SpoolSnapshot", "SpoolStats", "inspect_spool"]

log = logging.getLogger(__name__)

_SEGMENT_RE = re.compile(r"(\d{16})\.seg\Z")
_CHECKPOINT = "checkpoint"
_LOCK = "LOCK"
_READ_CHUNK = 1 << 20
_DEFAULT_SEGMENT_BYTES = 64 << 20
_PREALLOC_BYTES = 1 << 20
_PREALLOC_RETRY_S = 5.0
# A group is committed on the event loop while its write + fsync takes less than this on
# average; above it, the writer thread takes the groups for _LOOP_COMMIT_RETRY_S seconds.
_LOOP_COMMIT_MAX_S = 0.002
_LOOP_COMMIT_RETRY_S = 10.0
# With more than this many other calls in flight, a group gathers before the writer commits it:
# until at most this many calls in flight are still being served (the rest joined it or wait for
# the writer), it holds _GATHER_MAX_EVENTS, or _GATHER_S passed (the default of the spool's
# group_commit_wait_s).
_GATHER_SIBLINGS = 4
_GATHER_S = 0.020
# Every _GATHER_CHECK_S a gathering group looks at its loop's thread: if it ran on a CPU for
# less than _GATHER_BUSY of that time, the calls in flight are busy elsewhere (a slow model, a
# remote runtime) rather than queued on the loop, and the group is committed.
_GATHER_CHECK_S = 0.002
_GATHER_BUSY = 0.5
_GATHER_MAX_EVENTS = 512
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


class _Parked:
    """How many of one loop's appends wait for the writer thread's fsync (used on the loop only).

    Incremented when a group (or, while the disk is slow, a single append) is handed to the
    writer, decremented when its futures are resolved on the loop; a gathering group counts
    these callers as no longer being served. A cancelled caller stays counted until the writer
    is done with its event, while the gateway no longer counts it in flight: a gather then ends
    a little early, which is safe.
    """

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


class _Item:
    """One queued append: the record's bytes and whoever waits for it."""

    __slots__ = ("data", "event", "future", "loop", "parked")

    def __init__(
        self,
        data: bytes,
        event: UsageEvent,
        loop: asyncio.AbstractEventLoop | None,
        future: asyncio.Future[None] | concurrent.futures.Future[None],
        parked: _Parked | None = None,
    ) -> None:
        self.data = data
        self.event = event
        self.loop = loop
        self.future = future
        self.parked = parked


class _LoopGroup:
    """A group gathering on one event loop: its appends, and how many calls were in flight."""

    __slots__ = ("cpu_mark", "in_flight", "items", "parked", "time_mark", "timer", "waiter")

    def __init__(self, item: _Item, in_flight: int, parked: _Parked) -> None:
        self.items = [item]
        self.parked = parked
        # While gathering: the pending check of the loop's work, and when it last looked.
        self.timer: asyncio.TimerHandle | None = None
        self.time_mark = 0.0
        self.cpu_mark = 0.0
        # Calls in flight on the loop, as the latest member counted them (itself included).
        self.in_flight = in_flight
        # Set while the leader gathers under load; woken once the group is complete.
        self.waiter: asyncio.Future[None] | None = None

    def join(self, item: _Item, in_flight: int) -> None:
        self.items.append(item)
        self.in_flight = in_flight
        if self.waiter is not None and self.complete():
            _wake(self.waiter)

    def start_checks(self, loop: asyncio.AbstractEventLoop, window_s: float) -> None:
        """Check the loop's work every ``_GATHER_CHECK_S`` until ``window_s`` has passed."""
        self.time_mark, self.cpu_mark = time.monotonic(), time.thread_time()
        self.timer = loop.call_later(
            min(_GATHER_CHECK_S, window_s), self._check, loop, self.time_mark + window_s
        )

    def _check(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """End the gather at its deadline, or once the loop's thread has been mostly idle."""
        if self.waiter is None or self.waiter.done():
            return
        now, cpu = time.monotonic(), time.thread_time()
        idle = cpu - self.cpu_mark < _GATHER_BUSY * (now - self.time_mark)
        if idle or now >= deadline:
            _wake(self.waiter)
            return
        self.time_mark, self.cpu_mark = now, cpu
        self.timer = loop.call_later(
            min(_GATHER_CHECK_S, deadline - now), self._check, loop, deadline
        )

    def complete(self) -> bool:
        """Whether to stop gathering: few calls in flight are left being served, or it is full.

        "Being served" are the calls in flight that neither joined this group nor wait for the
        writer's fsync of an earlier group; while more than ``_GATHER_SIBLINGS`` are, the loop
        has work enough that waiting for them costs no throughput.
        """
        n = len(self.items)
        return n >= _GATHER_MAX_EVENTS or n + self.parked.n + _GATHER_SIBLINGS >= self.in_flight


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _WriteQueue:
    """Shared by a spool and its writer thread; holds no reference to the spool itself."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.items: list[_Item] = []
        self.closing = False

    def shutdown(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify_all()


def _resolve_async(
    futures: list[asyncio.Future[None]], error: str | None, parked: _Parked | None = None
) -> None:
    if parked is not None:
        parked.n -= len(futures)
    for fut in futures:
        if fut.done():  # the caller was cancelled; its event is durable (or failed) regardless
            continue
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(MeteringUnavailableError(error))


def _resolve(batch: list[_Item], error: str | None) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    parked: dict[asyncio.AbstractEventLoop, _Parked | None] = {}
    for item in batch:
        if item.loop is None:
            cfut = item.future
            assert isinstance(cfut, concurrent.futures.Future)
            if cfut.set_running_or_notify_cancel():
                if error is None:
                    cfut.set_result(None)
                else:
                    cfut.set_exception(MeteringUnavailableError(error))
        else:
            afut = item.future
            assert isinstance(afut, asyncio.Future)
            by_loop.setdefault(item.loop, []).append(afut)
            parked[item.loop] = item.parked
    for loop, futures in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve_async, futures, error, parked[loop])
        except RuntimeError:  # the loop was closed while its callers waited
            log.warning("usage spool: event loop closed before %d appends resolved", len(futures))


def _writer_main(ref: weakref.ReferenceType[Spool], queue: _WriteQueue) -> None:
    """The writer thread: group commit until the spool is closed or garbage-collected."""
    while True:
        with queue.cond:
            while not queue.items and not queue.closing:
                queue.cond.wait(timeout=1.0)
                if ref() is None:
                    queue.closing = True
            batch, queue.items = queue.items, []
            closing = queue.closing
        if batch:
            spool = ref()
            if spool is None:
                error: str | None = "usage spool is closed"
            else:
                try:
                    with spool._commit_lock:
                        error = spool._commit(batch)
                except Exception as exc:  # the writer must outlive any surprise
                    log.exception("usage spool writer: unexpected error")
                    error = f"usage spool failed: {exc!r}"
            del spool  # never hold the spool while waking callers
            _resolve(batch, error)
        elif closing:
            return


class Spool:
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
            group_commit_wait_s: How long a group may gather under load at most (see the
                module docstring); 0 hands every group to the writer thread at once.

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
        self._lock_fd: int | None = None
        self._active_seq: int | None = None
        self._active_fd: int | None = None
        self._active_size = 0
        self._prepared_end = 0  # the active segment is zero-filled (and durable) up to here
        self._prealloc_retry_at = 0.0  # after a failed preallocation, append plainly until then
        self._next_seq = 1
        self._durable: dict[int, int] = {}  # segment -> end of its last durable record
        self._checkpoint = SpoolCursor(0, 0, 0)
        self._appended_ordinal = 0
        self._recent: OrderedDict[tuple[int, str], float] = OrderedDict()
        # (ordinal, segment, end offset, event) of every event after the checkpoint, or None
        # while the backlog holds events not in it (replayed, or past _TAIL_MAX_EVENTS).
        self._tail: deque[tuple[int, int, int, UsageEvent]] | None = None

        self._replayed = 0
        self._appended = 0
        self._append_failures = 0
        self._fsyncs = 0
        self._bytes_written = 0
        self._delivered = 0
        self._corrupt = 0
        self._available = True
        self._last_error: str | None = None

        try:
            self._ensure_open()
        except SpoolLockedError:
            raise
        except OSError as exc:
            self._note_error(f"usage spool {self._dir} cannot be opened: {exc}")
            log.error("%s; metered calls will fail until it can", self._last_error)

        # Groups committed on an event loop (see append), and how long such commits take.
        self._loop_groups: dict[asyncio.AbstractEventLoop, _LoopGroup] = {}
        self._loop_parked: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Parked] = (
            weakref.WeakKeyDictionary()
        )
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

    async def append(self, event: UsageEvent, *, others_in_flight: int = 0) -> None:
        """Append one event; return once it is written and fsynced (group commit).

        The first append on the loop leads a group and yields once, so the calls already ready
        on the loop join it. A group of a call alone on its loop is then written and fsynced on
        the loop itself while the disk's flush is fast (see ``_LOOP_COMMIT_MAX_S``): nothing
        else waits for the loop, and no thread handoff or interpreter-lock hand-over is paid.
        A group gathered while other calls are in flight goes to the writer thread, so the
        loop serves them during the fsync; under load it first gathers for up to
        ``group_commit_wait_s`` (see the module docstring). A slow disk sends every group to
        the writer thread; the loop is tried again after ``_LOOP_COMMIT_RETRY_S``.

        Args:
            event: The usage event.
            others_in_flight: How many other calls are in progress on this loop (the gateway
                counts them); 0 for a call that is alone.

        Raises:
            MeteringUnavailableError: The spool cannot be written or is closed; the event is
                not recorded and the call must fail.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        in_flight = max(0, others_in_flight) + 1
        if (group := self._loop_groups.get(loop)) is not None:
            # Under load most calls join: the group carries the loop's counter, so they skip
            # the weak-keyed lookup below.
            item = _Item(event.to_record(), event, loop, future, group.parked)
            group.join(item, in_flight)  # its leader commits it
            await future
            return
        if (parked := self._loop_parked.get(loop)) is None:
            parked = self._loop_parked[loop] = _Parked()
        item = _Item(event.to_record(), event, loop, future, parked)
        if time.monotonic() < self._loop_commit_retry_at:
            self._enqueue(item)
            parked.n += 1
        else:
            self._loop_groups[loop] = group = _LoopGroup(item, in_flight, parked)
            try:
                await asyncio.sleep(0)  # the calls already ready on the loop join the group
                if self._gather_s > 0 and not group.complete():
                    group.waiter = loop.create_future()
                    group.start_checks(loop, self._gather_s)
                    try:
                        await group.waiter  # the others in flight join meanwhile
                    finally:
                        if group.timer is not None:
                            group.timer.cancel()
            finally:
                # Committed even if this call is cancelled here: the others wait on the group.
                self._commit_loop_group(loop)
        await future  # the leader's is done already, unless the writer thread took the group

    def _commit_loop_group(self, loop: asyncio.AbstractEventLoop) -> None:
        """Commit the group gathered on ``loop`` (by its leader, on that loop)."""
        group = self._loop_groups.pop(loop)
        batch = group.items
        futures: list[asyncio.Future[None]] = [item.future for item in batch]  # type: ignore[misc]
        # Other calls in flight: they go on during the writer's fsync. Queued appends go first,
        # and the writer's commit is never written around.
        if (
            group.in_flight > 1
            or time.monotonic() < self._loop_commit_retry_at
            or self._queue.items
            or not self._commit_lock.acquire(blocking=False)
        ):
            try:
                self._enqueue(*batch)
            except MeteringUnavailableError as exc:  # closed meanwhile: fail them all
                _resolve_async(futures, str(exc))
                return
            group.parked.n += len(batch)
            return
        try:
            started = time.perf_counter()
            error = "usage spool is closed" if self._closed else self._commit(batch)
            self._observe_loop_commit(time.perf_counter() - started)
        except Exception as exc:  # never leave a member of the group waiting
            log.exception("usage spool: unexpected error in a group commit")
            error = f"usage spool failed: {exc!r}"
        finally:
            self._commit_lock.release()
        _resolve_async(futures, error)

    def _observe_loop_commit(self, seconds: float) -> None:
        ewma = self._loop_commit_s = 0.9 * self._loop_commit_s + 0.1 * seconds
        if ewma > _LOOP_COMMIT_MAX_S:
            log.info(
                "usage spool: commits take %.1f ms; the writer thread takes them for %.0f s",
                ewma * 1000.0,
                _LOOP_COMMIT_RETRY_S,
            )
            self._loop_commit_s = 0.0
            self._loop_commit_retry_at = time.monotonic() + _LOOP_COMMIT_RETRY_S

    def append_sync(self, event: UsageEvent, timeout_s: float | None = None) -> None:
        """Append one event from a thread without an event loop; block until fsynced.

        Args:
            event: The usage event.
            timeout_s: How long to wait at most (``None``: as long as it takes).

        Raises:
            MeteringUnavailableError: The spool cannot be written or is closed.
            TimeoutError: The event was not durable within ``timeout_s`` (it may still become
                durable later; retry with the same id).
        """
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._enqueue(_Item(event.to_record(), event, None, future))
        future.result(timeout_s)

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

    # ------------------------------------------------------------------ internals

    def _enqueue(self, *items: _Item) -> None:
        if self._closed:
            raise MeteringUnavailableError("usage spool is closed")
        with self._queue.cond:
            if self._queue.closing:
                raise MeteringUnavailableError("usage spool is closed")
            self._queue.items.extend(items)
            self._queue.cond.notify()

    def _segment_path(self, seq: int) -> Path:
        return self._dir / f"{seq:016d}.seg"

    def _note_error(self, message: str) -> None:
        with self._lock:
            self._available = False
            self._last_error = message

    def _keep_in_tail(self, batch: list[_Item], seq: int, start: int) -> None:
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

    def _commit(self, batch: list[_Item]) -> str | None:
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


# ---------------------------------------------------------------------- read-only inspection


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
