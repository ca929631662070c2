"""Reading a spool's state from another process: ``inspect_spool``, the flusher's status file,
and ``citybrain usage status`` (all read-only; the owning spool stays open and locked)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

from sqlalchemy import Engine
from typer.testing import CliRunner

from billing.events import UsageEvent
from billing.flusher import STATUS_FILE, Flusher
from billing.spool import Spool, inspect_spool
from marketplace.cli import app as cli
from marketplace.cli.usage import spool_status
from tests.unit.billing.conftest import EventFactory


def _append(spool: Spool, events: list[UsageEvent]) -> None:
    async def go() -> None:
        await asyncio.gather(*(spool.append(e) for e in events))

    asyncio.run(go())


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_a_missing_directory_is_reported_as_such(tmp_path: Path) -> None:
    snap = inspect_spool(tmp_path / "nowhere")
    assert not snap.exists and snap.pending_events == 0 and snap.locked is None


def test_inspect_reads_the_backlog_of_a_locked_spool_without_touching_it(
    spool: Spool, spool_dir: Path, make_event: EventFactory
) -> None:
    events = [make_event() for _ in range(7)]
    _append(spool, events)
    batch = spool.read_pending(3)
    spool.mark_delivered(batch.cursor)
    before = _files(spool_dir)

    snap = inspect_spool(spool_dir)

    assert snap.exists and snap.locked is True  # the open spool holds its lock
    assert snap.pending_events == spool.backlog() == 4
    assert snap.checkpoint == (batch.cursor.segment, batch.cursor.offset)
    assert snap.segments == 1 and snap.corrupt_records == 0
    assert snap.oldest_pending_at == min(e.at for e in events[3:])
    assert _files(spool_dir) == before  # nothing written, truncated or created
    _append(spool, [make_event()])  # the owner still appends and delivers as usual
    assert inspect_spool(spool_dir).pending_events == 5


def test_torn_tails_are_not_counted_and_corrupt_records_are(
    spool_dir: Path, make_event: EventFactory
) -> None:
    with Spool(spool_dir) as spool:
        _append(spool, [make_event() for _ in range(3)])
    (segment,) = sorted(spool_dir.glob("*.seg"))
    lines = segment.read_bytes().splitlines(keepends=True)
    broken = lines[0][:10] + b"X" + lines[0][11:]
    segment.write_bytes(broken + lines[1] + lines[2] + lines[2][:20])  # a torn tail

    snap = inspect_spool(spool_dir)

    assert snap.locked is False  # closed: nobody holds the lock
    assert (snap.pending_events, snap.corrupt_records) == (2, 1)
    assert snap.pending_bytes == segment.stat().st_size


def test_the_flusher_publishes_its_status_next_to_the_spool(
    spool: Spool, spool_dir: Path, engine: Engine, make_event: EventFactory
) -> None:
    flusher = Flusher(engine, spool, interval_s=0.05)
    flusher.start()
    try:
        _append(spool, [make_event() for _ in range(5)])
        deadline = time.monotonic() + 30
        while True:
            # The scan of the spool and the published status are read one after the other:
            # a flush in between shows "delivered 5" beside the scan's earlier backlog.
            state = spool_status(spool_dir)
            if state["delivered"] == 5 and state["backlog"] == 0:
                break
            assert time.monotonic() < deadline, state
            time.sleep(0.02)
    finally:
        flusher.stop()
    assert state["server_running"] is True
    assert state["flush_failures"] == 0 and state["last_error"] is None
    assert state["last_flush_at"] is not None and state["appended"] == 5
    final = json.loads((spool_dir / STATUS_FILE).read_text())
    assert final["flusher_running"] is False and final["delivered"] == 5


def test_a_failing_flush_shows_in_the_status(
    spool: Spool, spool_dir: Path, tmp_path: Path, make_event: EventFactory
) -> None:
    from sqlalchemy import create_engine

    down = create_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'db.sqlite'}")
    flusher = Flusher(down, spool, interval_s=0.05)
    _append(spool, [make_event() for _ in range(2)])
    flusher.start()
    try:
        deadline = time.monotonic() + 30
        while not (state := spool_status(spool_dir))["flush_failures"]:
            assert time.monotonic() < deadline, state
            time.sleep(0.02)
    finally:
        flusher.stop(flush=False)
        down.dispose()
    assert state["backlog"] == 2 and state["delivered"] == 0
    assert "unable to open database file" in state["last_error"]


def test_cli_usage_status_reads_a_running_spool(
    spool: Spool, spool_dir: Path, make_event: EventFactory
) -> None:
    _append(spool, [make_event() for _ in range(3)])
    runner = CliRunner()

    as_json = runner.invoke(cli, ["usage", "status", "--json", "--spool-dir", str(spool_dir)])
    text = runner.invoke(cli, ["usage", "status", "--spool-dir", str(spool_dir)])

    assert as_json.exit_code == 0, as_json.output
    state = json.loads(as_json.output)
    assert state["backlog"] == 3 and state["server_running"] is True
    assert state["last_flush_at"] is None  # no flusher has published yet
    assert text.exit_code == 0, text.output
    assert re.search(r"backlog \(on disk\) +3 events", text.output)
    assert "last flush" in text.output and "never" in text.output


def test_cli_usage_status_uses_the_data_dir_and_says_when_there_is_no_spool(
    tmp_path: Path, make_event: EventFactory
) -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["--data-dir", str(tmp_path / "var"), "usage", "status"])
    assert missing.exit_code == 1 and "no usage spool" in missing.output

    with Spool(tmp_path / "var" / "spool") as spool:
        _append(spool, [make_event()])
    stopped = runner.invoke(cli, ["--data-dir", str(tmp_path / "var"), "usage", "status"])
    assert stopped.exit_code == 0, stopped.output
    assert "not running" in stopped.output
    assert "1 events wait in the spool; the next start delivers them" in stopped.output
