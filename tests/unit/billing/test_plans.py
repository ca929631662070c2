"""Money rounding (billing/money.py's documented rule) and pricing by every plan kind."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from billing.errors import InvalidPlanError
from billing.money import Money, commission_split, round_line, to_decimal
from billing.plans import PricePlan


@pytest.mark.parametrize(
    ("raw", "rounded"),
    [
        ("0.005", "0.01"),  # half goes up
        ("0.0049999", "0.00"),
        ("2.675", "2.68"),  # the float trap: 2.675 is 2.67499... as a float, not as a Decimal
        ("1.995", "2.00"),
        ("-0.005", "-0.01"),  # half away from zero
        ("3.7020", "3.70"),
        ("0", "0.00"),
    ],
)
def test_lines_round_half_up_to_the_cent(raw: str, rounded: str) -> None:
    assert round_line(D(raw)) == D(rounded)
    assert str(round_line(D(raw))) == rounded


@pytest.mark.parametrize(
    ("line", "rate", "commission", "share"),
    [
        ("0.05", "0.10", "0.01", "0.04"),
        ("0.04", "0.10", "0.00", "0.04"),
        ("100.00", "0.1", "10.00", "90.00"),
        ("33.33", "0.15", "5.00", "28.33"),
    ],
)
def test_commission_and_publisher_share_add_up_to_the_line(
    line: str, rate: str, commission: str, share: str
) -> None:
    c, s = commission_split(D(line), D(rate))
    assert (c, s) == (D(commission), D(share))
    assert c + s == D(line)


def test_floats_and_mixed_currencies_are_refused() -> None:
    with pytest.raises(InvalidPlanError, match="string or integer"):
        to_decimal(0.1)
    with pytest.raises(InvalidPlanError, match="cannot add USD to CNY"):
        _ = Money(D("1.00")) + Money(D("1.00"), "USD")
    assert str(Money(D("1234.5"))) == "1,234.50 CNY"


def test_per_unit_prices_at_full_precision_and_rounds_the_line_once() -> None:
    plan = PricePlan.from_dict({"kind": "per_unit", "unit": "call", "unit_price": "0.003"})
    [charge] = plan.usage_charges(D(1234))
    assert charge.amount == D("3.702")  # not rounded while rating
    assert round_line(charge.amount) == D("3.70")
    # 1,001 calls at 0.0005 is 0.5005: rounding per call would give 0.00 x 1001 = 0.
    cheap = PricePlan.from_dict({"kind": "per_unit", "unit": "call", "unit_price": "0.0005"})
    assert round_line(cheap.usage_charges(D(1001))[0].amount) == D("0.50")


def test_graduated_tiers_price_each_unit_by_its_tier_and_resume_after_prior_usage() -> None:
    plan = PricePlan.from_dict(
        {
            "kind": "graduated",
            "unit": "row",
            "tiers": [
                {"up_to": "1000", "unit_price": "0.01"},
                {"up_to": None, "unit_price": "0.005"},
            ],
        }
    )
    charges = plan.usage_charges(D(1500))
    assert [(c.quantity, c.unit_price, c.amount) for c in charges] == [
        (D(1000), D("0.01"), D("10.00")),
        (D(500), D("0.005"), D("2.500")),
    ]
    # 300 more rows after 900: 100 still in tier 1, 200 in tier 2.
    later = plan.usage_charges(D(300), prior=D(900))
    assert [(c.quantity, c.amount) for c in later] == [(D(100), D("1.00")), (D(200), D("1.000"))]
    assert "row 901-1000 (tier 1)" in later[0].description
    # Exactly on a boundary: nothing spills into tier 2.
    assert [c.quantity for c in plan.usage_charges(D(1000))] == [D(1000)]
    assert plan.usage_charges(D(0)) == []


def test_subscription_has_a_monthly_fee_included_units_and_overage() -> None:
    plan = PricePlan.from_dict(
        {
            "kind": "subscription",
            "monthly_fee": "99",
            "included_units": "1000",
            "overage_price": "0.02",
        }
    )
    fee = plan.fee()
    assert fee is not None and fee.amount == D(99) and fee.kind == "fee"
    charges = plan.usage_charges(D(1250))
    assert [(c.quantity, c.amount) for c in charges] == [(D(1000), D(0)), (D(250), D("5.00"))]
    assert plan.usage_charges(D(800))[0].amount == 0


def test_free_plans_itemise_usage_at_zero_and_mb_prices_bytes() -> None:
    free = PricePlan.from_dict({"kind": "free", "unit": "call"})
    [c] = free.usage_charges(D(42))
    assert (c.quantity, c.amount) == (D(42), D(0))
    per_mb = PricePlan.from_dict({"kind": "per_unit", "unit": "mb", "unit_price": "0.5"})
    assert per_mb.usage_unit == "byte"
    qty = per_mb.to_plan_units(D(2_500_000))
    assert qty == D("2.5") and per_mb.usage_charges(qty)[0].amount == D("1.25")


def test_plans_round_trip_and_invalid_plans_say_what_is_wrong() -> None:
    spec = {
        "kind": "graduated",
        "unit": "audio-second",
        "currency": "CNY",
        "tiers": [{"up_to": "60", "unit_price": "0"}, {"up_to": None, "unit_price": "0.002"}],
    }
    assert PricePlan.from_dict(spec).to_dict() == spec
    bad = [
        ({"kind": "per_unit"}, "unit_price above 0"),
        ({"kind": "graduated", "tiers": [{"up_to": "10", "unit_price": "1"}]}, "unbounded"),
        (
            {
                "kind": "graduated",
                "tiers": [
                    {"up_to": "10", "unit_price": "1"},
                    {"up_to": "5", "unit_price": "1"},
                    {"up_to": None, "unit_price": "1"},
                ],
            },
            "must increase",
        ),
        ({"kind": "subscription"}, "monthly_fee or an overage_price"),
        ({"kind": "per_unit", "unit_price": "-1"}, "negative"),
        ({"kind": "per_unit", "unit_price": "1", "currency": "XYZ"}, "currency"),
        ({"kind": "barter"}, "plan kind"),
    ]
    for data, message in bad:
        with pytest.raises(InvalidPlanError, match=message):
            PricePlan.from_dict(data)
