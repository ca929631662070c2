"""Billing's API, CLI and rating tests, run again on PostgreSQL (row-level security, NUMERIC,
timestamptz month and day grouping)."""

from tests.unit.marketplace.test_billing_api import *  # noqa: F403
