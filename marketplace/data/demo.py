"""The demo city's datasets: synthetic but plausible data, made deterministically.

Every table comes from a seeded random generator (no downloads, the same bytes every time, so
the same snapshot digests), vectorised with numpy so that a week of per-minute flows at 50
intersections (504,000 rows) takes well under a second. Each comes with the schema its
publisher would declare: sensitivities (plates and caller phones ``personal``, caller names
``sensitive``, manhole locations ``geo_point``) and quality rules. The demo week starts on
Monday 2 March 2026; times are Beijing local time, stored without a zone.

The tables themselves are made in ``marketplace.data.demo_tables``. ``marketplace.seed`` builds
the snapshots before its first database write and records them as the datasets' versions.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from marketplace.config import DataSettings
from marketplace.data import demo_tables as tables
from marketplace.data.ingest import ingest, version_fields
from marketplace.data.schema import parse_schema
from model_store import BlobInfo, BlobStore

__all__ = ["DEMO_DATASETS", "DemoDataset", "build_snapshots"]


@dataclass(frozen=True, slots=True)
class DemoDataset:
    """A demo dataset: the product it fills and how to make its table and schema."""

    handle: str
    make: Callable[[DataSettings], tables.Table]


DEMO_DATASETS: tuple[DemoDataset, ...] = (
    DemoDataset("traffic-police.intersection-flow", tables.intersection_flow),
    DemoDataset("traffic-police.violation-records", tables.violation_records),
    DemoDataset("environment.air-quality", tables.air_quality),
    DemoDataset("city-management.manhole-covers", tables.manhole_covers),
    DemoDataset("hotline-12345.complaint-tickets", tables.complaint_tickets),
    DemoDataset("health.clinic-capacity", tables.clinic_capacity),
    DemoDataset("tourism.scenic-spot-visitors", tables.scenic_spot_visitors),
    DemoDataset("parkeasy.parking-availability", tables.parking_availability),
    DemoDataset("traffic-police.signal-timing-plans", tables.signal_timing_plans),
)
"""Every demo dataset, by the catalog handle ``marketplace.seed`` lists it under."""


# Snapshots made in this process (deterministic, so reusable): (handle, days, intersections)
# → (Parquet bytes, version fields). A second seed (tests seed many cities) only stores them.
_MADE: dict[tuple[str, int, int], tuple[bytes, dict[str, Any]]] = {}


def _make(
    dataset: DemoDataset, settings: DataSettings, folder: Path
) -> tuple[bytes, dict[str, Any]]:
    table, declared = dataset.make(settings)
    upload = folder / "upload.parquet"
    pq.write_table(table, upload)
    result = ingest(
        upload,
        "parquet",
        parse_schema(declared),
        now=datetime.now(UTC),
        memory_limit=settings.memory_limit,
        threads=settings.threads,
    )
    if result.quality.blocked:  # pragma: no cover - the generators meet their rules
        raise RuntimeError(f"demo dataset {dataset.handle} fails its blocking rules")
    data = result.path.read_bytes()
    return data, version_fields(
        result, BlobInfo(f"sha256:{hashlib.sha256(data).hexdigest()}", len(data))
    )


def build_snapshots(
    datasets: Iterable[DemoDataset], settings: DataSettings, blobs: BlobStore
) -> dict[str, dict[str, Any]]:
    """Make each dataset's table, convert it like an upload and store the snapshot; returns
    the version fields (``catalog.create_version``'s ``data``) by handle. No database writes."""
    built: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="citybrain-demo-data-") as tmp:
        for dataset in datasets:
            key = (dataset.handle, settings.demo_flow_days, settings.demo_intersections)
            made = _MADE.get(key)
            if made is None:
                folder = Path(tmp) / dataset.handle
                folder.mkdir()
                made = _MADE[key] = _make(dataset, settings, folder)
            data, fields = made
            blobs.put_bytes(data, expected_digest=fields["data_digest"])
            built[dataset.handle] = dict(fields)
    return built
