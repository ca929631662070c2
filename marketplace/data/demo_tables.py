"""The demo city's tables: synthetic but plausible, from seeded generators, vectorised.

Each function returns an Arrow table and the schema its publisher would declare (column
sensitivities and quality rules); ``marketplace.data.demo`` lists them by catalog handle. The
demo week starts on Monday 2 March 2026; times are Beijing local time, stored without a zone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from marketplace.config import DataSettings

_START = np.datetime64("2026-03-02T00:00")
_PROVINCE_LETTERS = np.array(list("ABCDEFGHJKL"))
_DIGITS = np.array(list("0123456789"))
_SURNAMES = np.array(list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高"))
_GIVEN = np.array(list("伟芳娜敏静丽强磊洋艳勇军杰娟涛明超秀霞平刚桂英华"))
_DISTRICTS = np.array(
    ["上城区", "拱墅区", "西湖区", "滨江区", "萧山区", "余杭区", "临平区", "钱塘区"]
)

Table = tuple[pa.Table, dict[str, Any]]


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(sum(ord(c) * (i + 1) for i, c in enumerate(name)))


def _minutes(offsets: np.ndarray[Any, Any]) -> pa.Array:
    return pa.array((_START + offsets.astype("timedelta64[m]")).astype("datetime64[us]"))


def _labels(values: np.ndarray[Any, Any], idx: np.ndarray[Any, Any]) -> pa.Array:
    """``values[idx]`` as an Arrow string array (Arrow's take: numpy strings convert slowly)."""
    return pa.array(values).take(pa.array(idx))


def _pick(rng: np.random.Generator, values: np.ndarray[Any, Any], n: int) -> np.ndarray[Any, Any]:
    picked: np.ndarray[Any, Any] = values[rng.integers(0, len(values), n)]
    return picked


def _join(*parts: np.ndarray[Any, Any]) -> list[str]:
    out = parts[0].astype(object)
    for part in parts[1:]:
        out = out + part.astype(object)
    return list(out)


def _grid(entities: int, steps: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Every (entity, step) pair, entity by entity: each row's entity index and its step."""
    return np.repeat(np.arange(entities), steps), np.tile(np.arange(steps), entities)


def _col(name: str, type_: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, "description": description, **extra}


def _daily_profile(hours: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Traffic by hour of day: a night low, morning and evening peaks, a midday shoulder."""
    profile: np.ndarray[Any, Any] = (
        0.12
        + 1.0 * np.exp(-((hours - 8.0) ** 2) / 2.0)
        + 0.9 * np.exp(-((hours - 18.0) ** 2) / 2.5)
        + 0.35 * np.exp(-((hours - 13.0) ** 2) / 8.0)
    )
    return profile


def intersection_flow(settings: DataSettings) -> Table:
    rng = _rng("intersection-flow")
    n_int, minutes = settings.demo_intersections, settings.demo_flow_days * 1440
    idx, offset = _grid(n_int, minutes)
    hour = (offset % 1440) / 60.0
    weekend = ((offset // 1440) % 7) >= 5
    base = rng.uniform(6.0, 40.0, n_int)[idx]
    lam = base * _daily_profile(hour) * np.where(weekend, 0.75, 1.0)
    count = rng.poisson(lam).astype(np.int32)
    speed = np.clip(62.0 - 0.9 * count + rng.normal(0.0, 4.0, len(count)), 5.0, 70.0)
    labels = np.array([f"I-{i + 1:02d}" for i in range(n_int)])
    table = pa.table(
        {
            "intersection": _labels(labels, idx),
            "minute": _minutes(offset),
            "count": pa.array(count),
            "avg_speed_kmh": pa.array(np.round(speed, 1)),
        }
    )
    schema = {
        "columns": [
            _col("intersection", "VARCHAR", "Intersection id, I-01 to I-50"),
            _col("minute", "TIMESTAMP", "Start of the minute (local time)", semantic="timestamp"),
            _col("count", "INTEGER", "Vehicles through the stop line in the minute"),
            _col("avg_speed_kmh", "DOUBLE", "Mean approach speed, km/h"),
        ],
        "quality": [
            {"rule": "not_null", "column": "intersection", "blocking": True},
            {"rule": "not_null", "column": "minute", "blocking": True},
            {"rule": "range", "column": "count", "min": 0, "max": 400},
            {"rule": "range", "column": "avg_speed_kmh", "min": 0, "max": 120},
            {"rule": "min_rows", "min": 1000, "blocking": True},
        ],
    }
    return table, schema


def _plates(rng: np.random.Generator, n: int) -> list[str]:
    """Zhejiang plates such as 浙A·12345 (a few fleets repeat: the same car, many records)."""
    pool = 3000
    digits = [_pick(rng, _DIGITS, pool) for _ in range(5)]
    plates = np.array(
        _join(np.full(pool, "浙"), _pick(rng, _PROVINCE_LETTERS, pool), np.full(pool, "·"), *digits)
    )
    return list(plates[rng.zipf(1.6, n) % pool])


def violation_records(settings: DataSettings) -> Table:
    rng = _rng("violation-records")
    n = 20_000
    kinds = np.array(["speeding", "red_light", "illegal_parking", "wrong_lane", "no_seatbelt"])
    kind_idx = rng.choice(len(kinds), n, p=[0.35, 0.15, 0.3, 0.12, 0.08])
    fines = np.array([200, 200, 150, 100, 50], dtype=np.int32)
    points = np.array([3, 6, 0, 2, 2], dtype=np.int32)
    offsets = np.sort(rng.integers(0, 7 * 1440, n))
    table = pa.table(
        {
            "record_id": pa.array([f"V20260302{i:06d}" for i in range(n)]),
            "plate": pa.array(_plates(rng, n)),
            "violation": pa.array(kinds[kind_idx]),
            "intersection": pa.array([f"I-{i:02d}" for i in rng.integers(1, 51, n)]),
            "occurred_at": _minutes(offsets),
            "fine_cny": pa.array(fines[kind_idx]),
            "points": pa.array(points[kind_idx]),
        }
    )
    schema = {
        "columns": [
            _col("record_id", "VARCHAR", "Record number"),
            _col(
                "plate", "VARCHAR", "Plate number", semantic="plate_number", sensitivity="personal"
            ),
            _col("violation", "VARCHAR", "Violation type"),
            _col("intersection", "VARCHAR", "Where it was detected"),
            _col("occurred_at", "TIMESTAMP", "When (local time)", semantic="timestamp"),
            _col("fine_cny", "INTEGER", "Fine, CNY"),
            _col("points", "INTEGER", "Licence points"),
        ],
        "quality": [
            {"rule": "unique", "column": "record_id", "blocking": True},
            {"rule": "not_null", "column": "plate", "blocking": True},
            {"rule": "pattern", "column": "plate", "pattern": "浙[A-L]·[0-9A-Z]{5}"},
            {"rule": "allowed_values", "column": "violation", "values": list(kinds)},
        ],
    }
    return table, schema


def air_quality(settings: DataSettings) -> Table:
    rng = _rng("air-quality")
    stations = np.array(
        [
            "卧龙桥",
            "西溪",
            "千岛湖",
            "下沙",
            "和睦小学",
            "朝晖五区",
            "临平镇",
            "城厢镇",
            "滨江",
            "云栖",
        ]
    )
    hours = 30 * 24
    idx, offset = _grid(len(stations), hours)
    daily = np.sin((offset % 24) / 24.0 * 2 * np.pi - 1.2)
    weather = np.repeat(rng.normal(0, 12, hours // 24 + 1), 24)[offset]
    pm25 = np.clip(38 + 10 * daily + weather + rng.normal(0, 6, len(idx)), 2, None)
    pm10 = pm25 * rng.uniform(1.4, 1.9, len(idx))
    no2 = np.clip(30 + 12 * daily + rng.normal(0, 5, len(idx)), 1, None)
    o3 = np.clip(70 - 25 * daily + rng.normal(0, 10, len(idx)), 1, None)
    aqi = np.maximum(pm25 * 1.35, pm10 * 0.8).astype(np.int32)
    table = pa.table(
        {
            "station": _labels(stations, idx),
            "hour": pa.array(
                (_START + (offset * 60).astype("timedelta64[m]")).astype("datetime64[us]")
            ),
            "pm25": pa.array(np.round(pm25, 1)),
            "pm10": pa.array(np.round(pm10, 1)),
            "no2": pa.array(np.round(no2, 1)),
            "o3": pa.array(np.round(o3, 1)),
            "aqi": pa.array(aqi),
        }
    )
    schema = {
        "columns": [
            _col("station", "VARCHAR", "Monitoring station"),
            _col("hour", "TIMESTAMP", "Start of the hour (local time)", semantic="timestamp"),
            _col("pm25", "DOUBLE", "PM2.5, µg/m³"),
            _col("pm10", "DOUBLE", "PM10, µg/m³"),
            _col("no2", "DOUBLE", "NO2, µg/m³"),
            _col("o3", "DOUBLE", "O3, µg/m³"),
            _col("aqi", "INTEGER", "Air quality index"),
        ],
        "quality": [
            {"rule": "range", "column": "pm25", "min": 0, "max": 1000, "blocking": True},
            {"rule": "not_null", "column": "station", "blocking": True},
        ],
    }
    return table, schema


def manhole_covers(settings: DataSettings) -> Table:
    rng = _rng("manhole-covers")
    n = 5000
    lat = rng.normal(30.27, 0.06, n)
    lon = rng.normal(120.16, 0.08, n)
    status = rng.choice(
        np.array(["ok", "damaged", "missing", "sunken"]), n, p=[0.9, 0.06, 0.01, 0.03]
    )
    inspected = np.datetime64("2026-03-01") - rng.integers(0, 365, n).astype("timedelta64[D]")
    table = pa.table(
        {
            "cover_id": pa.array([f"MH-{i:05d}" for i in range(n)]),
            "district": pa.array(_pick(rng, _DISTRICTS, n)),
            "location": pa.array([f"{a:.6f},{b:.6f}" for a, b in zip(lat, lon, strict=True)]),
            "material": pa.array(_pick(rng, np.array(["cast_iron", "composite", "concrete"]), n)),
            "status": pa.array(status),
            "last_inspected": pa.array(inspected.astype("datetime64[D]")),
        }
    )
    schema = {
        "columns": [
            _col("cover_id", "VARCHAR", "Cover id"),
            _col("district", "VARCHAR", "District"),
            _col("location", "VARCHAR", "Latitude,longitude (WGS84)", semantic="geo_point"),
            _col("material", "VARCHAR", "Cover material"),
            _col("status", "VARCHAR", "Condition at the last inspection"),
            _col("last_inspected", "DATE", "Last inspection"),
        ],
        "quality": [
            {"rule": "unique", "column": "cover_id", "blocking": True},
            {
                "rule": "allowed_values",
                "column": "status",
                "values": ["ok", "damaged", "missing", "sunken"],
            },
        ],
    }
    return table, schema


def complaint_tickets(settings: DataSettings) -> Table:
    rng = _rng("complaint-tickets")
    n = 10_000
    categories = np.array(
        [
            "noise",
            "road_damage",
            "garbage",
            "water_supply",
            "illegal_parking",
            "street_lights",
            "construction",
            "pets",
        ]
    )
    departments = np.array(
        ["生态环境局", "城管局", "城管局", "水务集团", "交警支队", "城管局", "住建局", "公安分局"]
    )
    cat = rng.integers(0, len(categories), n)
    prefix = _pick(rng, np.array(["138", "139", "135", "158", "186", "187", "199", "177"]), n)
    rest = [_pick(rng, _DIGITS, n) for _ in range(8)]
    offsets = np.sort(rng.integers(0, 7 * 1440, n))
    status = rng.choice(np.array(["resolved", "in_progress", "open"]), n, p=[0.78, 0.15, 0.07])
    hours = np.where(status == "resolved", np.round(rng.gamma(2.0, 10.0, n), 1), np.nan)
    table = pa.table(
        {
            "ticket_id": pa.array([f"T20260302{i:05d}" for i in range(n)]),
            "received_at": _minutes(offsets),
            "caller_phone": pa.array(_join(prefix, *rest)),
            "caller_name": pa.array(_join(_pick(rng, _SURNAMES, n), _pick(rng, _GIVEN, n))),
            "district": pa.array(_pick(rng, _DISTRICTS, n)),
            "category": pa.array(categories[cat]),
            "department": pa.array(departments[cat]),
            "status": pa.array(status),
            "resolved_hours": pa.array(hours, from_pandas=True),
        }
    )
    schema = {
        "columns": [
            _col("ticket_id", "VARCHAR", "Ticket number"),
            _col("received_at", "TIMESTAMP", "When the call came in", semantic="timestamp"),
            _col(
                "caller_phone",
                "VARCHAR",
                "Caller's phone number",
                semantic="phone",
                sensitivity="personal",
            ),
            _col(
                "caller_name",
                "VARCHAR",
                "Caller's name",
                semantic="person_name",
                sensitivity="sensitive",
            ),
            _col("district", "VARCHAR", "District"),
            _col("category", "VARCHAR", "Complaint category"),
            _col("department", "VARCHAR", "Department it was routed to"),
            _col("status", "VARCHAR", "Ticket status"),
            _col("resolved_hours", "DOUBLE", "Hours to resolution (resolved tickets)"),
        ],
        "quality": [
            {"rule": "unique", "column": "ticket_id", "blocking": True},
            {"rule": "pattern", "column": "caller_phone", "pattern": "1[3-9][0-9]{9}"},
            {"rule": "range", "column": "resolved_hours", "min": 0, "max": 2000},
        ],
    }
    return table, schema


def clinic_capacity(settings: DataSettings) -> Table:
    rng = _rng("clinic-capacity")
    clinics, days = 40, 30
    idx, day = _grid(clinics, days)
    beds = rng.integers(20, 120, clinics)[idx].astype(np.int32)
    occupancy = np.clip(rng.normal(0.72, 0.12, len(idx)), 0.05, 1.0)
    free = (beds * (1 - occupancy)).astype(np.int32)
    table = pa.table(
        {
            "clinic": _labels(
                np.array([f"社区卫生服务中心-{i + 1:02d}" for i in range(clinics)]), idx
            ),
            "district": _labels(_DISTRICTS, idx % len(_DISTRICTS)),
            "day": pa.array(np.datetime64("2026-02-01") + day.astype("timedelta64[D]")),
            "beds_total": pa.array(beds),
            "beds_free": pa.array(free),
            "doctors_on_duty": pa.array(rng.integers(2, 15, len(idx)).astype(np.int32)),
        }
    )
    schema = {
        "columns": [
            _col("clinic", "VARCHAR", "Community clinic"),
            _col("district", "VARCHAR", "District"),
            _col("day", "DATE", "Day"),
            _col("beds_total", "INTEGER", "Beds"),
            _col("beds_free", "INTEGER", "Free beds at 08:00"),
            _col("doctors_on_duty", "INTEGER", "Doctors on duty"),
        ],
        "quality": [{"rule": "range", "column": "beds_free", "min": 0, "blocking": True}],
    }
    return table, schema


def scenic_spot_visitors(settings: DataSettings) -> Table:
    rng = _rng("scenic-spot-visitors")
    spots = np.array(
        [
            "断桥残雪",
            "苏堤春晓",
            "雷峰塔",
            "灵隐寺",
            "西溪湿地",
            "河坊街",
            "三潭印月",
            "花港观鱼",
            "九溪烟树",
            "龙井村",
            "宋城",
            "湘湖",
        ]
    )
    hours = 7 * 24
    idx, offset = _grid(len(spots), hours)
    hod = offset % 24
    open_hours = (hod >= 7) & (hod <= 21)
    weekend = (offset // 24) % 7 >= 5
    lam = rng.uniform(300, 3000, len(spots))[idx] * np.exp(-((hod - 14) ** 2) / 18.0)
    visitors = np.where(open_hours, rng.poisson(lam * np.where(weekend, 1.8, 1.0)), 0)
    table = pa.table(
        {
            "spot": _labels(spots, idx),
            "hour": pa.array(
                (_START + (offset * 60).astype("timedelta64[m]")).astype("datetime64[us]")
            ),
            "visitors": pa.array(visitors.astype(np.int32)),
        }
    )
    schema = {
        "columns": [
            _col("spot", "VARCHAR", "Scenic spot"),
            _col("hour", "TIMESTAMP", "Start of the hour", semantic="timestamp"),
            _col("visitors", "INTEGER", "Visitors entering in the hour"),
        ],
        "quality": [{"rule": "range", "column": "visitors", "min": 0, "blocking": True}],
    }
    return table, schema


def parking_availability(settings: DataSettings) -> Table:
    rng = _rng("parking-availability")
    lots, slots = 20, 7 * 288
    idx, slot = _grid(lots, slots)
    offset = slot * 5
    capacity = rng.integers(80, 600, lots)[idx].astype(np.int32)
    busy = np.clip(
        _daily_profile((offset % 1440) / 60.0) / 1.1 + rng.normal(0, 0.05, len(idx)), 0.0, 1.0
    )
    free = (capacity * (1 - busy)).astype(np.int32)
    table = pa.table(
        {
            "car_park": _labels(np.array([f"P{i + 1:03d}" for i in range(lots)]), idx),
            "district": _labels(_DISTRICTS, idx % len(_DISTRICTS)),
            "at": _minutes(offset),
            "capacity": pa.array(capacity),
            "free_spaces": pa.array(free),
        }
    )
    schema = {
        "columns": [
            _col("car_park", "VARCHAR", "Car park"),
            _col("district", "VARCHAR", "District"),
            _col("at", "TIMESTAMP", "Reading time", semantic="timestamp"),
            _col("capacity", "INTEGER", "Spaces"),
            _col("free_spaces", "INTEGER", "Free spaces"),
        ],
        "quality": [{"rule": "range", "column": "free_spaces", "min": 0, "blocking": True}],
    }
    return table, schema


def signal_timing_plans(settings: DataSettings) -> Table:
    rng = _rng("signal-timing-plans")
    n = 50 * 4
    periods = np.array(["am_peak", "midday", "pm_peak", "night"])
    cycle = rng.integers(60, 180, n).astype(np.int32)
    table = pa.table(
        {
            "intersection": pa.array([f"I-{i // 4 + 1:02d}" for i in range(n)]),
            "period": pa.array(periods[np.arange(n) % 4]),
            "cycle_s": pa.array(cycle),
            "ns_green_s": pa.array((cycle * rng.uniform(0.35, 0.55, n)).astype(np.int32)),
        }
    )
    schema = {
        "columns": [
            _col("intersection", "VARCHAR", "Intersection"),
            _col("period", "VARCHAR", "Timing period"),
            _col("cycle_s", "INTEGER", "Cycle length, s"),
            _col("ns_green_s", "INTEGER", "North-south green, s"),
        ],
    }
    return table, schema
