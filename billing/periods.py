"""Billing periods: calendar months in UTC, written ``YYYY-MM``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

from billing.errors import InvalidPlanError

__all__ = ["Period"]

_PERIOD_RE = re.compile(r"(\d{4})-(\d{2})\Z")


@dataclass(frozen=True, slots=True, order=True)
class Period:
    """One calendar month, ``[start, end)`` in UTC."""

    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Period:
        """``"2026-11"`` → ``Period(2026, 11)``.

        Raises:
            InvalidPlanError: The text is not ``YYYY-MM`` with a month 01-12.
        """
        m = _PERIOD_RE.match(text.strip())
        if not m or not 1 <= int(m.group(2)) <= 12:
            raise InvalidPlanError(f"period must look like 2026-11, not {text!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    @classmethod
    def of(cls, when: datetime | date) -> Period:
        """The period a moment (converted to UTC) or a day falls in."""
        if isinstance(when, datetime):
            when = when.astimezone(UTC) if when.tzinfo else when
        return cls(when.year, when.month)

    @property
    def start(self) -> datetime:
        """The first instant of the month (UTC)."""
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """The first instant of the next month (UTC), exclusive."""
        return self.next().start

    @property
    def first_day(self) -> date:
        return date(self.year, self.month, 1)

    def next(self) -> Period:
        return Period(self.year + self.month // 12, self.month % 12 + 1)

    def prev(self) -> Period:
        return Period(self.year - (self.month == 1), (self.month - 2) % 12 + 1)

    def days(self) -> list[date]:
        """Every day of the month, in order."""
        n = (self.next().first_day - self.first_day).days
        return [date.fromordinal(self.first_day.toordinal() + i) for i in range(n)]

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"
