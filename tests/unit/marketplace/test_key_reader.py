"""The gateway's SQLite key reader: rows kept between commits, never past one.

Another process (here a plain ``sqlite3`` connection in a subprocess, as the CLI would be)
revokes, restores or creates a key; the very next read sees it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import Iterator

import pytest

from marketplace.config import Settings
from marketplace.db import make_engine
from marketplace.keys.reader import SqliteKeyReader
from tests.utils.city import City


@pytest.fixture
def reader(settings: Settings) -> Iterator[SqliteKeyReader]:
    engine = make_engine(settings.database_url)
    r = SqliteKeyReader(engine)
    yield r
    asyncio.run(r.close())
    engine.dispose()


def _elsewhere(settings: Settings, sql: str, *params: object) -> None:
    """Run one statement from another process and commit it."""
    path = settings.database_url.removeprefix("sqlite:///")
    code = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1])\n"
        "c.execute(sys.argv[2], sys.argv[3:])\n"
        "c.commit()\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, path, sql, *map(str, params)], check=True, timeout=60
    )


def _statements(reader: SqliteKeyReader) -> list[str]:
    seen: list[str] = []
    conn: sqlite3.Connection = reader._conn  # the reader's own connection
    conn.set_trace_callback(seen.append)
    return seen


def test_rows_are_kept_between_commits_and_dropped_at_the_next(
    city: City, settings: Settings, reader: SqliteKeyReader
) -> None:
    key_id = city.key("parkeasy", scopes=["infer"]).split("_")[1]
    seen = _statements(reader)
    first = asyncio.run(reader.read(key_id))
    assert first is not None and first.revoked_at is None
    assert asyncio.run(reader.read(key_id)) == first
    reads = [s for s in seen if "api_key" in s]
    assert len(reads) == 1, "the second read must be served from the kept row"

    _elsewhere(
        settings, "UPDATE api_key SET revoked_at = '2026-01-01 00:00:00' WHERE id = ?", key_id
    )
    revoked = asyncio.run(reader.read(key_id))
    assert revoked is not None and revoked.revoked_at is not None

    _elsewhere(settings, "UPDATE api_key SET revoked_at = NULL WHERE id = ?", key_id)
    restored = asyncio.run(reader.read(key_id))
    assert restored is not None and restored.revoked_at is None


def test_an_unknown_id_is_found_once_another_process_creates_it(
    city: City, settings: Settings, reader: SqliteKeyReader
) -> None:
    key_id = city.key("parkeasy", scopes=["infer"]).split("_")[1]
    assert asyncio.run(reader.read("nosuchkey00")) is None
    assert asyncio.run(reader.read("nosuchkey00")) is None  # kept, like any row
    _elsewhere(settings, "UPDATE api_key SET id = 'nosuchkey00' WHERE id = ?", key_id)
    moved = asyncio.run(reader.read("nosuchkey00"))
    assert moved is not None
    assert asyncio.run(reader.read(key_id)) is None
