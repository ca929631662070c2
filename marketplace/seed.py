"""The demo city: tenants, one API key each (shown on the first run only) and a few products.

With a blob store its datasets hold real data (``marketplace.data.demo``: synthetic, made
deterministically, a week of per-minute flows at 50 intersections among them), and it also
registers the built-in model ``traffic-police.flow-smoother``
(a public TorchScript model, published), and with ``city_models`` (``citybrain demo``) the
city's own models, each a published catalog product with its model card (version notes and
manifest), evaluation metrics (manifest ``metrics``) and a per-unit price plan:

* ``hotline-12345.hotline-asr``: 12345 hotline speech recognition, billed per audio-second;
* ``hotline-12345.complaint-router``: complaint → department, billed per call;
* ``traffic-police.congestion-forecaster``: 15-minute congestion forecast, billed per call.

The city's python-format models are the platform's own code, published by government
tenants: the seed, acting as the operator, trusts them to run in process
(``marketplace.catalog.trust``), as ``citybrain models trust`` would; tenants' python models
run in sandbox workers.

Building them takes a while (the ASR word error rate is measured on espeak-ng speech, the
router and the forecaster are trained), so progress is reported and models are built before
the first database write. Idempotent: a second run adds nothing, builds nothing and prints no
keys.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.billing.service import now_utc, set_plan
from marketplace.catalog import service as catalog
from marketplace.catalog.trust import set_trusted_code
from marketplace.config import DataSettings
from marketplace.constants import ALL_SCOPES, Scope
from marketplace.context import Principal
from marketplace.keys.service import create_key
from marketplace.tables import Product, ProductVersion, Tenant
from marketplace.tenants.service import create_tenant
from model_store import BlobInfo, BlobStore, ModelManifest

ACTOR = "seed"

TENANTS: tuple[tuple[str, str, str, str | None], ...] = (
    ("data-bureau", "City Data Resources Bureau", "operator", None),
    ("traffic-police", "Traffic Police Bureau", "agency", "traffic"),
    ("city-management", "City Management Bureau", "agency", "city-management"),
    ("hotline-12345", "12345 Citizen Hotline Center", "agency", "city-management"),
    ("tourism", "Culture and Tourism Bureau", "agency", "tourism"),
    ("environment", "Ecology and Environment Bureau", "agency", "environment"),
    ("health", "Health Commission", "agency", "health"),
    ("xihu-district", "Xihu District Hub", "district", None),
    ("parkeasy", "ParkEasy Technology Co.", "developer", None),
)

# (owner, name, kind, title, description, domain, tags, tier)
PRODUCTS: tuple[tuple[str, str, str, str, str, str, list[str], str], ...] = (
    (
        "traffic-police",
        "intersection-flow",
        "dataset",
        "Intersection flow counts",
        "Per-minute vehicle counts at signalised intersections, from loop detectors and cameras.",
        "traffic",
        ["flow", "intersections", "realtime"],
        "public",
    ),
    (
        "traffic-police",
        "violation-records",
        "dataset",
        "Traffic violation records",
        "Camera-detected traffic violations with plate numbers; plates are personal data.",
        "traffic",
        ["violations", "enforcement"],
        "confidential",
    ),
    (
        "city-management",
        "manhole-covers",
        "dataset",
        "Manhole cover inventory",
        "Locations and inspection status of manhole covers across the city.",
        "city-management",
        ["infrastructure", "inspection"],
        "restricted",
    ),
    (
        "hotline-12345",
        "complaint-tickets",
        "dataset",
        "12345 hotline complaint tickets",
        "Citizen complaints received by the 12345 hotline, with department and resolution.",
        "city-management",
        ["hotline", "complaints", "citizens"],
        "confidential",
    ),
    (
        "tourism",
        "scenic-spot-visitors",
        "dataset",
        "Scenic spot visitor counts",
        "Hourly visitor counts at West Lake scenic spots, for crowd management.",
        "tourism",
        ["visitors", "west-lake", "crowd"],
        "public",
    ),
    (
        "environment",
        "air-quality",
        "dataset",
        "Air quality monitoring",
        "Hourly PM2.5, PM10, NO2 and O3 readings from the city's monitoring stations.",
        "environment",
        ["air", "pm25", "monitoring"],
        "public",
    ),
    (
        "health",
        "clinic-capacity",
        "dataset",
        "Community clinic capacity",
        "Daily bed and staff capacity of community clinics.",
        "health",
        ["clinics", "capacity"],
        "restricted",
    ),
    (
        "traffic-police",
        "signal-timing-plans",
        "dataset",
        "Signal timing plans",
        "Current signal timing plans of controlled intersections; internal to the bureau.",
        "traffic",
        ["signals", "timing"],
        "secret",
    ),
    (
        "parkeasy",
        "parking-availability",
        "dataset",
        "Parking availability",
        "Free spaces in ParkEasy-operated car parks, every five minutes.",
        "traffic",
        ["parking", "realtime"],
        "public",
    ),
)


# Simplified Chinese title and description of each demo product, by handle.
ZH_TEXT: dict[str, tuple[str, str]] = {
    "traffic-police.intersection-flow": (
        "路口车流量计数",
        "信号灯控制路口每分钟的车流量，来自线圈检测器和摄像头，用于交通拥堵分析。",
    ),
    "traffic-police.violation-records": (
        "交通违章记录",
        "摄像头抓拍的交通违章记录，含车牌号；车牌属于个人信息。",
    ),
    "city-management.manhole-covers": (
        "井盖台账",
        "全市窨井盖的位置和巡检状态。",
    ),
    "hotline-12345.complaint-tickets": (
        "12345热线投诉工单",
        "12345市民热线受理的市民投诉，含承办部门和办理结果。",
    ),
    "tourism.scenic-spot-visitors": (
        "景区客流统计",
        "西湖各景点每小时的游客人数，用于客流管控。",
    ),
    "environment.air-quality": (
        "空气质量监测",
        "全市空气质量监测站每小时的PM2.5、PM10、二氧化氮和臭氧读数。",
    ),
    "health.clinic-capacity": (
        "社区诊所接诊能力",
        "社区诊所每日的床位和医护人员容量。",
    ),
    "traffic-police.signal-timing-plans": (
        "信号灯配时方案",
        "受控路口当前的信号灯配时方案，仅限本局内部使用。",
    ),
    "parkeasy.parking-availability": (
        "停车位余量",
        "ParkEasy运营停车场的空余停车位，每五分钟更新。",
    ),
    "traffic-police.flow-smoother": (
        "交通流量平滑模型",
        "按路口对每分钟车流量做平滑（居中滑动平均），供拥堵分析使用。",
    ),
    "hotline-12345.hotline-asr": (
        "12345热线语音识别",
        "把12345热线来电录音转写为文字，按音频秒计费。",
    ),
    "hotline-12345.complaint-router": (
        "12345投诉分派模型",
        "根据投诉内容把市民投诉分派到承办部门。",
    ),
    "traffic-police.congestion-forecaster": (
        "路口拥堵预测",
        "预测各路口未来15分钟的交通拥堵程度。",
    ),
}


def _title_zh(handle: str) -> str | None:
    return ZH_TEXT[handle][0] if handle in ZH_TEXT else None


def _description_zh(handle: str) -> str | None:
    return ZH_TEXT[handle][1] if handle in ZH_TEXT else None


@dataclass(frozen=True, slots=True)
class SeedResult:
    created_tenants: list[str]
    keys: dict[str, str]
    created_products: list[str]


def _principal(tenant: Tenant) -> Principal:
    return Principal(
        tenant_id=tenant.id,
        tenant_slug=tenant.slug,
        tenant_kind=tenant.kind,
        scopes=frozenset(ALL_SCOPES),
        actor=ACTOR,
    )


DEMO_MODEL_OWNER = "traffic-police"
DEMO_MODEL_NAME = "flow-smoother"


def _seed_demo_model(session: Session, owner: Tenant, blobs: BlobStore) -> str | None:
    """Register the built-in flow smoother (artifact + manifest) unless it is there already."""
    exists = session.scalar(
        select(Product.id).where(Product.tenant_id == owner.id, Product.name == DEMO_MODEL_NAME)
    )
    if exists is not None:
        return None
    from model_store import validate_model
    from model_store.builtin import flow_smoother
    from model_store.formats import load_model

    with tempfile.TemporaryDirectory() as tmp:
        path, manifest = flow_smoother.build(tmp)
        validate_model(manifest, path, loader=load_model)
        info = blobs.put_file(path)
    who = _principal(owner)
    catalog.create_product(
        session,
        who,
        name=DEMO_MODEL_NAME,
        kind="model",
        title="Traffic flow smoother",
        description="Smooths per-minute traffic flow counts per intersection (centred "
        f"{flow_smoother.WIDTH}-minute moving average). Input 'flow' FP32 [rows, minutes]; "
        "output 'smoothed', same shape.",
        domain="traffic",
        tags=["flow", "smoothing", "torchscript"],
        tier="public",
        license="Apache-2.0",
        title_zh=_title_zh(f"{owner.slug}.{DEMO_MODEL_NAME}"),
        description_zh=_description_zh(f"{owner.slug}.{DEMO_MODEL_NAME}"),
    )
    handle = f"{owner.slug}.{DEMO_MODEL_NAME}"
    catalog.create_version(
        session,
        who,
        handle,
        notes="Built-in model",
        meta={"artifact_size": info.size, "format": manifest.format},
        artifact_digest=info.digest,
        manifest=manifest.model_dump(mode="json"),
    )
    catalog.publish_product(session, who, handle)
    return handle


@dataclass(frozen=True, slots=True)
class CityModel:
    """A built-in city model the demo registers.

    Attributes:
        module: Its builder, ``model_store.builtin.<module>`` (``PRODUCT``, ``build``).
        license: The artifact's license.
        plan: The price plan placeholder (``PUT /products/{handle}/plan`` body).
        work: What building it does, for the progress line.
    """

    module: str
    license: str
    plan: dict[str, str]
    work: str

    @property
    def builder(self) -> Any:
        return importlib.import_module(f"model_store.builtin.{self.module}")

    @property
    def product(self) -> dict[str, Any]:
        product: dict[str, Any] = self.builder.PRODUCT
        return product

    @property
    def handle(self) -> str:
        return f"{self.product['owner']}.{self.product['name']}"


CITY_MODELS: tuple[CityModel, ...] = (
    CityModel(
        "hotline_asr",
        "MIT",
        {"kind": "per_unit", "unit": "audio-second", "unit_price": "0.002", "currency": "CNY"},
        "measuring the word error rate on espeak-ng speech",
    ),
    CityModel(
        "complaint_router",
        "Apache-2.0",
        {"kind": "per_unit", "unit": "call", "unit_price": "0.001", "currency": "CNY"},
        "training the routing head on sentence embeddings",
    ),
    CityModel(
        "congestion_forecaster",
        "Apache-2.0",
        {"kind": "per_unit", "unit": "call", "unit_price": "0.001", "currency": "CNY"},
        "simulating the synthetic city and training",
    ),
)
"""The city's own models (``citybrain demo``), in the order they are built."""

Progress = Callable[[str], None]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _existing_handles(session: Session, handles: list[str]) -> set[str]:
    rows = session.execute(
        select(Tenant.slug, Product.name).join(Product, Product.tenant_id == Tenant.id)
    )
    found = {f"{slug}.{name}" for slug, name in rows}
    return found & set(handles)


def _build_city_models(
    missing: list[CityModel], blobs: BlobStore, progress: Progress
) -> dict[str, tuple[BlobInfo, ModelManifest]]:
    """Build each missing model into the blob store (no database writes)."""
    from model_store import validate_model
    from model_store.formats import load_model

    built: dict[str, tuple[BlobInfo, ModelManifest]] = {}
    for i, model in enumerate(missing, start=1):
        progress(f"[{i}/{len(missing)}] building {model.handle}: {model.work}...")
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="citybrain-seed-") as tmp:
            path, manifest = model.builder.build(Path(tmp))
            # The platform's own code: checked in process, like it is served (trusted).
            validate_model(manifest, path, loader=load_model)
            info = blobs.put_file(path)
        metrics = ", ".join(f"{k} {v:g}" for k, v in manifest.metrics.items())
        progress(
            f"[{i}/{len(missing)}] {model.handle} built in "
            f"{time.perf_counter() - started:.1f} s ({metrics})"
        )
        built[model.handle] = (info, manifest)
    return built


def _metrics_line(manifest: ModelManifest) -> str:
    return "; ".join(f"{k} = {v:g}" for k, v in manifest.metrics.items())


def _register_city_model(
    session: Session, owner: Tenant, model: CityModel, info: BlobInfo, manifest: ModelManifest
) -> str:
    product = model.product
    who = _principal(owner)
    catalog.create_product(
        session,
        who,
        name=product["name"],
        kind="model",
        title=product["title"],
        description=f"{product['description']}\n\nEvaluation (measured at build time): "
        f"{_metrics_line(manifest)}. The model card is in the version notes.",
        domain=product["domain"],
        tags=list(product["tags"]),
        tier=product["tier"],
        license=model.license,
        title_zh=_title_zh(model.handle),
        description_zh=_description_zh(model.handle),
    )
    handle = model.handle
    catalog.create_version(
        session,
        who,
        handle,
        notes=manifest.model_card,
        meta={
            "artifact_size": info.size,
            "format": manifest.format,
            "metrics": dict(manifest.metrics),
            "metering": manifest.metering.model_dump(mode="json"),
        },
        artifact_digest=info.digest,
        manifest=manifest.model_dump(mode="json"),
    )
    set_plan(session, who, handle, dict(model.plan), now=now_utc())
    catalog.publish_product(session, who, handle)
    return handle


def _datasets_without_data(session: Session) -> list[Any]:
    """The demo datasets that are missing, or listed without a data version yet."""
    from marketplace.data.demo import DEMO_DATASETS

    with_data = {
        f"{slug}.{name}"
        for slug, name in session.execute(
            select(Tenant.slug, Product.name)
            .join(Product, Product.tenant_id == Tenant.id)
            .join(ProductVersion, ProductVersion.product_id == Product.id)
            .where(ProductVersion.data_digest.is_not(None))
        )
    }
    return [d for d in DEMO_DATASETS if d.handle not in with_data]


def _add_data(session: Session, owner: Tenant, handle: str, fields: dict[str, Any]) -> None:
    from marketplace.data.service import create_data_version

    create_data_version(
        session,
        _principal(owner),
        handle,
        data=fields,
        notes="Demo city data: synthetic, generated deterministically",
        meta={"format": "parquet", "source": "marketplace.data.demo", "rows": fields["data_rows"]},
    )


# Every scope but ``federation``: naming another caller is for a district hub's own key, issued
# on purpose (docs/federation.md), never a demo key's.
DEMO_SCOPES = tuple(s for s in ALL_SCOPES if s != Scope.FEDERATION.value)


def seed_demo_city(
    session: Session,
    *,
    blobs: BlobStore | None = None,
    city_models: bool = False,
    progress: Progress = _say,
    data: DataSettings | None = None,
) -> SeedResult:
    """Create what is missing of the demo city; return the keys created in this run.

    With ``blobs`` (the artifact store) the datasets get their data (sized by ``data``'s
    ``demo_flow_days`` and ``demo_intersections``) and the demo model is registered too, and
    with ``city_models`` also the city's own models (:data:`CITY_MODELS`; slow the first time,
    see the module docstring). ``progress`` receives a line per step of a model build.
    """
    built: dict[str, tuple[BlobInfo, ModelManifest]] = {}
    snapshots: dict[str, dict[str, Any]] = {}
    if blobs is not None:
        # Built before the first write, like the models: no write transaction waits on it.
        missing_data = _datasets_without_data(session)
        if missing_data:
            from marketplace.data.demo import build_snapshots

            snapshots = build_snapshots(missing_data, data or DataSettings(), blobs)
    if blobs is not None and city_models:
        # Build before the first write, so a long build holds no write transaction.
        existing = _existing_handles(session, [m.handle for m in CITY_MODELS])
        missing = [m for m in CITY_MODELS if m.handle not in existing]
        if missing:
            built = _build_city_models(missing, blobs, progress)
    created: list[str] = []
    keys: dict[str, str] = {}
    tenants: dict[str, Tenant] = {
        t.slug: t
        for t in session.scalars(select(Tenant).where(Tenant.slug.in_([s for s, *_ in TENANTS])))
    }
    for slug, name, kind, domain in TENANTS:
        if slug in tenants:
            continue
        tenant = create_tenant(session, slug=slug, name=name, kind=kind, domain=domain, actor=ACTOR)
        tenants[slug] = tenant
        created.append(slug)
        issued = create_key(
            session, tenant=tenant, scopes=DEMO_SCOPES, name="demo key", actor=ACTOR
        )
        keys[slug] = issued.token

    operator = _principal(tenants["data-bureau"])
    made: list[str] = []
    for owner, name, kind, title, description, domain, tags, tier in PRODUCTS:
        tenant = tenants[owner]
        exists = session.scalar(
            select(Product.id).where(Product.tenant_id == tenant.id, Product.name == name)
        )
        if exists is not None:
            continue
        who = _principal(tenant)
        catalog.create_product(
            session,
            who,
            name=name,
            kind=kind,
            title=title,
            description=description,
            domain=domain,
            tags=tags,
            tier=tier,
            license="CC-BY-4.0" if tier == "public" else "",
            # Open data (public, CC-BY) may be downloaded whole; the rest is for querying.
            downloadable=kind == "dataset" and tier == "public",
            title_zh=_title_zh(f"{owner}.{name}"),
            description_zh=_description_zh(f"{owner}.{name}"),
        )
        handle = f"{owner}.{name}"
        if handle in snapshots:
            _add_data(session, tenant, handle, snapshots.pop(handle))
        else:
            catalog.create_version(session, who, handle, notes="Initial release", meta={"rows": 0})
        if tier in ("public", "secret"):
            catalog.publish_product(session, who, handle)
        else:
            catalog.submit_product(session, who, handle)
            catalog.review_product(
                session, operator, handle, approve=True, note="Demo city: reviewed at seed time"
            )
        made.append(handle)
    for handle, fields in snapshots.items():  # listed before data products existed
        _add_data(session, tenants[handle.split(".", 1)[0]], handle, fields)
    if blobs is not None:
        model = _seed_demo_model(session, tenants[DEMO_MODEL_OWNER], blobs)
        if model is not None:
            made.append(model)
    for city_model in CITY_MODELS:
        if city_model.handle in built:
            info, manifest = built[city_model.handle]
            publisher = tenants[city_model.product["owner"]]
            made.append(_register_city_model(session, publisher, city_model, info, manifest))
            if manifest.format == "python":
                set_trusted_code(session, operator, city_model.handle, True)
    session.flush()
    return SeedResult(created_tenants=created, keys=keys, created_products=made)
