"""The gateway's tests again on PostgreSQL, where keys are read through the asynchronous
psycopg pool (marketplace.keys.reader), plus what only a server can do to that pool."""

from __future__ import annotations

import json

import psycopg

from tests.integration.conftest import PG_ADMIN_DSN
from tests.unit.gateway.conftest import Models, models  # noqa: F401 (the fixture)
from tests.unit.gateway.test_downloads import *  # noqa: F403
from tests.unit.gateway.test_fastpath import *  # noqa: F403
from tests.unit.gateway.test_infer import *  # noqa: F403

BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1.0, 2.0, 3.0]}]}


def test_keys_are_read_through_the_pool_and_survive_dropped_connections(models: Models) -> None:  # noqa: F811
    from marketplace.keys.reader import PostgresKeyReader

    gateway = models.city.client.app.state.gateway  # type: ignore[attr-defined]
    assert isinstance(gateway.keys, PostgresKeyReader)
    call = lambda: models.city.client.post(  # noqa: E731
        f"/v2/models/{models.public}/infer",
        content=json.dumps(BODY),
        headers=models.city.headers("parkeasy"),
    )
    assert call().status_code == 200
    # The server drops every connection of the reader's pool (a restart, an idle timeout).
    database = models.city.client.app.state.engine.url.database  # type: ignore[attr-defined]
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        dropped = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND application_name = '' AND pid <> pg_backend_pid() "
            "AND state = 'idle'",
            (database,),
        ).fetchall()
    assert dropped
    assert all(call().status_code == 200 for _ in range(3))
