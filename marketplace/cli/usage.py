"""``citybrain usage``: the state of a server's usage spool, read from its data directory.

The running server locks its spool directory, so this never opens the spool: it reads the files
read-only (the checkpoint and the segments after it, for the backlog on disk) and the status the
server's flusher publishes next to them (``status.json``: last flush, last error, deliveries,
failures). It works while the server runs, and after it stopped or crashed (then the backlog on
disk is what the next start replays).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from marketplace.cli._common import fail, settings

app = typer.Typer(no_args_is_help=True, help="Usage metering: the local spool's state.")


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def spool_status(spool_dir: Path) -> dict[str, Any]:
    """The spool's state as one JSON-ready dict (what ``citybrain usage status --json`` prints).

    Keys: ``spool_dir``, ``exists``, ``server_running``, ``server_pid``, ``backlog`` (pending
    events on disk), ``pending_bytes``, ``oldest_pending_at``, ``corrupt_records``,
    ``segments``, ``checkpoint``; and from the server's last published status (None if it never
    published one): ``status_updated_at``, ``last_flush_at``, ``last_error``, ``delivered``,
    ``duplicates``, ``flush_failures``, ``appended``, ``append_failures``, ``spool_available``,
    ``spool_error``, ``server_backlog``.
    """
    from billing.flusher import STATUS_FILE
    from billing.spool import inspect_spool

    snap = inspect_spool(spool_dir)
    published: dict[str, Any] = {}
    try:
        published = json.loads((spool_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        published = {}
    pid = published.get("pid")
    running = snap.locked if snap.locked is not None else _pid_alive(pid)
    return {
        "spool_dir": str(spool_dir),
        "exists": snap.exists,
        "server_running": bool(running),
        "server_pid": pid if running else None,
        "backlog": snap.pending_events,
        "pending_bytes": snap.pending_bytes,
        "oldest_pending_at": snap.oldest_pending_at.isoformat() if snap.oldest_pending_at else None,
        "corrupt_records": snap.corrupt_records,
        "segments": snap.segments,
        "checkpoint": list(snap.checkpoint) if snap.checkpoint else None,
        "status_updated_at": published.get("updated_at"),
        "last_flush_at": published.get("last_flush_at"),
        "last_error": published.get("last_error"),
        "delivered": published.get("delivered"),
        "duplicates": published.get("duplicates"),
        "flush_failures": published.get("flush_failures"),
        "appended": published.get("appended"),
        "append_failures": published.get("append_failures"),
        "spool_available": published.get("spool_available"),
        "spool_error": published.get("spool_error"),
        "server_backlog": published.get("backlog"),
    }


def _ago(iso: str | None) -> str:
    if not iso:
        return "never"
    try:
        at = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    seconds = (datetime.now(UTC) - at).total_seconds()
    return f"{iso} ({seconds:.1f} s ago)"


def _show(value: object) -> str:
    return "-" if value is None else str(value)


@app.command("status")
def status(
    ctx: typer.Context,
    spool_dir: Annotated[
        Path | None,
        typer.Option(help="The spool directory (default: the configured one, <data-dir>/spool)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
) -> None:
    """Show the usage spool: backlog, last flush, last error, deliveries and failures."""
    if spool_dir is None:
        spool_dir = settings(ctx).billing.spool_dir
    assert spool_dir is not None
    state = spool_status(spool_dir)
    if not state["exists"]:
        fail(
            f"no usage spool at {spool_dir}",
            "pass the server's --data-dir (or CITYBRAIN_BILLING__SPOOL_DIR / --spool-dir)",
        )
    if as_json:
        print(json.dumps(state, indent=2))
        return
    server = f"running (pid {state['server_pid']})" if state["server_running"] else "not running"
    rows = [
        ("spool dir", state["spool_dir"]),
        ("server", server),
        ("backlog (on disk)", f"{state['backlog']} events, {state['pending_bytes']} bytes"),
        ("oldest pending", _show(state["oldest_pending_at"])),
        ("last flush", _ago(state["last_flush_at"])),
        ("last error", _show(state["last_error"])),
        ("delivered", _show(state["delivered"])),
        ("duplicates ignored", _show(state["duplicates"])),
        ("flush failures", _show(state["flush_failures"])),
        ("appended", _show(state["appended"])),
        ("append failures", _show(state["append_failures"])),
        ("spool writable", _show(state["spool_available"])),
        ("spool error", _show(state["spool_error"])),
        ("corrupt records", str(state["corrupt_records"])),
        ("status published", _ago(state["status_updated_at"])),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    if not state["server_running"] and state["backlog"]:
        print(f"note: {state['backlog']} events wait in the spool; the next start delivers them")
