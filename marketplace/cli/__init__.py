"""``citybrain``: run the platform and administer it (keys, tenants, audit) from the shell.

Administrative commands work directly against the configured database, as the operator.

One module per command group (``keys``, ``db``, ``audit``, ``tenants``, ``models``,
``access``, ``billing``, ``usage``; ``server`` holds ``seed``, ``serve`` and ``demo``), what
they share in ``_common``, and ``main`` assembling them into ``app``, the console script's
entry point (``citybrain = "marketplace.cli:app"``).
"""

from marketplace.cli.main import app

__all__ = ["app"]
