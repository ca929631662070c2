"""How the developer CLI speaks: rich tables for people, ``--json`` for scripts, progress bars
for transfers, and errors that say what to do next.

Results go to stdout; errors and progress to stderr, so ``--json`` output pipes cleanly.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from citybrain_sdk.errors import (
    APIError,
    CityBrainError,
    ConnectionFailed,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    QuotaExceeded,
    Unauthorized,
    Unavailable,
    ValidationError,
)
from citybrain_sdk.types import Progress as ProgressCallback

__all__ = [
    "err",
    "handled",
    "out",
    "print_json",
    "table",
    "to_jsonable",
    "transfer",
]

out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_API_ERROR = 1
EXIT_UNREACHABLE = 2


def to_jsonable(value: Any) -> Any:
    """A result as plain JSON values (dataclasses, dates and decimals included).

    Example:
        >>> to_jsonable(cb.me())
        {'tenant': {'slug': 'parkeasy', …}, 'key_id': '…', 'scopes': [...]}
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def print_json(value: Any) -> None:
    """Print a result as indented JSON on stdout (plain text: no markup, no wrapping).

    Example:
        >>> print_json(cb.keys.list())
    """
    typer.echo(json.dumps(to_jsonable(value), ensure_ascii=False, indent=2))


def _cell(value: Any) -> Text:
    # Text, not a markup string: a description's "[rows, minutes]" is data, not a style.
    if value is None:
        return Text("-")
    if isinstance(value, datetime):
        return Text(value.strftime("%Y-%m-%d %H:%M"))
    if isinstance(value, (list, tuple)):
        return Text(", ".join(str(v) for v in value))
    return Text(str(value))


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a rich table (``-`` for empty cells).

    Example:
        >>> table("Keys", ["id", "status"], [("k1", "active")])
    """
    t = Table(title=Text(title) if title else None, title_justify="left", show_lines=False)
    for name in columns:
        t.add_column(name, overflow="fold")
    for row in rows:
        t.add_row(*(_cell(v) for v in row))
    out.print(t)


@contextmanager
def transfer(description: str) -> Iterator[ProgressCallback]:
    """A progress bar on stderr, and the callback that moves it (``(done, total)``).

    Example:
        >>> with transfer("uploading model.pt") as progress:
        ...     cb.models.push(handle, "model.pt", manifest, progress=progress)
    """
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )
    task = bar.add_task(description, total=None)

    def update(done: int, total: int | None) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield update


def _hint(error: CityBrainError, handle: str | None, url: str) -> str | None:
    """The next command to run after an error, when there is an obvious one."""
    what = handle or "<handle>"
    if isinstance(error, ConnectionFailed):
        return (
            f"is the platform running at {url}? Point the CLI elsewhere with "
            "`citybrain-dev login --url <url>` or --url"
        )
    if isinstance(error, Unauthorized):
        return "sign in: run `citybrain-dev login --api-key <key>` (or set CITYBRAIN_DEV_API_KEY)"
    if isinstance(error, Forbidden):
        message = error.server_message
        if "grant" in message:
            return (
                f"no grant for {what}: run "
                f'`citybrain-dev request-access {what} --purpose "<why you need it>"`'
            )
        if "scope" in message:
            return (
                "this key lacks that scope: create one that has it with "
                "`citybrain-dev keys create --scopes <scopes>`, then `citybrain-dev login` with it"
            )
        return None
    no_route = isinstance(error, NotFound) and error.server_message.startswith("no route")
    if no_route or isinstance(error, MethodNotAllowed):
        return (
            "this platform does not offer that yet (an older release): ask its operator, "
            "or use the commands it does offer (`citybrain-dev --help`)"
        )
    if isinstance(error, NotFound):
        if handle:
            return (
                f"no product {handle} that you may see: find handles with "
                "`citybrain-dev search <words>`"
            )
        return None
    if isinstance(error, QuotaExceeded):
        wait = f" in {error.retry_after:g} s" if error.retry_after is not None else " later"
        return f"over a quota: try again{wait}, or ask the product's owner for a larger quota"
    if isinstance(error, Unavailable):
        return "the platform cannot serve this right now (nothing was billed): retry shortly"
    if isinstance(error, ValidationError):
        return "fix the value the message names and run the command again"
    return None


@contextmanager
def handled(*, handle: str | None = None, url: str = "") -> Iterator[None]:
    """Turn the SDK's errors into a message, a hint and an exit status (1 for an answer of the
    platform, 2 when it could not be reached).

    Example:
        >>> with handled(handle="city-management.manhole-covers", url=cb.base_url):
        ...     cb.datasets.query("city-management.manhole-covers")
    """
    try:
        yield
    except CityBrainError as e:
        if isinstance(e, APIError):
            err.print(f"[bold red]error:[/] {escape(e.server_message)}")
            if e.request_id:
                err.print(f"  request id: {e.request_id} ({e.status} {e.code})", markup=False)
        else:
            err.print(f"[bold red]error:[/] {escape(str(e))}")
        hint = _hint(e, handle, url)
        if hint:
            err.print(f"  next: {hint}", markup=False)
        code = EXIT_UNREACHABLE if isinstance(e, ConnectionFailed) else EXIT_API_ERROR
        raise typer.Exit(code) from None
    except (ValueError, OSError) as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}")
        raise typer.Exit(EXIT_API_ERROR) from None
