"""Data-product fixtures: a DuckDB engine over a small snapshot, and the demo city's datasets."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from marketplace.config import DataSettings
from marketplace.data.duckdb_engine import DuckDBEngine
from marketplace.data.engine import Snapshot
from model_store import BlobStore
from tests.utils.city import City
from tests.utils.datasets import Datasets


@pytest.fixture
def datasets(city: City) -> Datasets:
    return Datasets(city)


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


@pytest.fixture
def engine(blobs: BlobStore):  # type: ignore[no-untyped-def]
    eng = DuckDBEngine(DataSettings(query_timeout_s=30), blobs)
    yield eng
    eng.close()


def snapshot_of(table: pa.Table, blobs: BlobStore, tmp_path: Path) -> Snapshot:
    path = tmp_path / "snapshot.parquet"
    pq.write_table(table, path)
    info = blobs.put_file(path)
    return Snapshot(info.digest, table.num_rows, info.size)
