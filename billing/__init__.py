"""Usage metering for the CityBrain Open Platform: durable, exactly-once usage events.

The gateway records one :class:`~billing.events.UsageEvent` per successful metered call through
:class:`~billing.metering.Meter`. The event is appended to a local, fsynced spool before the
response is sent (:class:`~billing.spool.Spool`), and a background
:class:`~billing.flusher.Flusher` copies the spool into the ``usage_event`` table with
insert-or-ignore on ``(tenant_id, id)``, so a crash loses nothing and a retry bills once.

This package never imports ``marketplace`` or ``model_store`` and knows nothing about HTTP
frameworks; errors carry their HTTP status for the service to map.
"""

from billing.errors import BillingError, MeteringUnavailableError
from billing.events import UsageEvent
from billing.flusher import Flusher
from billing.metering import Meter
from billing.metrics import BillingMetrics
from billing.spool import Spool, SpoolCursor

__all__ = [
    "BillingError",
    "BillingMetrics",
    "Flusher",
    "Meter",
    "MeteringUnavailableError",
    "Spool",
    "SpoolCursor",
    "UsageEvent",
]
