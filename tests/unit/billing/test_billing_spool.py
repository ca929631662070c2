"""The durable spool: group commit, replay after a crash, torn records, unwritable disks."""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import billing.spool as spool_module
from billing.errors import MeteringUnavailableError, SpoolLockedError
from billing.events import UsageEvent
from billing.metrics import BillingMetrics
from billing.spool import Spool, group_commit, segments

EventFactory = Callable[..., UsageEvent]
REPO_ROOT = Path(__file__).resolve().parents[3]


def _append_all(spool: Spool, events: list[UsageEvent]) -> None:
    async def go() -> None:
        await asyncio.gather(*(spool.append(e) for e in events))

    asyncio.run(go())


def _segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def _drain(spool: Spool) -> list[UsageEvent]:
    """Read everything pending and mark it delivered (as a flusher would after its commit)."""
    out: list[UsageEvent] = []
    while True:
        batch = spool.read_pending(1000)
        spool.mark_delivered(batch.cursor)
        if not batch.events:
            return out
        out.extend(batch.events)


def test_append_then_read_pending_and_deliver(spool: Spool, make_event: EventFactory) -> None:
    events = [make_event() for _ in range(5)]
    _append_all(spool, events)
    assert spool.backlog() == 5

    first = spool.read_pending(100)
    again = spool.read_pending(100)
    assert sorted(e.id for e in first.events) == sorted(e.id for e in events)
    assert again.events == first.events  # reading does not consume
    assert spool.backlog() == 5

    spool.mark_delivered(first.cursor)
    assert spool.backlog() == 0
    assert spool.read_pending(100).events == []
    assert spool.stats().delivered == 5


def test_read_pending_respects_max_events_and_resumes(
    spool: Spool, make_event: EventFactory
) -> None:
    events = [make_event() for _ in range(10)]
    for e in events:  # sequential, so the order on disk is known
        spool.append_sync(e)
    batch = spool.read_pending(4)
    assert [e.id for e in batch.events] == [e.id for e in events[:4]]
    spool.mark_delivered(batch.cursor)
    assert spool.backlog() == 6
    rest = spool.read_pending(100)
    assert [e.id for e in rest.events] == [e.id for e in events[4:]]


def test_concurrent_appends_share_fsyncs(spool_dir: Path, make_event: EventFactory) -> None:
    registry = CollectorRegistry()
    spool = Spool(spool_dir, metrics=BillingMetrics(registry))
    try:
        events = [make_event() for _ in range(1000)]
        _append_all(spool, events)
        stats = spool.stats()
        assert stats.appended == 1000
        assert stats.fsyncs < 1000, "group commit must share fsyncs between concurrent appends"
        groups = registry.get_sample_value("citybrain_billing_fsync_group_size_count")
        grouped = registry.get_sample_value("citybrain_billing_fsync_group_size_sum")
        assert groups == stats.fsyncs
        assert grouped == 1000
        assert registry.get_sample_value("citybrain_billing_events_appended_total") == 1000
        assert registry.get_sample_value("citybrain_billing_spool_backlog_events") == 1000
        assert len({e.id for e in _drain(spool)}) == 1000
        assert registry.get_sample_value("citybrain_billing_spool_backlog_events") == 0
    finally:
        spool.close()


def test_append_sync_from_many_threads(spool: Spool, make_event: EventFactory) -> None:
    events = [make_event() for _ in range(200)]
    threads = [
        threading.Thread(target=lambda part=events[i::8]: [spool.append_sync(e) for e in part])
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(e.id for e in _drain(spool)) == sorted(e.id for e in events)


def test_segments_rotate_by_size_and_delivered_ones_are_deleted(
    spool_dir: Path, make_event: EventFactory
) -> None:
    spool = Spool(spool_dir, segment_max_bytes=2_000)
    try:
        events = [make_event() for _ in range(100)]
        for e in events:
            spool.append_sync(e)
        assert len(_segments(spool_dir)) > 5
        assert [e.id for e in _drain(spool)] == [e.id for e in events]
        assert len(_segments(spool_dir)) <= 1  # only the active segment is left
        assert spool.backlog() == 0
    finally:
        spool.close()


def test_checkpoint_survives_reopen(spool_dir: Path, make_event: EventFactory) -> None:
    events = [make_event() for _ in range(20)]
    with Spool(spool_dir, segment_max_bytes=1_500) as spool:
        for e in events:
            spool.append_sync(e)
        batch = spool.read_pending(8)
        spool.mark_delivered(batch.cursor)
    with Spool(spool_dir) as reopened:
        assert reopened.backlog() == 12
        assert reopened.stats().replayed == 12
        assert [e.id for e in _drain(reopened)] == [e.id for e in events[8:]]


def test_dropped_without_close_replays_everything(
    spool_dir: Path, make_event: EventFactory
) -> None:
    events = [make_event() for _ in range(50)]
    spool = Spool(spool_dir)
    _append_all(spool, events)
    batch = spool.read_pending(10)
    spool.mark_delivered(batch.cursor)
    del spool  # no close(): what a crash leaves behind
    gc.collect()

    with Spool(spool_dir) as reopened:
        assert reopened.backlog() == 40
        replayed = _drain(reopened)
    assert sorted(e.id for e in replayed) == sorted(e.id for e in events if e not in batch.events)
    assert {e.id for e in replayed}.isdisjoint({e.id for e in batch.events})


def test_killed_process_loses_no_acknowledged_event(spool_dir: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, os, sys
        from datetime import UTC, datetime
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from billing.events import UsageEvent
        from billing.spool import Spool

        async def main():
            spool = Spool({str(spool_dir)!r}, segment_max_bytes=4096)
            async def one(i):
                await spool.append(UsageEvent(
                    id=f"crash-{{i}}", tenant_id=1, key_id=None, product="a.b", product_id=1,
                    version=1, unit="call", quantity=1, at=datetime.now(UTC), latency_ms=1.0,
                    request_id=f"r{{i}}"))
                print(f"acked crash-{{i}}", flush=True)
            await asyncio.gather(*(one(i) for i in range(300)))
            os._exit(0)  # die without close(): no flush, no cleanup

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    acked = {line.split()[1] for line in done.stdout.splitlines() if line.startswith("acked ")}
    assert len(acked) == 300
    with Spool(spool_dir) as reopened:
        assert {e.id for e in _drain(reopened)} == acked


def test_torn_final_record_is_skipped_and_truncated(
    spool_dir: Path, make_event: EventFactory
) -> None:
    events = [make_event() for _ in range(5)]
    with Spool(spool_dir) as spool:
        for e in events:
            spool.append_sync(e)
    last = _segments(spool_dir)[-1]
    good_size = last.stat().st_size
    with last.open("ab") as f:  # a crash in the middle of writing the next record
        f.write(make_event().to_record()[:40])

    with Spool(spool_dir) as reopened:
        assert last.stat().st_size == good_size
        assert reopened.stats().corrupt_records == 1
        later = make_event()
        reopened.append_sync(later)
        assert [e.id for e in _drain(reopened)] == [e.id for e in [*events, later]]


def test_corrupt_record_in_the_middle_is_skipped(spool_dir: Path, make_event: EventFactory) -> None:
    events = [make_event() for _ in range(3)]
    with Spool(spool_dir) as spool:
        for e in events:
            spool.append_sync(e)
    segment = _segments(spool_dir)[-1]
    data = bytearray(segment.read_bytes())
    second = data.index(events[1].id.encode())
    data[second] = ord("X")  # bit rot inside the second record
    segment.write_bytes(bytes(data))

    with Spool(spool_dir) as reopened:
        assert [e.id for e in _drain(reopened)] == [events[0].id, events[2].id]
        assert reopened.stats().corrupt_records >= 1


def test_second_spool_on_the_same_directory_is_refused(spool: Spool, spool_dir: Path) -> None:
    with pytest.raises(SpoolLockedError) as info:
        Spool(spool_dir)
    assert info.value.status == 503


def test_append_after_close_is_refused(spool_dir: Path, make_event: EventFactory) -> None:
    spool = Spool(spool_dir)
    spool.close()
    with pytest.raises(MeteringUnavailableError):
        spool.append_sync(make_event())
    with pytest.raises(MeteringUnavailableError):
        _append_all(spool, [make_event()])


def test_unwritable_directory_fails_appends_then_recovers(
    tmp_path: Path, make_event: EventFactory
) -> None:
    # A regular file where a parent directory should be: fails for root too (ENOTDIR).
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("in the way")
    registry = CollectorRegistry()
    spool = Spool(blocker / "spool", metrics=BillingMetrics(registry))
    try:
        with pytest.raises(MeteringUnavailableError) as info:
            _append_all(spool, [make_event(), make_event()])
        err = info.value
        assert err.status == 503
        assert err.code == "MeteringUnavailable"
        assert err.headers["Retry-After"].isdigit()
        assert "Not a directory" in err.message
        stats = spool.stats()
        assert (stats.appended, stats.append_failures, stats.backlog) == (0, 2, 0)
        assert not stats.available
        assert registry.get_sample_value("citybrain_billing_append_failures_total") == 2
        assert not spool.seen_recently(7, "anything")

        blocker.unlink()  # the operator frees the path; the spool retries on the next append
        event = make_event()
        spool.append_sync(event)
        assert spool.stats().available
        assert [e.id for e in _drain(spool)] == [event.id]
    finally:
        spool.close()


def test_spool_directory_replaced_by_a_file(spool_dir: Path, make_event: EventFactory) -> None:
    spool = Spool(spool_dir, segment_max_bytes=1)  # every group needs a new segment
    try:
        before = make_event()
        spool.append_sync(before)
        moved = spool_dir.with_name("moved")
        spool_dir.rename(moved)
        spool_dir.write_text("not a directory any more")
        refused = make_event()
        with pytest.raises(MeteringUnavailableError):
            spool.append_sync(refused)
        assert not spool.seen_recently(refused.tenant_id, refused.id)

        spool_dir.unlink()
        moved.rename(spool_dir)
        after = make_event()
        spool.append_sync(after)
        assert [e.id for e in _drain(spool)] == [before.id, after.id]
    finally:
        spool.close()


def test_partial_write_is_taken_back(
    spool_dir: Path, make_event: EventFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write_all = segments._write_all
    spool = Spool(spool_dir)
    try:
        ok = [make_event() for _ in range(3)]
        for e in ok:
            spool.append_sync(e)

        def disk_full(fd: int, data: bytes, offset: int) -> None:
            real_write_all(fd, data[: len(data) // 2], offset)  # half lands, then ENOSPC
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(segments, "_write_all", disk_full)
        lost = make_event()
        with pytest.raises(MeteringUnavailableError, match="No space left"):
            spool.append_sync(lost)
        monkeypatch.setattr(segments, "_write_all", real_write_all)

        later = make_event()
        spool.append_sync(later)
        assert spool.backlog() == 4
        assert spool.stats().append_failures == 1
    finally:
        spool.close()
    with Spool(spool_dir) as reopened:
        assert reopened.stats().corrupt_records == 0
        assert [e.id for e in _drain(reopened)] == [e.id for e in [*ok, later]]


def test_failed_fsync_fails_the_group_and_is_not_delivered(
    spool_dir: Path, make_event: EventFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_sync = segments._sync_file
    calls = {"n": 0}

    def flaky_sync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_sync(fd)

    spool = Spool(spool_dir)
    try:
        monkeypatch.setattr(segments, "_sync_file", flaky_sync)
        failed = make_event()
        with pytest.raises(MeteringUnavailableError, match="Input/output error"):
            spool.append_sync(failed)
        assert spool.backlog() == 0
        assert spool.read_pending(10).events == []
        kept = make_event()
        spool.append_sync(kept)
        assert [e.id for e in _drain(spool)] == [kept.id]
    finally:
        spool.close()


def test_seen_recently_only_after_durable(spool: Spool, make_event: EventFactory) -> None:
    event = make_event(at=datetime.now(UTC) - timedelta(minutes=5))
    assert not spool.seen_recently(event.tenant_id, event.id, window_s=10**9)
    spool.append_sync(event)
    assert spool.seen_recently(event.tenant_id, event.id, window_s=10**9)
    assert not spool.seen_recently(event.tenant_id + 1, event.id, window_s=10**9)
    assert not spool.seen_recently(event.tenant_id, event.id, window_s=60.0)  # `at` is older


def test_mark_delivered_refuses_a_cursor_past_the_end(
    spool: Spool, make_event: EventFactory
) -> None:
    spool.append_sync(make_event())
    cursor = spool.read_pending(10).cursor
    bogus = spool_module.SpoolCursor(cursor.segment, cursor.offset + 10_000, cursor.ordinal)
    with pytest.raises(ValueError, match="past"):
        spool.mark_delivered(bogus)
    assert spool.backlog() == 1


# ------------------------------------------------------------------ preallocated segments


def test_the_active_segment_is_preallocated_and_sealed_to_its_records(
    spool_dir: Path, make_event: EventFactory
) -> None:
    events = [make_event() for _ in range(5)]
    records = b"".join(e.to_record() for e in events)
    with Spool(spool_dir) as spool:
        for e in events:
            spool.append_sync(e)
        (segment,) = _segments(spool_dir)
        data = segment.read_bytes()
        assert len(data) > len(records)  # zero-filled ahead of the records
        assert data[: len(records)] == records and data[len(records) :].count(0) == len(data) - len(
            records
        )
        assert spool_module.inspect_spool(spool_dir).pending_bytes == len(records)
    assert segment.read_bytes() == records  # closed: cut to its records


def test_a_crash_leaves_a_preallocated_tail_that_replay_cuts_without_calling_it_corrupt(
    spool_dir: Path, tmp_path: Path, make_event: EventFactory
) -> None:
    events = [make_event() for _ in range(4)]
    crashed = tmp_path / "crashed"
    with Spool(spool_dir) as spool:
        for e in events:
            spool.append_sync(e)
        crashed.mkdir()  # the directory as a crash leaves it: the writer never sealed it
        for path in spool_dir.iterdir():
            if path.name != "LOCK":
                (crashed / path.name).write_bytes(path.read_bytes())
    (segment,) = _segments(crashed)
    assert segment.stat().st_size > sum(len(e.to_record()) for e in events)
    with Spool(crashed) as reopened:
        assert reopened.stats().corrupt_records == 0
        assert segment.stat().st_size == sum(len(e.to_record()) for e in events)
        assert [e.id for e in _drain(reopened)] == [e.id for e in events]


def test_a_torn_record_before_the_preallocated_zeros_is_corrupt(
    spool_dir: Path, tmp_path: Path, make_event: EventFactory
) -> None:
    events = [make_event() for _ in range(2)]
    good = sum(len(e.to_record()) for e in events)
    with Spool(spool_dir) as spool:
        for e in events:
            spool.append_sync(e)
        (segment,) = _segments(spool_dir)
        data = bytearray(segment.read_bytes())
    data[good : good + 30] = make_event().to_record()[:30]  # torn mid-write, zeros after it
    segment.write_bytes(bytes(data))
    with Spool(spool_dir) as reopened:
        assert reopened.stats().corrupt_records == 1
        assert segment.stat().st_size == good
        assert [e.id for e in _drain(reopened)] == [e.id for e in events]


def test_no_room_to_preallocate_still_appends_the_records(
    spool_dir: Path, make_event: EventFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = segments._write_all

    def write_but_no_room_for_zeros(fd: int, data: bytes, offset: int) -> None:
        if len(data) > 1000 and data.count(0) == len(data):
            real_write(fd, data[:100], offset)  # part of it lands, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(fd, data, offset)

    monkeypatch.setattr(segments, "_write_all", write_but_no_room_for_zeros)
    events = [make_event() for _ in range(3)]
    with Spool(spool_dir) as spool:
        for e in events:
            spool.append_sync(e)  # each succeeds, appended without preallocation
        (segment,) = _segments(spool_dir)
        assert segment.read_bytes() == b"".join(e.to_record() for e in events)
        assert [e.id for e in _drain(spool)] == [e.id for e in events]


# ------------------------------------------------------------------ commits on the event loop


def _record_sync_threads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    synced_on: list[int] = []
    real_sync = segments._sync_file

    def recording_sync(fd: int) -> None:
        synced_on.append(threading.get_ident())
        real_sync(fd)

    monkeypatch.setattr(segments, "_sync_file", recording_sync)
    return synced_on


def test_appends_of_one_loop_iteration_share_one_commit_on_the_loop(
    spool: Spool, make_event: EventFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced_on = _record_sync_threads(monkeypatch)
    events = [make_event() for _ in range(10)]

    async def scenario() -> int:
        await asyncio.gather(*(spool.append(e) for e in events))
        return threading.get_ident()

    before = spool.stats().fsyncs
    loop_thread = asyncio.run(scenario())
    assert spool.stats().fsyncs - before == 1
    assert set(synced_on) == {loop_thread}  # the group's fsync (and the preallocation's)
    assert all(spool.seen_recently(e.tenant_id, e.id, window_s=10**9) for e in events)
    assert [e.id for e in _drain(spool)] == [e.id for e in events]


def test_a_call_with_others_in_flight_is_fsynced_off_the_loop_which_keeps_serving(
    spool: Spool, make_event: EventFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(spool.append(make_event()))  # the segment exists and is preallocated
    released, loop_ran = threading.Event(), threading.Event()
    synced_on: list[int] = []
    real_sync = segments._sync_file

    def gated_sync(fd: int) -> None:
        synced_on.append(threading.get_ident())
        # On the loop this would wait in vain: only the loop sets `released`.
        if not released.wait(10):
            loop_ran.set()  # mark the failure without hanging the test
        real_sync(fd)

    monkeypatch.setattr(segments, "_sync_file", gated_sync)
    event = make_event()

    async def scenario() -> int:
        append = asyncio.ensure_future(spool.append(event, others_in_flight=1))
        while not synced_on:  # the writer is inside the fsync; the loop goes on meanwhile
            await asyncio.sleep(0.001)
        assert not append.done()
        released.set()
        await asyncio.wait_for(append, 10)
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())
    assert not loop_ran.is_set()
    assert synced_on == [synced_on[0]] and synced_on[0] != loop_thread
    assert spool.seen_recently(event.tenant_id, event.id, window_s=10**9)


_TURNS_APART = 5


def _record_groups(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the size of every group a loop hands to the writer thread.

    (The writer may write two such groups with one fsync, if the second was queued before it
    woke: what the loop gathered is what these tests are about.)
    """
    sizes: list[int] = []
    real_enqueue = spool._enqueue

    def recording_enqueue(*items: group_commit._Item) -> None:
        sizes.append(len(items))
        real_enqueue(*items)

    monkeypatch.setattr(spool, "_enqueue", recording_enqueue)
    return sizes


def test_under_load_a_group_gathers_until_few_calls_in_flight_are_left_being_served(
    spool: Spool, make_event: EventFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A window long enough, and no look at the loop's work: only the group's completion can end
    # the gather within the test.
    monkeypatch.setattr(spool, "_gather_s", 60.0)
    monkeypatch.setattr(group_commit, "_GATHER_BUSY", 0.0)
    sizes = _record_groups(spool, monkeypatch)
    in_flight = group_commit._GATHER_SIBLINGS + 3
    events = [make_event() for _ in range(in_flight)]

    async def call(i: int) -> None:
        # The calls reach the meter a few loop turns apart (a woken leader resumes in two).
        for _ in range(_TURNS_APART * i):
            await asyncio.sleep(0)
        await spool.append(events[i], others_in_flight=in_flight - 1)

    async def scenario() -> None:
        calls = asyncio.gather(*(call(i) for i in range(in_flight)))
        # The writer holds each group until all have appended: how fast it is (a disk on tmpfs
        # is quick) must not decide whether a later group counts the earlier ones as parked.
        for _ in range(_TURNS_APART * (in_flight + 2)):
            await asyncio.sleep(0)
        spool._commit_lock.release()
        await asyncio.wait_for(calls, 30)

    spool._commit_lock.acquire()
    asyncio.run(scenario())
    # The first group is committed as soon as no more than _GATHER_SIBLINGS calls in flight are
    # still being served (they keep the loop busy during its fsync), not when the last joins.
    assert sizes[0] == in_flight - group_commit._GATHER_SIBLINGS
    assert sum(sizes) == in_flight
    assert [e.id for e in _drain(spool)] == [e.id for e in events]


def test_calls_waiting_for_the_writers_fsync_are_not_waited_for(
    spool: Spool, make_event: EventFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool, "_gather_s", 60.0)  # only completion ends a gather
    monkeypatch.setattr(group_commit, "_GATHER_BUSY", 0.0)
    sizes = _record_groups(spool, monkeypatch)
    first, second = 6, 4
    in_flight = first + second
    events = [make_event() for _ in range(in_flight)]
    spool._commit_lock.acquire()  # the writer thread takes the first group, then waits

    async def call(i: int) -> None:
        for _ in range(_TURNS_APART * i):
            await asyncio.sleep(0)
        await spool.append(events[i], others_in_flight=in_flight - 1)

    async def scenario() -> None:
        calls = asyncio.gather(*(call(i) for i in range(in_flight)))
        # Once the first group went to the writer, its 6 callers wait for its fsync: of the 10
        # in flight only the 4 later ones are being served, so none of them waits to gather
        # (counting the 6 as still to come, they would wait out the 60 s window).
        for _ in range(_TURNS_APART * (in_flight + 2)):
            await asyncio.sleep(0)
        spool._commit_lock.release()
        await asyncio.wait_for(calls, 30)

    asyncio.run(scenario())
    assert sizes[0] == first and sum(sizes) == in_flight
    assert [e.id for e in _drain(spool)] == [e.id for e in events]


def test_a_wait_of_zero_gathers_nothing_even_under_load(
    tmp_path: Path, make_event: EventFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path / "no-wait", group_commit_wait_s=0.0)
    sizes = _record_groups(spool, monkeypatch)
    in_flight = group_commit._GATHER_SIBLINGS + 10
    events = [make_event() for _ in range(5)]

    async def call(i: int) -> None:
        for _ in range(_TURNS_APART * i):
            await asyncio.sleep(0)
        await spool.append(events[i], others_in_flight=in_flight - 1)

    async def scenario() -> None:
        await asyncio.wait_for(asyncio.gather(*(call(i) for i in range(len(events)))), 30)

    try:
        asyncio.run(scenario())
        assert sizes == [1] * len(events)  # each handed to the writer as it came
        assert [e.id for e in _drain(spool)] == [e.id for e in events]
    finally:
        spool.close()


@pytest.mark.parametrize("wait_s", [-0.001, 1.5, float("nan")])
def test_a_group_commit_wait_out_of_range_is_refused(tmp_path: Path, wait_s: float) -> None:
    with pytest.raises(ValueError, match="group_commit_wait_s"):
        Spool(tmp_path / "spool", group_commit_wait_s=wait_s)
    assert not (tmp_path / "spool").exists()  # refused before anything was created


def _append_alone_under_load(spool: Spool, event: UsageEvent) -> None:
    """Append ``event`` while others are in flight that never append (they fail, or are slow)."""
    asyncio.run(
        asyncio.wait_for(
            spool.append(event, others_in_flight=group_commit._GATHER_SIBLINGS + 10), 30
        )
    )


def test_under_load_a_group_that_nobody_joins_is_committed_when_its_window_ends(
    spool: Spool, make_event: EventFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool, "_gather_s", 0.01)
    monkeypatch.setattr(group_commit, "_GATHER_BUSY", 0.0)  # only the window can end it
    event = make_event()
    _append_alone_under_load(spool, event)
    assert [e.id for e in _drain(spool)] == [event.id]


def test_under_load_a_group_is_committed_once_its_loop_is_idle_not_when_the_window_ends(
    spool: Spool, make_event: EventFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The others in flight are slow calls (a remote model, say) that reach the meter much
    # later, and the loop has nothing else to do: waiting out the window (60 s here) for them
    # would only delay this call.
    monkeypatch.setattr(spool, "_gather_s", 60.0)
    event = make_event()
    _append_alone_under_load(spool, event)
    assert [e.id for e in _drain(spool)] == [event.id]


def test_a_busy_loop_keeps_the_group_gathering(
    spool: Spool, make_event: EventFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool, "_gather_s", 60.0)
    # Busy means on a CPU at all between two checks: each interval holds a 2 ms burn, so even a
    # VM that stalls this thread for a while cannot make one look idle.
    monkeypatch.setattr(group_commit, "_GATHER_BUSY", 1e-6)
    sizes = _record_groups(spool, monkeypatch)
    events = [make_event() for _ in range(4)]
    in_flight = len(events) + group_commit._GATHER_SIBLINGS  # complete once all have joined
    joined = 0

    def burn(seconds: float) -> None:
        until = time.thread_time() + seconds
        while time.thread_time() < until:
            pass

    async def busy_loop() -> None:
        while joined < len(events):  # other calls' work: the loop is never idle
            burn(0.001)
            await asyncio.sleep(0)

    async def call(i: int) -> None:
        nonlocal joined
        for _ in range(5 * i):  # each reaches the meter five loop turns of work after the last
            burn(0.002)
            await asyncio.sleep(0)
        joined += 1
        await spool.append(events[i], others_in_flight=in_flight - 1)

    async def scenario() -> None:
        calls = [asyncio.ensure_future(call(i)) for i in range(len(events))]
        await asyncio.wait_for(asyncio.gather(busy_loop(), *calls), 30)

    asyncio.run(scenario())
    assert sizes == [len(events)]  # one group, gathered over many checks, never cut short
    assert [e.id for e in _drain(spool)] == [e.id for e in events]


def test_few_calls_in_flight_do_not_wait_to_gather(
    spool: Spool, make_event: EventFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool, "_gather_s", 60.0)  # waiting at all would hang the test
    first, second = make_event(), make_event()

    async def scenario() -> None:
        await asyncio.wait_for(
            spool.append(first, others_in_flight=group_commit._GATHER_SIBLINGS - 1), 30
        )
        await asyncio.wait_for(spool.append(second, others_in_flight=1), 30)

    asyncio.run(scenario())
    assert [e.id for e in _drain(spool)] == [first.id, second.id]


def test_a_group_whose_leader_is_cancelled_is_still_committed(
    spool: Spool, make_event: EventFactory
) -> None:
    leading, joining = make_event(), make_event()

    async def scenario() -> list[BaseException | None]:
        leader = asyncio.ensure_future(spool.append(leading))
        follower = asyncio.ensure_future(spool.append(joining))
        await asyncio.sleep(0)  # the leader yields with its group; the follower joins it
        leader.cancel()
        return await asyncio.wait_for(
            asyncio.gather(leader, follower, return_exceptions=True), timeout=10
        )

    leader_result, follower_result = asyncio.run(scenario())
    assert isinstance(leader_result, asyncio.CancelledError)
    assert follower_result is None  # not stranded
    assert spool.stats().fsyncs == 1
    assert [e.id for e in _drain(spool)] == [leading.id, joining.id]


def test_close_from_another_thread_waits_for_the_loop_commit_it_would_cut(
    spool_dir: Path, make_event: EventFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(spool_dir)
    first, second = make_event(), make_event()
    asyncio.run(spool.append(first))  # the segment exists and is preallocated
    syncing, closer_started = threading.Event(), threading.Event()
    real_sync = segments._sync_file

    def slow_sync(fd: int) -> None:
        syncing.set()
        closer_started.wait(10)
        time.sleep(0.2)  # the closer is now inside close(), racing this commit
        real_sync(fd)

    def closer() -> None:
        syncing.wait(10)
        closer_started.set()
        spool.close()

    monkeypatch.setattr(segments, "_sync_file", slow_sync)
    thread = threading.Thread(target=closer)
    thread.start()
    asyncio.run(spool.append(second))  # confirmed: it must survive the close
    thread.join(10)
    monkeypatch.undo()
    reopened = Spool(spool_dir)
    try:
        assert [e.id for e in _drain(reopened)] == [first.id, second.id]
    finally:
        reopened.close()


def test_a_group_that_finds_the_spool_closed_fails_every_member(
    spool: Spool, make_event: EventFactory
) -> None:
    events = [make_event() for _ in range(3)]

    async def scenario() -> list[BaseException | None]:
        return await asyncio.wait_for(
            asyncio.gather(*(spool.append(e) for e in events), return_exceptions=True), 10
        )

    # The writer holds the commit while the spool is closed under it: the group cannot be
    # committed on the loop, nor queued.
    assert spool._commit_lock.acquire(timeout=10)
    try:
        spool._closed = True
        results = asyncio.run(scenario())
    finally:
        spool._commit_lock.release()
        spool._closed = False
    assert all(isinstance(r, MeteringUnavailableError) for r in results), results


def test_a_loop_commit_waits_its_turn_while_the_writer_is_busy(
    spool: Spool, make_event: EventFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, writing = threading.Event(), threading.Event()
    real_sync = segments._sync_file

    def slow_sync(fd: int) -> None:
        if threading.current_thread() is not threading.main_thread():
            writing.set()
            gate.wait(10)
        real_sync(fd)

    monkeypatch.setattr(segments, "_sync_file", slow_sync)
    first, second = make_event(), make_event()

    async def scenario() -> None:
        # A thread without a loop appends through the writer thread, which holds the commit.
        queued = asyncio.ensure_future(asyncio.to_thread(spool.append_sync, first, 10))
        await asyncio.to_thread(writing.wait, 10)
        on_loop = asyncio.ensure_future(spool.append(second))
        await asyncio.sleep(0.05)
        assert not on_loop.done()  # not written around the writer: queued behind it
        gate.set()
        await asyncio.gather(queued, on_loop)

    asyncio.run(scenario())
    assert [e.id for e in _drain(spool)] == [first.id, second.id]


def test_a_slow_disk_sends_the_groups_to_the_writer_thread(
    spool: Spool, make_event: EventFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced_on = _record_sync_threads(monkeypatch)
    monkeypatch.setattr(group_commit, "_LOOP_COMMIT_MAX_S", 0.0)  # every commit is too slow

    async def scenario() -> int:
        await spool.append(make_event())  # on the loop: measured, found slow
        await spool.append(make_event())  # then through the writer thread
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())
    assert synced_on[-2] == loop_thread != synced_on[-1]
    assert len(_drain(spool)) == 2


def test_a_failed_loop_commit_fails_every_call_of_the_group_and_records_nothing(
    spool: Spool, make_event: EventFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_sync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(segments, "_sync_file", failing_sync)
    events = [make_event(), make_event()]

    async def scenario() -> list[BaseException | None]:
        return await asyncio.gather(*(spool.append(e) for e in events), return_exceptions=True)

    results = asyncio.run(scenario())
    assert all(isinstance(r, MeteringUnavailableError) for r in results), results
    assert "Input/output error" in str(results[0])
    assert not any(spool.seen_recently(e.tenant_id, e.id, window_s=10**9) for e in events)
    monkeypatch.undo()
    assert spool.read_pending(10).events == []


# ------------------------------------------------------------------ the in-memory tail


def _append_all(spool: Spool, events: list[UsageEvent]) -> None:
    async def go() -> None:
        for i in range(0, len(events), 7):  # several groups
            await asyncio.gather(*(spool.append(e) for e in events[i : i + 7]))

    asyncio.run(go())


def test_pending_events_come_from_memory_exactly_as_the_segments_hold_them(
    spool_dir: Path, make_event: EventFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = [make_event() for _ in range(40)]
    spool = Spool(spool_dir, segment_max_bytes=2000)  # several segments
    try:
        _append_all(spool, events)
        read_from_disk = []
        real_read = spool_module.Spool._iter_records

        def spying(self: Spool, fd: int, pos: int, end: int) -> object:
            read_from_disk.append((pos, end))
            return real_read(self, fd, pos, end)

        monkeypatch.setattr(spool_module.Spool, "_iter_records", spying)
        first = spool.read_pending(15)
        assert read_from_disk == []  # served from memory
        assert [e.id for e in first.events] == [e.id for e in events[:15]]
        spool.mark_delivered(first.cursor)
    finally:
        spool.close()
    # A new instance reads the segments from that checkpoint: the same cursor, the rest.
    reopened = Spool(spool_dir)
    try:
        assert [e.id for e in _drain(reopened)] == [e.id for e in events[15:]]
    finally:
        reopened.close()


def test_a_backlog_past_the_memory_cap_is_read_from_the_segments(
    spool: Spool, make_event: EventFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segments, "_TAIL_MAX_EVENTS", 10)
    events = [make_event() for _ in range(30)]
    _append_all(spool, events)
    assert [e.id for e in _drain(spool)] == [e.id for e in events]
    # Drained: the next events are kept in memory again, and delivered once.
    more = [make_event() for _ in range(5)]
    _append_all(spool, more)
    assert [e.id for e in _drain(spool)] == [e.id for e in more]
    assert spool.stats().delivered == 35
