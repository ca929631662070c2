"""Money: ``Decimal`` amounts with a currency, and the platform's one rounding rule.

The rounding rule
-----------------
1. **Rate at full precision.** A charge (quantity × unit price, a tier, an overage) is computed
   with :class:`~decimal.Decimal` at 28 significant digits; nothing is rounded while rating.
2. **Round each document line once, half-up, to 0.01** (:func:`round_line`): 0.005 → 0.01,
   0.0049999 → 0.00, -0.005 → -0.01 (half away from zero, ``ROUND_HALF_UP``).
3. **A document's total is the sum of its rounded lines**, so the lines printed on an invoice
   always add up to its total, to the cent.
4. **Revenue share per line**: the operator's commission is ``round_line(line × rate)``, and the
   publisher's share is ``line − commission``; the two always add up to the line exactly.

Amounts are stored as ``NUMERIC(18, 2)`` (document lines) and unit prices as
``NUMERIC(18, 6)``. The default currency is CNY; one document never mixes currencies.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation, localcontext

from billing.errors import InvalidPlanError

__all__ = [
    "CENT",
    "DEFAULT_CURRENCY",
    "Money",
    "commission_split",
    "format_amount",
    "round_line",
    "to_decimal",
]

DEFAULT_CURRENCY = "CNY"
CENT = Decimal("0.01")
#: The context rating runs in: 28 significant digits, no rounding until round_line().
RATING_CONTEXT = Context(prec=28, rounding=ROUND_HALF_UP)


def to_decimal(value: object, *, what: str = "amount") -> Decimal:
    """Turn a str, int or Decimal into a finite Decimal (floats are refused: 0.1 is not 0.1).

    Raises:
        InvalidPlanError: The value is a float, not a number, or not finite.
    """
    if isinstance(value, bool | float):
        raise InvalidPlanError(f"{what} must be given as a string or integer, not {value!r}")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int | str):
        try:
            result = Decimal(value)
        except InvalidOperation as exc:
            raise InvalidPlanError(f"{what} is not a number: {value!r}") from exc
    else:
        raise InvalidPlanError(f"{what} is not a number: {value!r}")
    if not result.is_finite():
        raise InvalidPlanError(f"{what} must be finite")
    return result


def round_line(amount: Decimal) -> Decimal:
    """Round a line amount half-up (away from zero) to 0.01 — the only rounding in billing."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def commission_split(line_amount: Decimal, rate: Decimal) -> tuple[Decimal, Decimal]:
    """Split a rounded line into (operator commission, publisher share).

    The commission is rounded half-up to 0.01 and the publisher gets the remainder, so the two
    add up to the line exactly.
    """
    with localcontext(RATING_CONTEXT):
        commission = round_line(line_amount * rate)
        return commission, line_amount - commission


def format_amount(amount: Decimal, currency: str = DEFAULT_CURRENCY) -> str:
    """``1234.5`` → ``"1,234.50 CNY"`` (for reports)."""
    return f"{round_line(amount):,.2f} {currency}"


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in a currency. Adding two currencies is an error, never a conversion."""

    amount: Decimal
    currency: str = DEFAULT_CURRENCY

    def __add__(self, other: Money) -> Money:
        if other.currency != self.currency:
            raise InvalidPlanError(f"cannot add {other.currency} to {self.currency}")
        return Money(self.amount + other.amount, self.currency)

    def rounded(self) -> Money:
        """The amount rounded by :func:`round_line`."""
        return Money(round_line(self.amount), self.currency)

    def __str__(self) -> str:
        return format_amount(self.amount, self.currency)
