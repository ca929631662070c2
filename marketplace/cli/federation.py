"""``citybrain federation``: a district hub's harvest of the city's catalog and push of its own.

Both read ``CITYBRAIN_FEDERATION__CITY_URL`` and ``CITYBRAIN_FEDERATION__HUB_KEY`` (or the
options below) and this hub's database (docs/federation.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn

from marketplace.cli._common import console, fail, run_in_transaction, settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.orm import Session

    from marketplace.federation.client import CityClient

app = typer.Typer(no_args_is_help=True, help="District hub federation with the city platform")

CityUrl = Annotated[
    str | None, typer.Option(help="The city's URL (CITYBRAIN_FEDERATION__CITY_URL)")
]
HubKey = Annotated[
    str | None,
    typer.Option(help="The city's key for this hub (CITYBRAIN_FEDERATION__HUB_KEY)", envvar=None),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the report as JSON")]


def _exchange(
    ctx: typer.Context,
    city_url: str | None,
    hub_key: str | None,
    as_json: bool,
    doing: str,
    work: Callable[[Session, CityClient], Any],
) -> Any:
    """Run ``work`` against the city in one transaction of this hub's database (a run that
    fails leaves it as it was), under a spinner saying ``doing`` ("{url}": the city's URL);
    print its report and return it."""
    from pydantic import SecretStr

    from marketplace.federation.client import CityClient

    cfg = settings(ctx)
    fed = cfg.federation.model_copy()
    if city_url:
        fed.city_url = city_url
    if hub_key:
        fed.hub_key = SecretStr(hub_key)
    if not fed.joined:
        fail(
            "this platform is not joined to a city",
            "set CITYBRAIN_FEDERATION__CITY_URL and CITYBRAIN_FEDERATION__HUB_KEY",
        )
    with (
        CityClient(fed) as city,
        Progress(
            SpinnerColumn(), TextColumn("{task.description}"), console=console, transient=True
        ) as progress,
    ):
        progress.add_task(doing.format(url=city.url))
        report = run_in_transaction(ctx, lambda s: work(s, city), cfg)
    _print(asdict(report), as_json)
    return report


def _print(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(report))
        return
    for key, value in report.items():
        if isinstance(value, list):
            console.print(f"{key}: {len(value)}" + (f"  ({', '.join(value)})" if value else ""))
        elif isinstance(value, dict):
            for handle, message in value.items():
                console.print(f"[red]{key}[/red] {handle}: {message}")
        else:
            console.print(f"{key}: {value}")


@app.command()
def pull(
    ctx: typer.Context, city_url: CityUrl = None, hub_key: HubKey = None, as_json: AsJson = False
) -> None:
    """Harvest the city's catalog into this hub (incremental; a second run changes nothing)."""
    from marketplace.federation.pull import harvest_once

    _exchange(ctx, city_url, hub_key, as_json, "harvesting the catalog of {url}", harvest_once)


@app.command()
def push(
    ctx: typer.Context, city_url: CityUrl = None, hub_key: HubKey = None, as_json: AsJson = False
) -> None:
    """Publish this hub's own listings to the city under the hub's tenant there."""
    from marketplace.federation.push import push as push_listings

    report = _exchange(ctx, city_url, hub_key, as_json, "publishing to {url}", push_listings)
    if report.refused:
        raise typer.Exit(1)
