"""Price plans: what a product's usage costs, as pure, validated data.

Four kinds:

``free``
    Usage is itemised at 0.
``per_unit``
    ``unit_price`` per unit (per call, audio-second, row, MB...).
``graduated``
    Tiers ``[(up_to, unit_price), ..., (None, unit_price)]``: the first ``up_to`` units of the
    period at the first price, the next ones at the second, and so on (graduated, not volume:
    each unit is priced by the tier it falls in).
``subscription``
    ``monthly_fee`` per period the subscription is active, ``included_units`` free each period,
    then ``overage_price`` per unit.

``unit`` names what is priced. ``mb`` prices the ``byte`` usage unit per 1,000,000 bytes and
``k-rows`` the ``rows`` unit (data queries and downloads) per 1,000 rows; every other unit
prices usage events of the same unit one to one. Usage of a unit the plan
does not price is not charged.

Usage is priced per consumer tenant per period, so tiers and included units restart every
month. :meth:`PricePlan.usage_charges` prices the *marginal* usage ``[prior, prior + quantity)``,
which is how usage that arrives late is rated on top of what its period already billed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from typing import Any, Literal, cast

from billing.errors import InvalidPlanError
from billing.money import DEFAULT_CURRENCY, RATING_CONTEXT, to_decimal

__all__ = ["PLAN_KINDS", "Charge", "PlanTier", "PricePlan", "usage_unit_of"]

PlanKind = Literal["free", "per_unit", "graduated", "subscription"]
PLAN_KINDS: tuple[PlanKind, ...] = ("free", "per_unit", "graduated", "subscription")
#: Plan units that price a differently named usage unit: plan unit → (usage unit, divisor).
_CONVERTED_UNITS: dict[str, tuple[str, Decimal]] = {
    "mb": ("byte", Decimal(1_000_000)),
    "k-rows": ("rows", Decimal(1_000)),
}
_CURRENCIES = frozenset({"CNY", "USD", "EUR", "HKD"})
_ZERO = Decimal(0)


def usage_unit_of(plan_unit: str) -> tuple[str, Decimal]:
    """The usage-event unit a plan unit prices, and how many usage units make one plan unit."""
    return _CONVERTED_UNITS.get(plan_unit, (plan_unit, Decimal(1)))


@dataclass(frozen=True, slots=True)
class Charge:
    """One priced piece of a period's usage (or a subscription fee), at full precision.

    Attributes:
        kind: ``usage`` or ``fee``.
        description: What the line says, e.g. ``"calls 1-1000 at 0.01"``.
        quantity: Plan units on the line (1 for a fee).
        unit_price: Price per plan unit (the fee itself for a fee).
        amount: ``quantity × unit_price``, not rounded.
    """

    kind: Literal["usage", "fee"]
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class PlanTier:
    """A graduated tier: units up to ``up_to`` (cumulative; None: no limit) at ``unit_price``."""

    up_to: Decimal | None
    unit_price: Decimal


def _num(d: Decimal) -> str:
    """A Decimal as a plain string without exponent or trailing zeros (``1E+1`` → ``10``)."""
    text = format(d.normalize(), "f")
    return text


@dataclass(frozen=True, slots=True)
class PricePlan:
    """A validated price plan; build one with :meth:`from_dict` or the constructor."""

    kind: PlanKind
    unit: str = "call"
    currency: str = DEFAULT_CURRENCY
    unit_price: Decimal = _ZERO
    tiers: tuple[PlanTier, ...] = field(default_factory=tuple)
    monthly_fee: Decimal = _ZERO
    included_units: Decimal = _ZERO
    overage_price: Decimal = _ZERO

    def __post_init__(self) -> None:
        """Check the plan is coherent.

        Raises:
            InvalidPlanError: A field is missing, negative or inconsistent with the kind.
        """
        if self.kind not in PLAN_KINDS:
            raise InvalidPlanError(f"plan kind must be one of {', '.join(PLAN_KINDS)}")
        if (
            not self.unit
            or not self.unit.replace("-", "").isalnum()
            or self.unit != self.unit.lower()
        ):
            raise InvalidPlanError("plan unit must be lowercase, e.g. call, audio-second, row, mb")
        if self.currency not in _CURRENCIES:
            raise InvalidPlanError(f"currency must be one of {', '.join(sorted(_CURRENCIES))}")
        for name in ("unit_price", "monthly_fee", "included_units", "overage_price"):
            if getattr(self, name) < 0:
                raise InvalidPlanError(f"{name} must not be negative")
        if self.kind == "per_unit" and self.unit_price <= 0:
            raise InvalidPlanError("a per_unit plan needs a unit_price above 0 (or use free)")
        if self.kind == "graduated":
            if not self.tiers:
                raise InvalidPlanError("a graduated plan needs at least one tier")
            last: Decimal = _ZERO
            for i, tier in enumerate(self.tiers):
                if tier.unit_price < 0:
                    raise InvalidPlanError(f"tier {i + 1}: unit_price must not be negative")
                if tier.up_to is None:
                    if i != len(self.tiers) - 1:
                        raise InvalidPlanError("only the last tier may be unbounded (up_to null)")
                    continue
                if tier.up_to <= last:
                    raise InvalidPlanError(f"tier {i + 1}: up_to must increase")
                last = tier.up_to
            if self.tiers[-1].up_to is not None:
                raise InvalidPlanError("the last tier must be unbounded (up_to null)")
        if self.kind == "subscription" and self.monthly_fee <= 0 and self.overage_price <= 0:
            raise InvalidPlanError("a subscription plan needs a monthly_fee or an overage_price")

    # ------------------------------------------------------------------ (de)serialisation

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PricePlan:
        """Build a plan from JSON-like data (amounts as strings or integers).

        Raises:
            InvalidPlanError: The data does not describe a valid plan.
        """
        kind = data.get("kind")
        if kind not in PLAN_KINDS:
            raise InvalidPlanError(f"plan kind must be one of {', '.join(PLAN_KINDS)}")
        tiers: list[PlanTier] = []
        raw_tiers = data.get("tiers") or []
        if not isinstance(raw_tiers, Sequence):
            raise InvalidPlanError("tiers must be a list")
        for i, raw in enumerate(raw_tiers):
            if not isinstance(raw, Mapping):
                raise InvalidPlanError(f"tier {i + 1} must be an object")
            up_to = raw.get("up_to")
            tiers.append(
                PlanTier(
                    up_to=None if up_to is None else to_decimal(up_to, what=f"tier {i + 1} up_to"),
                    unit_price=to_decimal(
                        raw.get("unit_price", "0"), what=f"tier {i + 1} unit_price"
                    ),
                )
            )

        def dec(name: str) -> Decimal:
            return to_decimal(data.get(name) if data.get(name) is not None else "0", what=name)

        return cls(
            kind=cast(PlanKind, kind),
            unit=str(data.get("unit") or "call"),
            currency=str(data.get("currency") or DEFAULT_CURRENCY),
            unit_price=dec("unit_price"),
            tiers=tuple(tiers),
            monthly_fee=dec("monthly_fee"),
            included_units=dec("included_units"),
            overage_price=dec("overage_price"),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data with amounts as strings; ``from_dict(to_dict())`` is the same plan."""
        out: dict[str, Any] = {"kind": self.kind, "unit": self.unit, "currency": self.currency}
        if self.kind == "per_unit":
            out["unit_price"] = _num(self.unit_price)
        elif self.kind == "graduated":
            out["tiers"] = [
                {
                    "up_to": None if t.up_to is None else _num(t.up_to),
                    "unit_price": _num(t.unit_price),
                }
                for t in self.tiers
            ]
        elif self.kind == "subscription":
            out["monthly_fee"] = _num(self.monthly_fee)
            out["included_units"] = _num(self.included_units)
            out["overage_price"] = _num(self.overage_price)
        return out

    # ------------------------------------------------------------------ pricing

    @property
    def usage_unit(self) -> str:
        """The usage-event unit this plan prices (``byte`` for an ``mb`` plan)."""
        return usage_unit_of(self.unit)[0]

    def to_plan_units(self, usage_quantity: Decimal) -> Decimal:
        """Usage-event units → plan units (bytes → MB for an ``mb`` plan), at full precision."""
        with localcontext(RATING_CONTEXT):
            return usage_quantity / usage_unit_of(self.unit)[1]

    def fee(self) -> Charge | None:
        """The subscription fee of one period, or None when the plan has none."""
        if self.kind != "subscription" or self.monthly_fee == 0:
            return None
        return Charge("fee", "monthly subscription", Decimal(1), self.monthly_fee, self.monthly_fee)

    def _bands(self) -> list[tuple[Decimal, Decimal | None, Decimal, str]]:
        """(from, to, unit price, label) bands covering [0, ∞)."""
        if self.kind == "free":
            return [(_ZERO, None, _ZERO, "free")]
        if self.kind == "per_unit":
            return [(_ZERO, None, self.unit_price, "")]
        if self.kind == "subscription":
            bands: list[tuple[Decimal, Decimal | None, Decimal, str]] = []
            if self.included_units > 0:
                bands.append((_ZERO, self.included_units, _ZERO, "included"))
            bands.append((self.included_units, None, self.overage_price, "overage"))
            return bands
        out: list[tuple[Decimal, Decimal | None, Decimal, str]] = []
        lo = _ZERO
        for i, tier in enumerate(self.tiers):
            out.append((lo, tier.up_to, tier.unit_price, f"tier {i + 1}"))
            if tier.up_to is not None:
                lo = tier.up_to
        return out

    def usage_charges(self, quantity: Decimal, *, prior: Decimal = _ZERO) -> list[Charge]:
        """Price ``quantity`` plan units used after ``prior`` units already billed this period.

        The lines' quantities add up to ``quantity``; a zero quantity gives no lines.
        """
        if quantity <= 0:
            return []
        charges: list[Charge] = []
        with localcontext(RATING_CONTEXT):
            used_from, used_to = prior, prior + quantity
            for lo, hi, price, label in self._bands():
                a = max(lo, used_from)
                b = used_to if hi is None else min(hi, used_to)
                if b <= a:
                    continue
                portion = b - a
                span = f"{_num(a + 1) if a == a.to_integral() else _num(a)}-{_num(b)}"
                desc = f"{self.unit} {span}" + (f" ({label})" if label else "")
                desc += f" at {_num(price)} {self.currency}"
                charges.append(Charge("usage", desc, portion, price, portion * price))
        return charges
