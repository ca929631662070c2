"""``citybrain-dev``: the developer CLI, over HTTP through the SDK (the operator's database
commands are the server's ``citybrain``; nothing here touches a database).

This module holds the top-level app, the global options, sign-in and the catalog, access, key,
usage and invoice commands; :mod:`citybrain_sdk.cli.data` adds ``query``, ``infer``,
``models`` and ``datasets``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

import typer

from citybrain_sdk.cli import config
from citybrain_sdk.cli.output import err, handled, out, print_json, table, transfer
from citybrain_sdk.client import Client
from citybrain_sdk.types import DocumentDetail, Product, Progress, SearchResult

T = TypeVar("T")

app = typer.Typer(
    name="citybrain-dev",
    help="The CityBrain Open Platform for developers: search, query, infer, publish, over HTTP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
access_app = typer.Typer(help="Access requests and grants.", no_args_is_help=True)
keys_app = typer.Typer(help="Your tenant's API keys (lists them when run alone).")
invoices_app = typer.Typer(help="Invoices and statements (lists invoices when run alone).")
app.add_typer(access_app, name="access")
app.add_typer(keys_app, name="keys")
app.add_typer(invoices_app, name="invoices")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@dataclass
class State:
    """The global options, resolved against the config file when a client is needed."""

    profile: str | None = None
    url: str | None = None
    api_key: str | None = None
    token: str | None = None

    def settings(self) -> config.Profile:
        return config.resolve(
            profile=self.profile, url=self.url, api_key=self.api_key, token=self.token
        )

    def client(self) -> Client:
        p = self.settings()
        return Client(p.url, api_key=p.api_key, token=p.token)


def state(ctx: typer.Context) -> State:
    """The global options of this run."""
    obj = ctx.find_root().obj
    if not isinstance(obj, State):
        obj = State()
        ctx.find_root().obj = obj
    return obj


def ask(ctx: typer.Context, fn: Callable[[Client], T], *, handle: str | None = None) -> T:
    """``fn``'s answer, asked with this run's client: the SDK's errors become a message, a hint
    (about ``handle`` when given) and an exit status."""
    with state(ctx).client() as cb, handled(handle=handle, url=cb.base_url):
        return fn(cb)


def move(ctx: typer.Context, label: str, fn: Callable[[Client, Progress], T], *, handle: str) -> T:
    """:func:`ask` for an upload or a download: ``fn`` gets a progress bar's callback too."""
    with (
        state(ctx).client() as cb,
        handled(handle=handle, url=cb.base_url),
        transfer(label) as progress,
    ):
        return fn(cb, progress)


def reply(result: T, as_json: bool, show: Callable[[T], object]) -> None:
    """Print ``result`` as JSON for scripts (``--json``), else as ``show`` renders it."""
    if as_json:
        print_json(result)
    else:
        show(result)


@app.callback()
def main_options(
    ctx: typer.Context,
    url: Annotated[
        str | None, typer.Option("--url", help="Platform URL (else the profile's).")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="API key (else the profile's).")
    ] = None,
    profile: Annotated[
        str | None, typer.Option("--profile", help="Config profile (default: 'default').")
    ] = None,
) -> None:
    """Options for every command; credentials come from `citybrain-dev login` otherwise."""
    ctx.obj = State(profile=profile, url=url, api_key=api_key)


# --------------------------------------------------------------------------- sign-in


@app.command()
def login(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option("--url", help="Platform URL.")] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="API key (prompted for when omitted).")
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="An OIDC access token instead of a key.")
    ] = None,
    profile: Annotated[str | None, typer.Option("--profile", help="Profile to store.")] = None,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Check the credential first.")
    ] = True,
) -> None:
    """Store a URL and an API key (or token) in the config file (mode 0600)."""
    st = state(ctx)
    name = profile or st.profile or "default"
    stored = config.load_profiles().get(name, {})
    base = url or st.url or stored.get("url") or config.DEFAULT_URL
    secret_key = api_key or st.api_key
    if not secret_key and not token:
        secret_key = typer.prompt("API key", hide_input=True)
    p = config.Profile(name, base, api_key=None if token else secret_key, token=token)
    if verify:
        with handled(url=base), Client(base, api_key=p.api_key, token=p.token) as cb:
            me = cb.me()
        err.print(f"signed in to {base} as tenant {me.tenant.slug} ({', '.join(me.scopes)})")
    with handled(url=base):
        path = config.save_profile(p)
    err.print(f"saved profile '{name}' to {path}")


@app.command()
def logout(
    ctx: typer.Context,
    profile: Annotated[str | None, typer.Option("--profile", help="Profile to forget.")] = None,
) -> None:
    """Forget a stored profile and its credential."""
    name = profile or state(ctx).profile or "default"
    if config.remove_profile(name):
        err.print(f"forgot profile '{name}'")
    else:
        err.print(f"no profile '{name}' in {config.config_path()}")


@app.command()
def whoami(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The tenant and scopes of the credential in use."""
    me, url = ask(ctx, lambda cb: (cb.me(), cb.base_url))
    reply(
        me,
        as_json,
        lambda me: table(
            None,
            ["tenant", "name", "kind", "key", "scopes", "url"],
            [(me.tenant.slug, me.tenant.name, me.tenant.kind, me.key_id, me.scopes, url)],
        ),
    )


# --------------------------------------------------------------------------- catalog


@app.command()
def search(
    ctx: typer.Context,
    q: Annotated[str | None, typer.Argument(help="Words to search for.")] = None,
    kind: Annotated[str | None, typer.Option(help="dataset or model.")] = None,
    domain: Annotated[str | None, typer.Option(help="e.g. traffic, environment.")] = None,
    tier: Annotated[str | None, typer.Option(help="public, restricted, confidential…")] = None,
    owner: Annotated[str | None, typer.Option(help="Owning tenant's slug.")] = None,
    tag: Annotated[str | None, typer.Option(help="A tag.")] = None,
    page: Annotated[int, typer.Option(min=1)] = 1,
    per_page: Annotated[int, typer.Option("--per-page", min=1, max=100)] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Search the catalog, with facet counts."""
    filters = {"kind": kind, "domain": domain, "tier": tier, "owner": owner, "tag": tag}
    hits = ask(ctx, lambda cb: cb.catalog.search(q, page=page, per_page=per_page, **filters))
    reply(hits, as_json, _show_hits)


def _show_hits(hits: SearchResult) -> None:
    table(
        f"{hits.count} found (page {hits.page})",
        ["handle", "kind", "tier", "domain", "state", "title"],
        [(p.handle, p.kind, p.tier, p.domain, p.state, p.title) for p in hits],
    )
    for facet, counts in hits.facets.items():
        listed = ", ".join(f"{value} {n}" for value, n in sorted(counts.items()))
        out.print(f"{facet}: {listed}", markup=False)


@app.command()
def show(
    ctx: typer.Context,
    handle: Annotated[str, typer.Argument(help="<tenant-slug>.<product-name>")],
    as_json: JsonOpt = False,
) -> None:
    """A product's listing and its versions."""
    product, versions = ask(
        ctx, lambda cb: (cb.catalog.get(handle), cb.catalog.versions(handle)), handle=handle
    )
    if as_json:
        print_json({"product": product, "versions": versions})
        return
    table(
        product.handle,
        ["field", "value"],
        [
            ("title", product.title),
            ("kind", product.kind),
            ("owner", product.owner),
            ("tier", product.tier),
            ("domain", product.domain),
            ("state", product.state),
            ("tags", product.tags),
            ("license", product.license or None),
            ("description", product.description),
        ],
    )
    table(
        "versions",
        ["version", "created", "digest / rows", "notes"],
        [(v.version, v.created_at, v.artifact_digest or v.rows, v.notes) for v in versions],
    )


@app.command()
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The product's name: its handle is <you>.<name>.")],
    kind: Annotated[str, typer.Option(help="dataset or model.")],
    title: Annotated[str, typer.Option(help="A short title.")],
    domain: Annotated[str, typer.Option(help="e.g. traffic, tourism.")],
    tier: Annotated[str, typer.Option(help="public, restricted, confidential, secret.")] = "public",
    description: Annotated[str, typer.Option(help="What it is.")] = "",
    tags: Annotated[str | None, typer.Option(help="Comma-separated.")] = None,
    license_: Annotated[str, typer.Option("--license", help="e.g. CC-BY-4.0.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Register a product (a draft); then push a version and publish (or submit) it."""
    fields = {"kind": kind, "title": title, "domain": domain, "tier": tier}
    tag_list = [t.strip() for t in (tags or "").split(",") if t.strip()]
    product = ask(
        ctx,
        lambda cb: cb.catalog.create(
            name, description=description, tags=tag_list, license=license_, **fields
        ),
    )
    reply(product, as_json, _show_created)


def _show_created(product: Product) -> None:
    out.print(f"created {product.handle} ({product.kind}, {product.tier}, draft)", markup=False)
    step = "publish" if product.tier in ("public", "secret") else "submit"
    err.print(
        f"next: push a version (`citybrain-dev {product.kind}s push {product.handle} …`), then "
        f"`citybrain-dev {step} {product.handle}`"
    )


@app.command()
def publish(
    ctx: typer.Context, handle: Annotated[str, typer.Argument(help="Your product.")]
) -> None:
    """Publish a public (or secret) product of yours."""
    _show_state(ask(ctx, lambda cb: cb.catalog.publish(handle), handle=handle))


@app.command()
def submit(
    ctx: typer.Context, handle: Annotated[str, typer.Argument(help="Your product.")]
) -> None:
    """Send a restricted or confidential product to the operator's review."""
    _show_state(ask(ctx, lambda cb: cb.catalog.submit(handle), handle=handle))


def _show_state(product: Product) -> None:
    out.print(f"{product.handle}: {product.state}", markup=False)


# --------------------------------------------------------------------------- access


@app.command("request-access")
def request_access(
    ctx: typer.Context,
    handle: Annotated[str, typer.Argument(help="The product to use.")],
    purpose: Annotated[str, typer.Option(help="Why you need it (the decider reads this).")],
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="infer or data:read (default: what the product needs)."),
    ] = None,
    days: Annotated[int, typer.Option(min=1, max=366, help="Grant duration.")] = 90,
    as_json: JsonOpt = False,
) -> None:
    """Ask for access to a restricted or confidential product."""
    req = ask(
        ctx,
        lambda cb: cb.access.request(handle, purpose, scopes=scope or None, duration_days=days),
        handle=handle,
    )
    reply(
        req,
        as_json,
        lambda req: out.print(
            f"requested {', '.join(req.scopes)} on {req.product} ({req.tier}): {req.state}, "
            f"id {req.id}",
            markup=False,
        ),
    )


@access_app.command("list")
def access_list(
    ctx: typer.Context,
    state_: Annotated[str | None, typer.Option("--state", help="pending, approved…")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Your requests and those you decide."""
    rows = ask(ctx, lambda cb: cb.access.list(state=state_))
    reply(
        rows,
        as_json,
        lambda rows: table(
            "access requests",
            ["id", "product", "from", "scopes", "state", "purpose", "reason"],
            [(r.id, r.product, r.tenant, r.scopes, r.state, r.purpose, r.reason) for r in rows],
        ),
    )


@access_app.command("approve")
def access_approve(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Recorded with the decision.")],
    as_json: JsonOpt = False,
) -> None:
    """Approve a request (you own the restricted product, or are the operator)."""
    req = ask(ctx, lambda cb: cb.access.approve(request_id, reason))
    reply(
        req,
        as_json,
        lambda req: out.print(f"approved {req.id}: grant {req.grant_id}", markup=False),
    )


@access_app.command("reject")
def access_reject(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="The requester reads it.")],
    as_json: JsonOpt = False,
) -> None:
    """Reject a request, with a reason."""
    req = ask(ctx, lambda cb: cb.access.reject(request_id, reason))
    reply(req, as_json, lambda req: out.print(f"rejected {req.id}", markup=False))


@access_app.command("grants")
def access_grants(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Grants you hold or have given."""
    reply(
        ask(ctx, lambda cb: cb.access.grants()),
        as_json,
        lambda grants: table(
            "grants",
            ["id", "product", "tenant", "scopes", "status", "expires"],
            [(g.id, g.product, g.tenant, g.scopes, g.status, g.expires_at) for g in grants],
        ),
    )


@access_app.command("revoke")
def access_revoke(ctx: typer.Context, grant_id: Annotated[str, typer.Argument()]) -> None:
    """Revoke a grant now."""
    grant = ask(ctx, lambda cb: cb.access.revoke(grant_id))
    out.print(f"revoked grant {grant.id} on {grant.product}", markup=False)


# --------------------------------------------------------------------------- keys


@keys_app.callback(invoke_without_command=True)
def keys_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Your tenant's API keys (prefixes only)."""
    if ctx.invoked_subcommand is not None:
        return
    reply(
        ask(ctx, lambda cb: cb.keys.list()),
        as_json,
        lambda keys: table(
            "API keys",
            ["id", "prefix", "name", "scopes", "status", "expires", "last used"],
            [
                (k.id, k.prefix, k.name, k.scopes, k.status, k.expires_at, k.last_used_at)
                for k in keys
            ],
        ),
    )


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    scopes: Annotated[str, typer.Option(help="Comma-separated, e.g. catalog:read,infer.")],
    name: Annotated[str, typer.Option(help="A label.")] = "",
    expires_in: Annotated[
        str | None, typer.Option("--expires-in", help="e.g. 30d, 12h, 2w.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a key; its secret is printed this once."""
    issued = ask(ctx, lambda cb: cb.keys.create(scopes, name=name, expires_in=expires_in))
    reply(issued, as_json, lambda issued: typer.echo(issued.token))
    if not as_json:
        err.print(f"key {issued.key.id} ({', '.join(issued.key.scopes)}): store the secret now")


@keys_app.command("rotate")
def keys_rotate(
    ctx: typer.Context, key_id: Annotated[str, typer.Argument()], as_json: JsonOpt = False
) -> None:
    """New secret for a key (the old one works for the grace period)."""
    reply(ask(ctx, lambda cb: cb.keys.rotate(key_id)), as_json, lambda i: typer.echo(i.token))


@keys_app.command("revoke")
def keys_revoke(ctx: typer.Context, key_id: Annotated[str, typer.Argument()]) -> None:
    """Revoke a key now."""
    key = ask(ctx, lambda cb: cb.keys.revoke(key_id))
    out.print(f"revoked {key.id} ({key.prefix})", markup=False)


# --------------------------------------------------------------------------- usage, invoices


@app.command()
def usage(
    ctx: typer.Context,
    start: Annotated[str | None, typer.Option("--from", help="YYYY-MM-DD.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="YYYY-MM-DD (inclusive).")] = None,
    product: Annotated[str | None, typer.Option(help="One product's handle.")] = None,
    group_by: Annotated[str, typer.Option("--group-by", help="day or product.")] = "day",
    as_json: JsonOpt = False,
) -> None:
    """Metered usage per product (and day)."""
    rows = ask(
        ctx,
        lambda cb: cb.usage.list(start=start, end=end, product=product, group_by=group_by),
        handle=product,
    )
    reply(
        rows,
        as_json,
        lambda rows: table(
            "usage",
            ["product", "day", "events", "quantity", "unit"],
            [(r.product, r.day, r.events, r.quantity, r.unit) for r in rows],
        ),
    )


@invoices_app.callback(invoke_without_command=True)
def invoices_list(
    ctx: typer.Context,
    period: Annotated[str | None, typer.Option(help="A month, e.g. 2026-11.")] = None,
    statements: Annotated[
        bool, typer.Option("--statements", help="Chargeback statements instead.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Your invoices (or statements), newest period first."""
    if ctx.invoked_subcommand is not None:
        return
    page = ask(
        ctx, lambda cb: (cb.invoices.statements if statements else cb.invoices.list)(period=period)
    )
    reply(
        page,
        as_json,
        lambda page: table(
            f"{'statements' if statements else 'invoices'}: {page.count}",
            ["id", "number", "period", "status", "total", "currency", "issued"],
            [(d.id, d.number, d.period, d.status, d.total, d.currency, d.issued_at) for d in page],
        ),
    )


@invoices_app.command("show")
def invoices_show(
    ctx: typer.Context,
    doc_id: Annotated[int, typer.Argument(help="The invoice's (or statement's) id.")],
    statement: Annotated[bool, typer.Option("--statement", help="A statement.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """One invoice or statement with its lines."""
    detail = ask(ctx, lambda cb: (cb.invoices.statement if statement else cb.invoices.get)(doc_id))
    reply(detail, as_json, _show_detail)


def _show_detail(detail: DocumentDetail) -> None:
    doc = detail.document
    table(
        f"{doc.number} · {doc.period} · {doc.status} · {doc.total} {doc.currency}",
        ["product", "description", "quantity", "unit", "unit price", "amount"],
        [
            (ln.product, ln.description, ln.quantity, ln.unit, ln.unit_price, ln.amount)
            for ln in detail.lines
        ],
    )
