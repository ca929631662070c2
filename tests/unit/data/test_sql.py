"""``POST .../sql``: the owner's ad hoc SELECT over its dataset, parsed with sqlglot and fenced."""

from __future__ import annotations

import pytest

from tests.utils.datasets import Datasets

pytestmark = pytest.mark.databases("sqlite", "postgresql")  # the API on both backends


def _sql(datasets: Datasets, who: str, handle: str, text: str, **extra: object):  # type: ignore[no-untyped-def]
    return datasets.city.client.post(
        f"/api/v1/products/{handle}/sql",
        json={"sql": text, **extra},
        headers=datasets.city.headers(who),
    )


def test_the_owner_runs_a_select_over_its_table(datasets: Datasets) -> None:
    handle = datasets.dataset("traffic-police", tier="restricted")
    r = _sql(
        datasets,
        "traffic-police",
        handle,
        "WITH fines AS (SELECT plate, sum(fine_cny) AS total FROM data GROUP BY plate) "
        "SELECT plate, total FROM fines WHERE total > 0 ORDER BY total DESC, plate",
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["columns"] == [
        {"name": "plate", "type": "VARCHAR"},
        {"name": "total", "type": "DECIMAL(38,0)"},  # DuckDB sums integers as HUGEINT
    ]
    assert body["rows"] == [["浙A·12345", 400], ["浙B·54321", 150]]
    assert _sql(datasets, "traffic-police", handle, "select count(*) AS n from DATA").json()[
        "rows"
    ] == [[4]]
    csv = datasets.city.client.post(
        f"/api/v1/products/{handle}/sql",
        json={"sql": "SELECT record_id FROM data ORDER BY 1 LIMIT 2"},
        headers={**datasets.city.headers("traffic-police"), "Accept": "text/csv"},
    )
    assert csv.text.splitlines() == ['"record_id"', '"V1"', '"V2"']


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("SELECT 1; SELECT 2", "exactly one statement"),
        ("COPY data TO 'out.csv'", "only SELECT"),
        ("ATTACH 'other.db'", "only SELECT"),
        ("SET memory_limit='9GB'", "only SELECT"),
        ("SELECT * FROM read_csv('/etc/passwd')", "table functions"),
        ("SELECT * FROM '/etc/passwd'", "only the table 'data'"),
        ("SELECT * FROM range(10)", "table functions"),
        ("SELECT * FROM data, api_key", "only the table 'data'"),
        ("SELECT * FROM main.data", "only the table 'data'"),
        ("SELECT * FROM snapshot", "only the table 'data'"),
        ("WITH snapshot AS (SELECT 1) SELECT * FROM snapshot", "reserved"),
        ("SELECT (SELECT count(*) FROM read_parquet('x')) FROM data", "table functions"),
        ("SELECT * FROM data WHERE plate = ?", "parameters"),
        ("SELEC plate FROM data", "does not parse"),
        ('="#\u00fb\u00c1\u00c5\x02', "does not parse"),  # found by schemathesis: was a 500
    ],
)
def test_anything_but_one_select_over_data_is_refused(
    datasets: Datasets, text: str, reason: str
) -> None:
    handle = datasets.dataset("traffic-police")
    r = _sql(datasets, "traffic-police", handle, text)
    assert r.status_code == 422, r.text
    assert reason in r.json()["error"]


def test_sql_is_the_owners_alone(datasets: Datasets) -> None:
    public = datasets.dataset("traffic-police")
    secret = datasets.dataset("traffic-police", tier="secret")
    r = _sql(datasets, "parkeasy", public, "SELECT plate FROM data")
    assert r.status_code == 403 and "only the owner" in r.json()["error"]
    hidden = _sql(datasets, "parkeasy", secret, "SELECT 1 FROM data")
    missing = _sql(datasets, "parkeasy", "traffic-police.nope", "SELECT 1 FROM data")
    assert hidden.status_code == missing.status_code == 404
