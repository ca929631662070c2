"""One Settings class for the whole process, read from ``CITYBRAIN_*`` variables.

Nested sections use a double underscore: ``CITYBRAIN_MODEL_STORE__MAX_UPLOAD_BYTES``.
Built once at the entry point (CLI or app factory) and passed down.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ModelStoreSettings(BaseModel):
    # Where artifacts live: a local directory (default: <data_dir>/artifacts) or any fsspec URL.
    artifact_url: str | None = None
    max_upload_bytes: int = 512 * 1024 * 1024
    # Resident-model budget of the embedded runtime; least recently used models are unloaded.
    memory_budget_bytes: int = 2 * 1024 * 1024 * 1024
    max_loaded_models: int = 16


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


class OIDCSettings(BaseModel):
    """Portal users' bearer tokens from a Keycloak realm (off unless server_url is set)."""

    # Keycloak's base URL, e.g. https://sso.city.gov/ (realms live under /realms/<realm>).
    server_url: str | None = None
    realm: str = "citybrain"
    client_id: str = "citybrain-platform"
    client_secret: str | None = None
    audience: str = "account"
    # The claim that names the user's tenant (a tenant slug).
    tenant_claim: str = "tenant"
    # Clock skew tolerated on exp/nbf/iat, in seconds: a few, never a minute.
    leeway_s: int = 5
    # Also ask the realm whether the token is still active (needs client_secret; costs a call).
    introspect: bool = False
    jwks_ttl_s: int = 300


class BillingSettings(BaseModel):
    # Local spool where usage events are made durable before a metered response leaves.
    spool_dir: Path | None = None
    flush_interval_s: float = 0.5
    flush_batch_size: int = 5000
    idempotency_window_s: int = 48 * 3600


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
    model_store: ModelStoreSettings = Field(default_factory=ModelStoreSettings)
    billing: BillingSettings = Field(default_factory=BillingSettings)
    oidc: OIDCSettings = Field(default_factory=OIDCSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'citybrain.db').as_posix()}"
        if self.model_store.artifact_url is None:
            self.model_store.artifact_url = str((self.data_dir / "artifacts").resolve())
        if self.billing.spool_dir is None:
            self.billing.spool_dir = self.data_dir / "spool"
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
