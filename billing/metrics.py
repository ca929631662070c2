"""Prometheus metrics of the metering pipeline, registered on a registry the caller passes in."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["BillingMetrics"]

_GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
_FLUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)


class BillingMetrics:
    """The metering metrics. Pass one instance to both the spool and the flusher.

    Attributes:
        spool_backlog: Gauge of events durable in the spool but not yet in the database.
        events_appended: Counter of events made durable in the spool.
        append_failures: Counter of events whose append failed (the call was failed with 503).
        events_delivered: Counter of events committed to the database (duplicates included).
        duplicates_ignored: Counter of delivered events the database already had (retries).
        flush_latency: Histogram of the seconds one flush batch takes (insert and commit).
        flush_failures: Counter of flush batches that failed and were rolled back.
        fsync_group_size: Histogram of events made durable by one write + fsync (group commit).
        fsync_latency: Histogram of the seconds one spool write + fsync takes.
    """

    def __init__(self, registry: CollectorRegistry, *, prefix: str = "citybrain_billing") -> None:
        """Create and register the metrics.

        Args:
            registry: The Prometheus registry to register on (never the global default implicitly).
            prefix: Metric name prefix.
        """
        self.spool_backlog = Gauge(
            f"{prefix}_spool_backlog_events",
            "Usage events durable in the local spool and not yet delivered to the database.",
            registry=registry,
        )
        self.events_appended = Counter(
            f"{prefix}_events_appended",
            "Usage events appended to the spool (written and fsynced).",
            registry=registry,
        )
        self.append_failures = Counter(
            f"{prefix}_append_failures",
            "Usage events that could not be written to the spool (their calls failed with 503).",
            registry=registry,
        )
        self.events_delivered = Counter(
            f"{prefix}_events_delivered",
            "Usage events committed to the database (including ignored duplicates).",
            registry=registry,
        )
        self.duplicates_ignored = Counter(
            f"{prefix}_duplicates_ignored",
            "Delivered usage events whose (tenant_id, id) was already recorded.",
            registry=registry,
        )
        self.flush_latency = Histogram(
            f"{prefix}_flush_seconds",
            "Seconds to insert and commit one batch of usage events.",
            buckets=_FLUSH_BUCKETS,
            registry=registry,
        )
        self.flush_failures = Counter(
            f"{prefix}_flush_failures",
            "Flush batches that failed and were rolled back (the events stay in the spool).",
            registry=registry,
        )
        self.fsync_group_size = Histogram(
            f"{prefix}_fsync_group_size",
            "Usage events made durable by one spool write + fsync (group commit).",
            buckets=_GROUP_BUCKETS,
            registry=registry,
        )
        self.fsync_latency = Histogram(
            f"{prefix}_fsync_seconds",
            "Seconds one spool write + fsync takes.",
            buckets=_FSYNC_BUCKETS,
            registry=registry,
        )
