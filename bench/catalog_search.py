"""Catalog search latency at 100,000 products on PostgreSQL, through the HTTP API.

Creates a temporary database on the PostgreSQL server at 127.0.0.1:5432 (dropped at the end),
seeds the demo city plus 100,000 products across tiers, domains, kinds and owners, starts
``citybrain serve`` on a free port and times a fixed set of searches as three callers
(anonymous, a developer, the operator). Prints p50/p95 per search and overall. Goal: p95 ≤ 10 ms.

A third of the products also carry a Chinese title and description (city words such as 拥堵,
井盖, 空气质量, 投诉 among pseudo-words, segmented by jieba as the catalog service does), and a
Chinese query set (``SEARCHES_ZH``) is timed beside the English one, with its own p95.

    .venv/bin/python bench/catalog_search.py [--products 100000] [--repeat 40]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

# The repository first: this folder holds a billing.py that must not shadow the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.utils.postgres import scratch_database
from tests.utils.server import running_platform_server

CITY_WORDS = [
    "traffic",
    "flow",
    "intersection",
    "bus",
    "metro",
    "parking",
    "bike",
    "taxi",
    "congestion",
    "signal",
    "camera",
    "road",
    "bridge",
    "tunnel",
    "air",
    "quality",
    "noise",
    "water",
    "river",
    "lake",
    "park",
    "tourism",
    "hotel",
    "museum",
    "visitor",
    "crowd",
    "hospital",
    "clinic",
    "pharmacy",
    "school",
    "hotline",
    "complaint",
    "permit",
    "license",
    "inspection",
    "building",
    "energy",
    "grid",
    "waste",
    "recycling",
    "weather",
    "rainfall",
    "flood",
    "drainage",
    "manhole",
    "street",
    "light",
    "tree",
    "permit",
    "forecast",
    "count",
    "daily",
    "hourly",
    "realtime",
    "history",
    "district",
    "community",
    "population",
    "census",
    "credit",
    "business",
]
DOMAINS = [
    "traffic",
    "safety",
    "city-management",
    "tourism",
    "health",
    "environment",
    "credit",
    "other",
]
TIERS = ["public"] * 5 + ["restricted"] * 3 + ["confidential"] + ["secret"]
# Chinese city words, placed in the Zipf vocabulary like CITY_WORDS.
CITY_WORDS_ZH = [
    "拥堵",
    "信号灯",
    "井盖",
    "空气质量",
    "投诉",
    "热线",
    "路口",
    "停车位",
    "景区",
    "客流",
    "噪声",
    "巡检",
    "违章",
    "公交",
    "地铁",
    "医院",
    "诊所",
    "学校",
    "垃圾",
    "排水",
    "积水",
    "路灯",
    "人口",
    "信用",
    "天气",
    "预警",
    "实时",
    "统计",
    "监测",
    "预测",
]
SEARCHES_ZH = [
    ("q=拥堵", {"q": "拥堵"}),
    ("q=井盖", {"q": "井盖"}),
    ("q=空气质量", {"q": "空气质量"}),
    ("q=投诉&domain=city-management", {"q": "投诉", "domain": "city-management"}),
    ("q=路口拥堵预测", {"q": "路口拥堵预测"}),
    ("q=traffic 拥堵 (mixed)", {"q": "traffic 拥堵"}),
]
SEARCHES = [
    ("q=traffic", {"q": "traffic"}),
    ("q=air quality", {"q": "air quality"}),
    ("q=hosp (prefix)", {"q": "hosp"}),
    ("q=bus&domain=traffic", {"q": "bus", "domain": "traffic"}),
    ("q=museum&kind=model", {"q": "museum", "kind": "model"}),
    ("q=flood forecast daily", {"q": "flood forecast daily"}),
    ("tag=realtime", {"tag": "realtime"}),
    ("domain=health&tier=public", {"domain": "health", "tier": "public"}),
    ("browse (no q) page 3", {"page": "3"}),
]


def vocabulary(rnd: random.Random, size: int = 6000) -> tuple[list[str], list[float]]:
    """A Zipf-weighted vocabulary, like real catalog text: the city words sit at ranks 20-800
    among pseudo-words, so a typical query term matches a few percent of the catalog."""
    syll = ["ka", "to", "ri", "men", "sha", "lo", "vi", "den", "por", "gu", "tel", "an", "mo", "zi"]
    words = ["".join(rnd.choices(syll, k=rnd.randint(2, 4))) + str(i) for i in range(size)]
    ranks = sorted(rnd.sample(range(20, 800), len(CITY_WORDS)))
    for rank, word in zip(ranks, CITY_WORDS, strict=True):
        words[rank] = word
    weights = [1.0 / (r + 1) ** 1.07 for r in range(size)]
    return words, weights


def vocabulary_zh(rnd: random.Random, size: int = 3000) -> tuple[list[str], list[float]]:
    """The Chinese counterpart of ``vocabulary``: two-character pseudo-words from common
    characters, the city words at ranks 20-600."""
    chars = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动"
    words = ["".join(rnd.choices(chars, k=2)) for _ in range(size)]
    ranks = sorted(rnd.sample(range(20, 600), len(CITY_WORDS_ZH)))
    for rank, word in zip(ranks, CITY_WORDS_ZH, strict=True):
        words[rank] = word
    weights = [1.0 / (r + 1) ** 1.07 for r in range(size)]
    return words, weights


def seed_products(url: str, n: int) -> None:
    from marketplace.catalog import zh
    from marketplace.db import make_engine, make_session_factory, transaction
    from marketplace.seed import seed_demo_city

    engine = make_engine(url)
    with transaction(make_session_factory(engine)) as s:
        seed_demo_city(s)
    engine.dispose()
    rnd = random.Random(7)
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        tenants = [r[0] for r in conn.execute("SELECT id FROM tenant ORDER BY id")]
        now = datetime.now(UTC)
        words, weights = vocabulary(rnd)
        words_zh, weights_zh = vocabulary_zh(rnd)
        with conn.cursor().copy(
            "COPY product (tenant_id, name, kind, title, description, domain, tags, tags_text, tier,"
            " license, state, created_at, updated_at, title_zh, description_zh, search_title_zh,"
            " search_tags_zh, search_description_zh) FROM STDIN"
        ) as copy:
            for i in range(n):
                title = " ".join(rnd.choices(words, weights, k=4)).capitalize()
                desc = " ".join(rnd.choices(words, weights, k=24))
                tags = sorted(set(rnd.choices(words, weights, k=3)))
                state = (
                    "published"
                    if rnd.random() < 0.9
                    else rnd.choice(["draft", "submitted", "deprecated"])
                )
                title_zh = desc_zh = None
                if rnd.random() < 1 / 3:
                    title_zh = "".join(rnd.choices(words_zh, weights_zh, k=4))
                    desc_zh = "，".join(
                        "".join(rnd.choices(words_zh, weights_zh, k=6)) for _ in range(3)
                    )
                copy.write_row(
                    (
                        rnd.choice(tenants),
                        f"bench-{i}",
                        rnd.choice(["dataset", "dataset", "model"]),
                        title,
                        desc,
                        rnd.choice(DOMAINS),
                        '["' + '","'.join(tags) + '"]',
                        " ".join(tags),
                        rnd.choice(TIERS),
                        "CC-BY-4.0",
                        state,
                        now,
                        now,
                        title_zh,
                        desc_zh,
                        # What catalog.service.index_chinese writes for a product.
                        zh.index_text(title, title_zh),
                        zh.index_text(" ".join(tags)),
                        zh.index_text(desc, desc_zh),
                    )
                )
    # Steady state, as autovacuum leaves it: GIN pending lists merged, visibility maps set,
    # statistics gathered — of every table, the search-side ones the triggers filled included
    # (the planner needs their statistics to walk an index in rank order).
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Needs the PostgreSQL server on 127.0.0.1:5432; a benchmark prints, it asserts "
        "nothing about time.",
    )
    ap.add_argument(
        "--products", type=int, default=100_000, help="products to seed (default 100,000)"
    )
    ap.add_argument(
        "--repeat", type=int, default=40, help="timed calls per search and caller (default 40)"
    )
    args = ap.parse_args()

    with (
        scratch_database("citybrain_bench") as db,
        tempfile.TemporaryDirectory() as tmp,
    ):
        url = db.url
        from marketplace.migrate import upgrade

        upgrade(url)
        t0 = time.perf_counter()
        seed_products(url, args.products)
        print(f"seeded {args.products:,} products in {time.perf_counter() - t0:.1f} s")
        from marketplace.db import make_engine, make_session_factory, transaction
        from marketplace.keys.service import create_key
        from marketplace.tenants.service import get_tenant_by_slug

        engine = make_engine(url)
        with transaction(make_session_factory(engine)) as s:
            dev = create_key(
                s, tenant=get_tenant_by_slug(s, "parkeasy"), scopes=["catalog:read"], actor="bench"
            ).token
            op = create_key(
                s,
                tenant=get_tenant_by_slug(s, "data-bureau"),
                scopes=["catalog:read"],
                actor="bench",
            ).token
        engine.dispose()

        with (
            running_platform_server(
                database_url=url, data_dir=Path(tmp) / "var", log=Path(tmp) / "server.log"
            ) as server,
            httpx.Client(base_url=server.url, timeout=30) as client,
        ):
            callers = {
                "anonymous": {},
                "developer": {"X-API-Key": dev},
                "operator": {"X-API-Key": op},
            }
            all_ms: list[float] = []
            zh_ms: list[float] = []
            print(f"\n{'search':<28}{'caller':<11}{'hits':>7}{'p50 ms':>9}{'p95 ms':>9}")
            for label, params in SEARCHES + SEARCHES_ZH:
                for who, headers in callers.items():
                    for _ in range(3):
                        client.get("/api/v1/catalog/search", params=params, headers=headers)
                    times = []
                    hits = 0
                    for _ in range(args.repeat):
                        t = time.perf_counter()
                        r = client.get("/api/v1/catalog/search", params=params, headers=headers)
                        times.append((time.perf_counter() - t) * 1000)
                        assert r.status_code == 200, r.text
                        hits = r.json()["count"]
                    all_ms += times
                    if (label, params) in SEARCHES_ZH:
                        zh_ms += times
                    q = statistics.quantiles(times, n=20)
                    print(
                        f"{label:<28}{who:<11}{hits:>7}{statistics.median(times):>9.2f}{q[18]:>9.2f}"
                    )
            q = statistics.quantiles(all_ms, n=20)
            print(
                f"\noverall: {len(all_ms)} requests, p50 {statistics.median(all_ms):.2f} ms, "
                f"p95 {q[18]:.2f} ms (goal: p95 ≤ 10 ms)"
            )
            q = statistics.quantiles(zh_ms, n=20)
            print(
                f"Chinese queries: {len(zh_ms)} requests, p50 {statistics.median(zh_ms):.2f} ms, "
                f"p95 {q[18]:.2f} ms (goal: p95 ≤ 10 ms)"
            )


if __name__ == "__main__":
    main()
