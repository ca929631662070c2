"""What every ``citybrain`` command group shares; it imports none of them.

- the consoles (``console`` for results, ``err`` for messages and prompts);
- the global options (``--database-url``, ``--data-dir``), carried in Typer's context
  (``ctx.obj``) rather than in a module global, so one invocation never leaks into the next;
- ``settings(ctx)``: the one ``Settings`` of a command, its flags over the environment;
- ``run_in_transaction``: a function run in one transaction on the command's database, with
  domain and database errors turned into a clear message and exit status 1. A command makes one
  engine, on first use, and disposes of it when it ends;
- ``operator_principal``: the operator, as whom administrative commands act;
- ``fail`` and ``redact``.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from marketplace.config import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from marketplace.context import Principal

T = TypeVar("T")

# The global options, also taken by ``serve`` (which may be started on its own).
DatabaseUrl = Annotated[str | None, typer.Option(help="Database URL (env CITYBRAIN_DATABASE_URL)")]
DataDir = Annotated[Path | None, typer.Option(help="Data directory (env CITYBRAIN_DATA_DIR)")]

console = Console()
err = Console(stderr=True)
# The actor the audit log records for what an operator does from the shell.
CLI_ACTOR = "cli"
# Where a command keeps its engines (by database URL) in the context's ``meta``.
_ENGINES = "marketplace.cli.engines"


@dataclass(frozen=True)
class GlobalOptions:
    """The options given before the command (``citybrain --database-url ... keys list``)."""

    overrides: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def given(cls, **options: Any) -> GlobalOptions:
        """The options the operator gave; an empty or absent one leaves the environment's."""
        return cls({name: value for name, value in options.items() if value})


def settings(ctx: typer.Context, **overrides: Any) -> Settings:
    """The command's settings: the global options and then ``overrides`` over the environment.

    An empty or absent override (``None``, ``""``, ``0``) leaves the setting as it was.
    """
    given = ctx.obj.overrides if isinstance(ctx.obj, GlobalOptions) else {}
    return Settings(**{**given, **GlobalOptions.given(**overrides).overrides})


def fail(message: str, hint: str | None = None) -> NoReturn:
    """Print ``error: message`` (and a hint) on stderr and exit 1."""
    err.print(f"[red]error:[/red] {message}")
    if hint:
        err.print(f"hint: {hint}")
    raise typer.Exit(1)


def redact(url: str) -> str:
    """A database URL fit to print: its password hidden."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _engine(ctx: typer.Context, database_url: str) -> Engine:
    from marketplace.db import make_engine

    engines: dict[str, Engine] | None = ctx.meta.get(_ENGINES)
    if engines is None:
        engines = ctx.meta[_ENGINES] = {}
        ctx.call_on_close(functools.partial(dispose_engines, ctx))
    if database_url not in engines:
        engines[database_url] = make_engine(database_url)
    return engines[database_url]


def dispose_engines(ctx: typer.Context) -> None:
    """Close the command's database connections (done when it ends; safe to call again)."""
    engines: dict[str, Engine] = ctx.meta.pop(_ENGINES, {})
    for engine in engines.values():
        engine.dispose()


def run_in_transaction(
    ctx: typer.Context, fn: Callable[[Session], T], cfg: Settings | None = None
) -> T:
    """Run fn(session) in one transaction; domain errors become a clear message and exit 1.

    The database is ``cfg``'s, or the command's settings' when it is not given.
    """
    from marketplace.db import make_session_factory, transaction
    from marketplace.errors import CityBrainError

    database_url = (cfg if cfg is not None else settings(ctx)).database_url
    try:
        with transaction(make_session_factory(_engine(ctx, database_url))) as session:
            return fn(session)
    except CityBrainError as e:
        fail(e.message)
    except Exception as e:
        from sqlalchemy.exc import OperationalError, ProgrammingError

        if isinstance(e, OperationalError | ProgrammingError):
            fail(f"database error: {e.orig}", "run `citybrain db upgrade` first")
        raise


def operator_principal(session: Session) -> Principal:
    """The platform operator, as whom the shell's administrative commands act (audited as
    ``cli``)."""
    from sqlalchemy import select

    from marketplace.constants import ALL_SCOPES, TenantKind
    from marketplace.context import Principal
    from marketplace.errors import NotFoundError
    from marketplace.tables import Tenant

    op = session.scalar(
        select(Tenant).where(Tenant.kind == TenantKind.OPERATOR.value).order_by(Tenant.id)
    )
    if op is None:
        raise NotFoundError("no operator tenant: seed or create one first")
    return Principal(
        tenant_id=op.id,
        tenant_slug=op.slug,
        tenant_kind=op.kind,
        scopes=frozenset(ALL_SCOPES),
        actor=CLI_ACTOR,
    )


WORKER_SPOOL_RE = re.compile(r"^worker-(\d+)$")


def worker_spool(base: Path, k: int) -> Path:
    """The usage spool of ``serve --workers N``'s worker ``k`` under the configured one."""
    return base / f"worker-{k}"


def worker_spools(base: Path) -> list[Path]:
    """The worker spool directories under ``base``, by number (``serve`` and ``usage``)."""
    try:
        names = os.listdir(base)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = sorted((int(m.group(1)), name) for name in names if (m := WORKER_SPOOL_RE.match(name)))
    return [base / name for _, name in found if (base / name).is_dir()]
