"""One Settings class for the whole process, read from ``CITYBRAIN_*`` variables.

Nested sections use a double underscore: ``CITYBRAIN_MODEL_STORE__MAX_UPLOAD_BYTES``.
Built once at the entry point (CLI or app factory) and passed down.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def redact_url(url: str) -> str:
    """``url`` with its password shown as ``***``: for logs, messages and reprs."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<a URL that does not parse>" if "@" in url else url


def _redacted(args: Iterator[tuple[str | None, Any]]) -> Iterator[tuple[str | None, Any]]:
    # Settings are printed in tracebacks and debug output: database URLs carry passwords.
    for name, value in args:
        yield name, redact_url(value) if name == "database_url" and value else value


class SandboxSettings(BaseModel):
    """Where tenants' model code runs (``CITYBRAIN_MODEL_STORE__SANDBOX__*``; see
    ``model_store.sandbox.SandboxConfig`` for each field's meaning)."""

    memory_bytes: int = Field(default=4 * 1024**3, gt=0)
    cpu_seconds: int = Field(default=3600, gt=0)
    call_timeout_s: float = Field(default=30.0, gt=0)
    load_timeout_s: float = Field(default=120.0, gt=0)
    max_processes: int = Field(default=64, gt=0)
    max_open_files: int = Field(default=256, gt=0)
    max_file_bytes: int = Field(default=64 * 1024**2, gt=0)
    scratch_bytes: int = Field(default=256 * 1024**2, gt=0)
    max_message_bytes: int = Field(default=256 * 1024**2, gt=0)
    # Confine workers with namespaces, a minimal root and a user of their own (needs root).
    namespaces: bool = True
    # Refuse to run tenant code where that confinement is unavailable (not root).
    require_namespaces: bool = False
    # Where each worker's folder is made (default: the system's temp dir).
    work_dir: Path | None = None


class ModelStoreSettings(BaseModel):
    # Where artifacts live: a local directory (default: <data_dir>/artifacts) or any fsspec URL.
    artifact_url: str | None = None
    max_upload_bytes: int = 512 * 1024 * 1024
    # Resident-model budget of the embedded runtime; least recently used models are unloaded.
    memory_budget_bytes: int = 2 * 1024 * 1024 * 1024
    max_loaded_models: int = 16
    # Models whose predict is measured faster than this run on the event loop rather than a
    # worker thread (the thread hop would cost more than the model); 0 turns it off.
    inline_predict_below_ms: float = 0.1
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)


class GatewaySettings(BaseModel):
    # Largest inference request body (JSON or binary tensors) the /v2 routes accept.
    max_infer_bytes: int = 64 * 1024 * 1024
    # How long a resolved handle (version, manifest, tier, owner) is reused. Catalog writes in
    # this process invalidate it at once; this bounds staleness after writes by other processes.
    resolve_ttl_s: float = 2.0
    resolve_cache_size: int = 4096
    # /metrics answers the operator's keys only unless this is set (e.g. behind a private
    # scrape network); secret products never appear by name either way.
    metrics_public: bool = False
    # Quota buckets in Redis (e.g. redis://127.0.0.1:6379/0) so several gateway processes
    # share every limit; in-process buckets when unset.
    quota_redis_url: str | None = None
    # A new or removed limit applies within this long.
    quota_cache_s: float = 5.0
    # A platform-wide cap per API key, in requests per second (0: none).
    default_key_rps: float = 0.0


class DataSettings(BaseModel):
    """Data products (``CITYBRAIN_DATA__*``): uploads, the query engine and its limits, masks."""

    # The engine that runs query plans: embedded DuckDB, or Spark SQL for datasets too large
    # for one node (``spark_master``: local[2] in tests, spark://host:7077 in production).
    engine: Literal["duckdb", "spark"] = "duckdb"
    spark_master: str = "local[2]"
    # The address the Spark driver binds and advertises: loopback for local masters; the
    # pod's address when executors elsewhere must reach it.
    spark_driver_host: str = "127.0.0.1"
    # The driver JVM's heap (read once, when the process's Spark session starts).
    spark_driver_memory: str = "1g"
    # The blob store as Spark reads it (e.g. s3a://bucket/artifacts for s3://bucket/artifacts,
    # with the fs.s3a.* settings in spark_conf); empty: the local copy of each snapshot, which
    # only a local master can read.
    spark_snapshot_url: str | None = None
    # Further Spark settings (JSON object), e.g. {"spark.executor.memory": "8g"}.
    spark_conf: dict[str, str] = Field(default_factory=dict)
    # Largest upload (CSV, Parquet or JSON Lines) accepted, in bytes.
    max_upload_bytes: int = 1024 * 1024 * 1024
    # Where uploads are staged while they become snapshots (default: <data_dir>/data-staging).
    staging_dir: Path | None = None
    # Limits of one query: wall time (the engine is interrupted past it), the engine's memory
    # (shared by the queries of one process), rows in one page (a row cap: more rows come
    # through next_cursor), queries running at once per process.
    query_timeout_s: float = Field(default=30.0, gt=0)
    memory_limit: str = "1GB"
    threads: int = Field(default=2, ge=1)
    max_rows: int = Field(default=100_000, ge=1)
    default_limit: int = Field(default=1000, ge=1)
    max_concurrent_queries: int = Field(default=4, ge=1)
    # How long a query's dataset look-ups (listing, version, key; never grants) are reused;
    # this process's catalog writes clear them at once, other processes' within this. 0: off.
    lookup_ttl_s: float = Field(default=2.0, ge=0)
    # How long a streamed download may take before it is cut off.
    download_timeout_s: float = Field(default=600.0, gt=0)
    # Cell size of the grid geo points are snapped to for callers who may not see them exact.
    geo_grid_m: float = Field(default=500.0, gt=0)
    # The demo city's per-minute intersection flows: days and intersections (50 x 7 days is
    # 504,000 rows; tests that seed data may ask for less).
    demo_flow_days: int = Field(default=7, ge=1, le=366)
    demo_intersections: int = Field(default=50, ge=1, le=1000)


class OIDCSettings(BaseModel):
    """Portal users' bearer tokens from a Keycloak realm (off unless server_url is set)."""

    # Keycloak's base URL, e.g. https://sso.city.gov/ (realms live under /realms/<realm>).
    server_url: str | None = None
    realm: str = "citybrain"
    client_id: str = "citybrain-platform"
    client_secret: str | None = Field(default=None, repr=False)
    audience: str = "account"
    # The claim that names the user's tenant (a tenant slug).
    tenant_claim: str = "tenant"
    # Clock skew tolerated on exp/nbf/iat, in seconds: a few, never a minute.
    leeway_s: int = 5
    # Also ask the realm whether the token is still active (needs client_secret; costs a call).
    introspect: bool = False
    jwks_ttl_s: int = 300


class PortalSettings(BaseModel):
    """The web portal at ``/`` (``CITYBRAIN_PORTAL__*``).

    Sessions live in the server process (an in-memory store): the cookie holds only a signed,
    random session id, never a key or a token. Without ``session_secret`` each process draws a
    random one at start, which suits the one-process demo (sessions end with the process); set
    it when several processes serve the portal (they must also share sessions: route a user to
    one process, e.g. with sticky sessions).
    """

    enabled: bool = True
    session_secret: SecretStr | None = Field(default=None, repr=False)
    # A session unused this long ends (its sign-in with it).
    session_idle_s: int = Field(default=8 * 3600, ge=60)
    # At most this many sessions are kept per process; the least recently used go first.
    max_sessions: int = Field(default=10_000, ge=10)
    # Mark the cookie Secure (only sent over HTTPS); None: when the request came over HTTPS.
    secure_cookie: bool | None = None
    # The portal's own OIDC client (authorization code flow with PKCE) at the realm that
    # ``oidc`` names; sign-in with a city account is offered when oidc.server_url is set.
    oidc_client_id: str = "citybrain-portal"
    oidc_client_secret: SecretStr | None = Field(default=None, repr=False)
    oidc_scope: str = "openid profile"
    # The portal's address as the browser sees it (the redirect URI is <public_url>/auth/callback);
    # None: the address the request came to.
    public_url: str | None = None


class BillingSettings(BaseModel):
    # Local spool where usage events are made durable before a metered response leaves.
    spool_dir: Path | None = None
    # Events are durable in the spool already; the flush only moves them into the database, so a
    # longer interval costs freshness of the usage API, not safety (and spares the request path).
    flush_interval_s: float = 2.0
    flush_batch_size: int = 5000
    # Under load (more than 4 other calls in flight) the calls reaching the meter gather for up
    # to this long to share one fsync, and only while the server has other calls to serve:
    # fewer fsyncs (CPU) for at most this much added latency. 0: no gathering.
    group_commit_wait_ms: float = Field(default=20.0, ge=0.0, le=1000.0)
    idempotency_window_s: int = 48 * 3600
    # How the flusher reaches the usage_event table (CITYBRAIN_BILLING__DATABASE_URL); empty:
    # the main database_url. Point it at the same database by another route (a pooler, a
    # proxy): the usage API and rating read usage_event through the main URL.
    database_url: str = ""
    # Record one usage event per successful call before its response (the production default).
    # False skips the gateway's meter step entirely: calls are served unbilled. It exists for
    # benchmarking the metering cost (bench/metering.py) and for internal deployments only.
    metering: bool = True
    # The operator's commission on every invoice line, e.g. 0.10 for 10 % (``citybrain billing
    # run --commission`` overrides it).
    commission_rate: Decimal = Field(default=Decimal("0.10"), ge=0, le=1)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        return _redacted(iter(super().__repr_args__()))


class StripeSettings(BaseModel):
    """Developer tenants' invoices and meter events in Stripe (``CITYBRAIN_STRIPE__*``); off
    unless ``api_key`` is set."""

    api_key: str | None = Field(default=None, repr=False)
    # Another Stripe API address (a local fake in tests, a proxy); Stripe's own by default.
    api_base: str | None = None


class TritonSettings(BaseModel):
    """Models whose manifest says ``runtime: "triton"`` (``CITYBRAIN_TRITON__*``).

    Managed (the default): the platform runs the ``tritonserver`` bundled with nvidia-pytriton
    itself, on free loopback ports (never 8000-8002), started on the first use of a Triton
    model, or at startup with ``enabled``; it is restarted when it crashes. External: ``url``
    names a Triton started with ``--model-control-mode=explicit`` that reads
    ``repository_dir``, a folder both sides mount (the platform exports models into it).
    """

    # Start (managed) or connect to (external) Triton at startup instead of on first use.
    enabled: bool = False
    # Without a url, run a tritonserver of our own; False (and no url): Triton models get 503.
    managed: bool = True
    # An external Triton's HTTP URL, e.g. http://triton:8000.
    url: str | None = None
    # The model repository: an external Triton's (required with url); for the managed server,
    # default <triton data_dir>/models.
    repository_dir: Path | None = None
    # The managed server's folder (its copy of the binary, logs, model repository). A folder
    # not named "triton" gets a "triton" subfolder. Default: <data_dir>/triton.
    data_dir: Path | None = None
    # Fixed ports for the managed server (default: free ones; 8000-8002 are refused).
    http_port: int | None = None
    grpc_port: int | None = None
    # How often the backend is probed (outage detection, reloads after a restart).
    probe_interval_s: float = 0.5
    infer_timeout_s: float = 30.0
    load_timeout_s: float = 120.0
    # Triton's python backend runs a model in a stub process with the server's user,
    # environment, files and network: no sandbox. So untrusted python-format models get 503
    # there unless this says the Triton in use confines them itself (an external one in a
    # container of its own, holding none of the platform's secrets).
    run_untrusted_code: bool = False

    @model_validator(mode="after")
    def _external_needs_repository(self) -> TritonSettings:
        if self.url is not None and self.repository_dir is None:
            raise ValueError(
                "triton.url (an external Triton) needs triton.repository_dir, the model "
                "repository folder it reads"
            )
        return self

    @property
    def configured(self) -> bool:
        """Whether Triton models can be served (a managed server or an external URL)."""
        return self.managed or self.url is not None


class KServeSettings(BaseModel):
    """Models whose manifest says ``runtime: "kserve"``: one InferenceService per version,
    applied through the Kubernetes API (``CITYBRAIN_KSERVE__*``); off unless a kubeconfig is
    given or ``in_cluster`` is set."""

    kubeconfig: Path | None = None
    context: str | None = None
    # The gateway runs in the cluster: use the pod's service account.
    in_cluster: bool = False
    namespace: str = "citybrain"
    # Where each version is exported and its predictor downloads it from; {name} is the
    # InferenceService name and {model} the model name. Any fsspec URL the platform can write
    # (s3:// through s3fs and the usual AWS_* variables, AWS_ENDPOINT_URL for MinIO and the
    # like); with export off, any URL KServe reads (pvc://…) that the operator fills.
    storage_uri: str = "s3://citybrain-models/{name}"
    # Write each version to storage_uri before applying its InferenceService.
    export: bool = True
    # "auto": TorchScript on the Triton ServingRuntime, other formats on the platform's own
    # predictor (python -m model_store.kserve.predictor); "triton" or "python" for all.
    predictor: Literal["auto", "triton", "python"] = "auto"
    # The image the platform's predictor runs on (the platform image).
    predictor_image: str = "citybrain:latest"
    # How long the first request (or readiness check) waits for a new InferenceService.
    ready_timeout_s: float = 300.0
    poll_s: float = 2.0
    infer_timeout_s: float = 30.0
    # Route to status.address.url (cluster-local) rather than status.url.
    prefer_cluster_local: bool = True

    @property
    def configured(self) -> bool:
        return self.kubeconfig is not None or self.in_cluster


class TelemetrySettings(BaseModel):
    """Traces and log format (``CITYBRAIN_TELEMETRY__*``; ``marketplace.telemetry``)."""

    # Where spans go: an OpenTelemetry collector's OTLP/HTTP traces URL, e.g.
    # http://otel-collector:4318/v1/traces (needs the ``otlp`` extra). None: no traces.
    otlp_endpoint: str | None = None
    # The service.name the spans carry.
    service_name: str = "citybrain"
    # The platform's log records as one JSON object a line (time, level, logger, message,
    # request_id), for log collectors; plain text lines otherwise.
    json_logs: bool = False


class FederationSettings(BaseModel):
    """A district hub's link to the city (``CITYBRAIN_FEDERATION__*``; docs/federation.md).

    Set ``city_url`` and ``hub_key`` on a hub: ``citybrain federation pull`` then harvests the
    city's catalog, calls on mirrored products are forwarded to the city, and ``citybrain
    federation push`` publishes the hub's own listings there. Both unset: a platform of its own
    (the city itself, or a hub not yet joined).
    """

    # The city platform's base URL, e.g. https://data.city.gov.cn
    city_url: str | None = None
    # The API key the city issued to this district's tenant (scopes catalog:read, catalog:write,
    # infer, data:read, federation). Never logged.
    hub_key: SecretStr | None = Field(default=None, repr=False)
    # Harvest the city's catalog this often from the server process (seconds; 0: only when
    # ``citybrain federation pull`` runs, e.g. from cron).
    pull_interval_seconds: float = Field(default=0.0, ge=0.0)
    # How long one call to the city may take (harvest pages, forwarded calls, pushes).
    timeout_s: float = Field(default=30.0, gt=0)
    # City side: how far a forwarded call's signed time may be from this clock (seconds).
    max_skew_s: float = Field(default=60.0, gt=0, le=600)

    @property
    def joined(self) -> bool:
        """Whether this platform is a hub joined to a city."""
        return bool(self.city_url) and self.hub_key is not None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CITYBRAIN_", env_nested_delimiter="__", extra="ignore"
    )

    data_dir: Path = Path("./var")
    # Empty means SQLite at <data_dir>/citybrain.db, the embedded default.
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    # Largest request body accepted by the JSON API (model uploads have their own limit).
    max_body_bytes: int = 1024 * 1024
    # After a rotation the previous secret keeps working this long, so clients can roll over.
    key_rotation_grace_s: int = 24 * 3600
    # last_used_at of a key is written at most this often (it costs a write per request).
    key_last_used_resolution_s: int = 60
    # How long each readiness check (database, spool, runtimes) may take before it counts as
    # down (/v2/health/ready, /api/v1/health).
    ready_timeout_s: float = Field(default=2.0, gt=0, le=60)
    model_store: ModelStoreSettings = Field(default_factory=ModelStoreSettings)
    billing: BillingSettings = Field(default_factory=BillingSettings)
    oidc: OIDCSettings = Field(default_factory=OIDCSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    triton: TritonSettings = Field(default_factory=TritonSettings)
    kserve: KServeSettings = Field(default_factory=KServeSettings)
    stripe: StripeSettings = Field(default_factory=StripeSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    portal: PortalSettings = Field(default_factory=PortalSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    federation: FederationSettings = Field(default_factory=FederationSettings)

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'citybrain.db').as_posix()}"
        if self.model_store.artifact_url is None:
            self.model_store.artifact_url = str((self.data_dir / "artifacts").resolve())
        if self.billing.spool_dir is None:
            self.billing.spool_dir = self.data_dir / "spool"
        if self.data.staging_dir is None:
            self.data.staging_dir = self.data_dir / "data-staging"
        if self.triton.data_dir is None:
            self.triton.data_dir = self.data_dir / "triton"
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        return _redacted(iter(super().__repr_args__()))
