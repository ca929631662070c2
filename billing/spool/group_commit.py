"""Group commit: how concurrent appends share one write and one fsync, and who commits them.

The events appended while the previous group was being written are written with one ``pwrite``
and made durable with one fsync (:meth:`~billing.spool.segments._SegmentLog._commit`), then all
their callers wake. Appends from an event loop are grouped on the loop itself: the first append
leads a group and yields once, so every call already ready on the loop joins it. Who then
commits depends on what else the loop has to do, which the caller says
(``append(..., others_in_flight=n)``, counted by the gateway):

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

One group is committed at a time, under the spool's commit lock: by the writer thread, or by
an event loop committing its own group.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
import weakref

from billing.errors import MeteringUnavailableError
from billing.events import UsageEvent
from billing.spool.segments import _SegmentLog

# One logger for the whole spool package, so its records read as they always have.
log = logging.getLogger("billing.spool")

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


def _writer_main(ref: weakref.ReferenceType[_GroupCommit], queue: _WriteQueue) -> None:
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


class _GroupCommit(_SegmentLog):
    """The appends of :class:`~billing.spool.Spool`: gathering groups and handing them out."""

    _commit_lock: threading.Lock
    _loop_groups: dict[asyncio.AbstractEventLoop, _LoopGroup]
    _loop_parked: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Parked]
    _gather_s: float
    _loop_commit_s: float
    _loop_commit_retry_at: float
    _queue: _WriteQueue

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

    def _enqueue(self, *items: _Item) -> None:
        if self._closed:
            raise MeteringUnavailableError("usage spool is closed")
        with self._queue.cond:
            if self._queue.closing:
                raise MeteringUnavailableError("usage spool is closed")
            self._queue.items.extend(items)
            self._queue.cond.notify()
