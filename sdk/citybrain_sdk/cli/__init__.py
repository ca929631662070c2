"""The developer CLI, ``citybrain-dev`` (needs the ``cli`` extra: typer and rich).

:func:`main` is the console script; ``app`` the typer application (tests drive it with
``typer.testing.CliRunner``).
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["main"]


def _app() -> Any:
    try:
        from citybrain_sdk.cli import data  # noqa: F401  (registers query, infer, models, datasets)
        from citybrain_sdk.cli.app import app
    except ImportError as e:
        if e.name in ("typer", "rich", "click"):
            sys.stderr.write(
                "citybrain-dev needs the CLI extra: pip install 'citybrain-sdk[cli]'\n"
            )
            raise SystemExit(1) from None
        raise
    return app


def main() -> None:
    """Run ``citybrain-dev`` with the process's arguments."""
    _app()(prog_name="citybrain-dev")


def __getattr__(name: str) -> Any:
    # ``from citybrain_sdk.cli import app`` works without importing typer for ``main`` alone.
    if name == "app":
        return _app()
    raise AttributeError(name)
