"""The ``citybrain`` command: its global options, and the groups and commands under it.

This is the only module that imports the command modules; they share ``_common`` and know
nothing of each other or of this front, so a new group is a new module added here.
"""

from __future__ import annotations

import typer

from marketplace.cli import (
    access,
    audit,
    billing,
    datasets,
    db,
    federation,
    keys,
    models,
    server,
    tenants,
    trust,
    usage,
)
from marketplace.cli._common import DatabaseUrl, DataDir, GlobalOptions

app = typer.Typer(
    no_args_is_help=True, help="CityBrain Open Platform", pretty_exceptions_enable=False
)
app.add_typer(keys.app, name="keys")
app.add_typer(db.app, name="db")
app.add_typer(audit.app, name="audit")
app.add_typer(tenants.app, name="tenants")
app.add_typer(models.app, name="models")
models.app.add_typer(trust.app)  # trust, untrust, trusted: merged into `citybrain models`
app.add_typer(datasets.app, name="datasets")
app.add_typer(access.app, name="access")
app.add_typer(billing.app, name="billing")
app.add_typer(usage.app, name="usage")
app.add_typer(federation.app, name="federation")
app.command()(server.seed)
app.command()(server.serve)
app.command()(server.demo)


@app.callback()
def global_options(
    ctx: typer.Context,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    # Every command below reads them back through `_common.settings(ctx)`.
    ctx.obj = GlobalOptions.given(database_url=database_url, data_dir=data_dir)
