"""The masked view: what one caller may see of a dataset version, as a SELECT under its query.

Every query, download and export reads the snapshot through this view, so a filter, group-by,
order-by or aggregate on a masked column only ever sees the masked value: filtering a plate
on ``"浙A·12345"`` compares it with ``"浙A·***45"`` and cannot tell whether the plate exists.

Per column, for everyone but the owner (owners and their keys see raw data) and unless the
caller's grant lists the column in ``conditions.unmasked_columns``:

| declared                  | the caller sees                                              |
|---------------------------|--------------------------------------------------------------|
| ``sensitive``             | nothing: the column is absent from the view and its schema   |
| ``geo_point`` (any tier)  | the point snapped to the centre of a grid cell (~500 m)      |
| ``personal``, partial     | plates ``浙A·***45``, phones ``138****5678``, id cards        |
|                           | ``330106********1234``, names ``张**``, addresses, days      |
| ``personal``, pseudonym   | ``p_`` + 16 hex digits of HMAC-SHA256(product key, value)    |

Pseudonyms are keyed per product (the key never leaves the server) and deterministic, so
counts, distinct counts and joins within a product still work. The HMAC is computed in SQL
(two SHA-256 over the key pads, bound as hex parameters), so every engine computes the same
pseudonyms. Engine-neutral: this module builds sqlglot expressions over the table
:data:`SNAPSHOT_TABLE`; engines decide what that table is.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from marketplace.data.schema import ColumnSpec

__all__ = [
    "MASK_KEY_PARAMS",
    "SNAPSHOT_TABLE",
    "VIEW_NAME",
    "MaskedView",
    "ViewColumn",
    "hmac_pads",
    "masked_view",
]

#: The name engines give the snapshot (a Parquet file) in rendered queries.
SNAPSHOT_TABLE = "snapshot"
#: The masked view's name inside a query (a CTE).
VIEW_NAME = "v"
#: The bound parameters that carry the product key's HMAC pads (hex).
MASK_KEY_PARAMS = ("mask_ipad", "mask_opad")

# Default mask of a personal column, by semantic; anything else gets a pseudonym.
_PARTIAL_BY_DEFAULT = frozenset({"plate_number", "phone", "id_card", "person_name"})
_METRES_PER_DEGREE = 111_320.0


def hmac_pads(key: bytes) -> dict[str, str]:
    """HMAC-SHA256's inner and outer key pads of ``key``, as the view's hex parameters."""
    block = (key if len(key) <= 64 else hashlib.sha256(key).digest()).ljust(64, b"\0")
    return {
        MASK_KEY_PARAMS[0]: bytes(b ^ 0x36 for b in block).hex(),
        MASK_KEY_PARAMS[1]: bytes(b ^ 0x5C for b in block).hex(),
    }


@dataclass(frozen=True, slots=True)
class ViewColumn:
    """A column of the view.

    Attributes:
        spec: The declared column (its ``type`` is the stored type).
        type: The type the caller sees (``VARCHAR`` for most masks).
        mask: None (raw), ``partial``, ``pseudonym`` or ``geo_grid``.
    """

    spec: ColumnSpec
    type: str
    mask: str | None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def masked(self) -> bool:
        return self.mask is not None

    def public(self) -> dict[str, Any]:
        """The column as the caller's schema shows it."""
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "semantic": self.spec.semantic,
            "sensitivity": self.spec.sensitivity,
            "description": self.spec.description,
        }
        if self.mask is not None:
            out["masked"] = self.mask
        return out


def _col(name: str) -> exp.Column:
    return exp.column(name, quoted=True)


def _text(value: exp.Expr, source_type: str) -> exp.Expr:
    if source_type == "VARCHAR":
        return value
    return exp.Cast(this=value, to=exp.DataType.build("VARCHAR"))


def _lit(text: str) -> exp.Literal:
    return exp.Literal.string(text)


def _num(value: float | int) -> exp.Expr:
    return exp.Literal.number(value)


def _concat(*parts: exp.Expr) -> exp.Expr:
    out = parts[0]
    for part in parts[1:]:
        out = exp.DPipe(this=out, expression=part, safe=True)
    return out


def _keep_ends(v: exp.Expr, head: int, stars: str, tail: int, min_len: int) -> exp.Expr:
    """``head`` characters, ``stars``, ``tail`` characters; only ``stars`` if shorter than
    ``min_len``; NULL stays NULL."""
    parts: list[exp.Expr] = []
    if head:
        parts.append(exp.Left(this=v, expression=_num(head)))
    parts.append(_lit(stars))
    if tail:
        parts.append(exp.Right(this=v, expression=_num(tail)))
    return exp.Case(
        ifs=[
            exp.If(this=exp.Is(this=v, expression=exp.Null()), true=exp.Null()),
            exp.If(
                this=exp.GTE(this=exp.Length(this=v), expression=_num(min_len)),
                true=_concat(*parts),
            ),
        ],
        default=_lit(stars),
    )


def _partial(spec: ColumnSpec, raw: exp.Expr) -> exp.Expr:
    source = spec.type or "VARCHAR"
    if spec.semantic == "timestamp":
        truncated = exp.TimestampTrunc(this=raw, unit=exp.var("DAY"))
        return exp.Cast(this=truncated, to=exp.DataType.build(source, dialect="duckdb"))
    v = _text(raw, source)
    if spec.semantic == "plate_number":  # 浙A·12345 → 浙A·***45
        return _keep_ends(v, 3, "***", 2, 6)
    if spec.semantic == "phone":  # 13812345678 → 138****5678
        return _keep_ends(v, 3, "****", 4, 8)
    if spec.semantic == "id_card":  # 330106199001011234 → 330106********1234
        return _keep_ends(v, 6, "********", 4, 11)
    if spec.semantic == "person_name":  # 张三丰 → 张**
        return _keep_ends(v, 1, "**", 0, 1)
    return _keep_ends(v, 6, "***", 0, 7)  # addresses: the district, not the door


def _pseudonym(spec: ColumnSpec, raw: exp.Expr) -> exp.Expr:
    message = exp.Encode(this=_text(raw, spec.type or "VARCHAR"), charset=_lit("utf-8"))
    ipad, opad = (exp.Unhex(this=exp.Placeholder(this=name)) for name in MASK_KEY_PARAMS)
    inner = exp.SHA2(this=exp.DPipe(this=ipad, expression=message), length=_num(256))
    outer = exp.SHA2(this=exp.DPipe(this=opad, expression=exp.Unhex(this=inner)), length=_num(256))
    return _concat(_lit("p_"), exp.Left(this=outer, expression=_num(16)))


def _geo_grid(raw: exp.Expr, grid_m: float) -> exp.Expr:
    """'lat,lon' → the centre of its grid cell ('lat,lon', 5 decimals); NULL if malformed."""

    def part(i: int) -> exp.Expr:
        return exp.TryCast(
            this=exp.SplitPart(this=raw, delimiter=_lit(","), part_index=_num(i)),
            to=exp.DataType.build("DOUBLE"),
        )

    def centre(value: exp.Expr, step: exp.Expr) -> exp.Expr:
        step = exp.paren(step, copy=True)
        cell = exp.Floor(this=exp.Div(this=value, expression=step))
        return exp.Mul(
            this=exp.paren(exp.Add(this=cell, expression=_num(0.5))), expression=step.copy()
        )

    dlat = _num(grid_m / _METRES_PER_DEGREE)
    lat = centre(part(1), dlat)
    # Longitude degrees shrink with the cosine of the latitude (of the snapped cell: the same
    # for every point in it).
    dlon = exp.Div(
        this=_num(grid_m / _METRES_PER_DEGREE),
        expression=exp.func("COS", exp.Mul(this=lat.copy(), expression=_num(math.pi / 180.0))),
    )
    lon = centre(part(2), dlon)

    def rounded(value: exp.Expr) -> exp.Expr:
        return exp.Cast(
            this=exp.Round(this=value, decimals=_num(5)), to=exp.DataType.build("VARCHAR")
        )

    return _concat(rounded(lat), _lit(","), rounded(lon))


@dataclass(frozen=True, slots=True)
class MaskedView:
    """The columns one caller sees and the SELECT that computes them from the snapshot."""

    columns: tuple[ViewColumn, ...]
    grid_m: float
    # The product key's HMAC pads as the placeholders' values (empty when no column needs them).
    key_params: dict[str, str]

    def get(self, name: str) -> ViewColumn | None:
        for col in self.columns:
            if col.name == name:
                return col
        return None

    @property
    def needs_key(self) -> bool:
        return any(c.mask == "pseudonym" for c in self.columns)

    def select(self) -> exp.Select:
        """``SELECT <masked columns> FROM snapshot`` (pseudonyms read the key parameters).

        Raises:
            ValueError: A column is pseudonymised and the view has no key.
        """
        if self.needs_key and not self.key_params:
            raise ValueError("a pseudonymised column needs the product's key")
        items: list[exp.Expr] = []
        for col in self.columns:
            raw = _col(col.name)
            if col.mask is None:
                expr: exp.Expr = raw
            elif col.mask == "geo_grid":
                expr = _geo_grid(raw, self.grid_m)
            elif col.mask == "pseudonym":
                expr = _pseudonym(col.spec, raw)
            else:
                expr = _partial(col.spec, raw)
            items.append(exp.alias_(expr, exp.to_identifier(col.name, quoted=True)))
        return exp.select(*items).from_(exp.to_table(SNAPSHOT_TABLE))

    def schema(self) -> list[dict[str, Any]]:
        return [c.public() for c in self.columns]


def _mask_of(spec: ColumnSpec) -> str | None:
    if spec.semantic == "geo_point":
        return "geo_grid"
    if spec.sensitivity != "personal":
        return None
    if spec.mask is not None:
        return spec.mask
    return "partial" if spec.semantic in _PARTIAL_BY_DEFAULT else "pseudonym"


def masked_view(
    columns: Sequence[ColumnSpec],
    *,
    raw: bool,
    unmasked: Collection[str] = (),
    grid_m: float = 500.0,
    key: bytes | None = None,
) -> MaskedView:
    """The view of ``columns`` (with their stored types) for a caller.

    Args:
        columns: The version's columns, ``type`` set.
        raw: The caller owns the product: every column, unmasked.
        unmasked: Columns the caller's grant lifts the mask from (sensitive ones included).
        grid_m: The geo grid's cell size in metres.
        key: The product's pseudonym key (a view without it describes columns but cannot
            be queried when a column is pseudonymised).
    """
    out: list[ViewColumn] = []
    for spec in columns:
        source_type = spec.type or "VARCHAR"
        if raw or spec.name in unmasked:
            out.append(ViewColumn(spec, source_type, None))
            continue
        if spec.sensitivity == "sensitive":
            continue
        mask = _mask_of(spec)
        if mask is None:
            out.append(ViewColumn(spec, source_type, None))
        elif mask == "partial" and spec.semantic == "timestamp":
            out.append(ViewColumn(spec, source_type, mask))
        else:
            out.append(ViewColumn(spec, "VARCHAR", mask))
    needs_key = any(c.mask == "pseudonym" for c in out)
    return MaskedView(tuple(out), grid_m, hmac_pads(key) if needs_key and key else {})
