"""The developer CLI, ``citybrain-dev`` (needs the ``cli`` extra: typer and rich).

:func:`main` is the console script; :func:`get_app` the typer application with every command
(tests drive it with ``typer.testing.CliRunner``).
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["get_app", "main"]


def get_app() -> Any:
    """The typer application, every command registered (needs typer and rich).

    Example:
        >>> CliRunner().invoke(get_app(), ["search", "air", "--json"]).stdout
    """
    try:
        from citybrain_sdk.cli import data  # noqa: F401  (registers query, infer, models, datasets)
        from citybrain_sdk.cli.app import app
    except ImportError as e:
        if (e.name or "").split(".")[0] in ("typer", "rich", "click"):
            sys.stderr.write(
                "citybrain-dev needs the CLI extra: pip install 'citybrain-sdk[cli]'\n"
            )
            raise SystemExit(1) from None
        raise
    return app


def main() -> None:
    """Run ``citybrain-dev`` with the process's arguments (the console script).

    Example:
        $ citybrain-dev search air --domain environment
    """
    get_app()(prog_name="citybrain-dev")
