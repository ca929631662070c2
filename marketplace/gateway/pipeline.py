"""The inference request path, top to bottom.

Every ``POST /v2/models/{name}[/versions/{v}]/infer`` goes through these steps, in order:

1. :func:`authenticate` — the API key (``Authorization: Bearer`` or ``X-API-Key``) against the
   database, every call, so a revoked key fails on its very next request;
2. :func:`resolve` — the handle and version to a model version (cached briefly, see
   :mod:`marketplace.gateway.resolve`);
3. :func:`authorize` — the tier policy; what the caller may not see answers 404 exactly like a
   missing model;
4. :meth:`Quota.check` — quotas and rate limits (none yet: the seam the quotas issue fills);
5. :func:`run` — decode the v2 request, check it against the signature, run the runtime;
6. :func:`meter` — one durable usage event per successful call (idempotent per
   ``Idempotency-Key``); a call whose event cannot be made durable fails with 503.

Step 1 reads the key on a raw driver connection (``marketplace.keys.reader``: an async
psycopg pool on PostgreSQL, a connection of its own on SQLite), on the event loop; step 2 is
usually answered by the resolution cache. A cache miss or a grant check takes one short
read-only session (in a worker thread on PostgreSQL). Failed calls are never metered.
:class:`Gateway` strings the steps together and also answers the metadata and readiness routes.
Nothing here knows HTTP frameworks: errors are domain errors that carry their status
(``marketplace.errors``, ``model_store.errors``, ``billing.errors``).

Who may use a model (ARCHITECTURE.md's tier table; grants: marketplace.access):

| tier         | metadata visible to            | inference allowed to                   |
|--------------|--------------------------------|----------------------------------------|
| public       | anyone                         | any key with the ``infer`` scope       |
| restricted   | authenticated tenants          | holders of an access grant (``infer``) |
| confidential | government tenants             | government tenants with a grant        |
| secret       | the owner                      | the owner                              |

Unpublished (draft, submitted) models are served to their owner only, by explicit version.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from billing import Meter
from marketplace.access.service import grant_in_force
from marketplace.catalog import policy
from marketplace.catalog.policy import can_see
from marketplace.constants import Scope
from marketplace.context import Caller, Principal
from marketplace.errors import (
    BadRequestError,
    ForbiddenError,
    NotFoundError,
    UnauthenticatedError,
    UnavailableError,
)
from marketplace.gateway.constants import (
    CALL_UNIT,
    EXTENSIONS,
    IDEMPOTENT_REPLAYED_HEADER,
    INFERENCE_HEADER_CONTENT_LENGTH,
    PLATFORMS,
    SERVER_NAME,
)
from marketplace.gateway.metering import check_idempotency_key, record_usage
from marketplace.gateway.metrics import UNRESOLVED, GatewayMetrics
from marketplace.gateway.resolve import MISSING, ResolveCache, ResolvedModel, resolve_model
from marketplace.keys.reader import KeyReader
from marketplace.keys.service import authenticate_token, check_key, parse_token, touch_key
from marketplace.tables import utcnow
from model_store import BlobStore, ModelManifest, QueueFullError, Runtime, RuntimeStats
from model_store.errors import ModelUnavailableError
from model_store.v2 import (
    InferRequest,
    check_inputs,
    check_requested_outputs,
    decode_request,
    encode_response,
    model_metadata,
)

__all__ = [
    "Gateway",
    "InferCall",
    "NoQuota",
    "Quota",
    "Reply",
    "Runtimes",
    "ServingState",
    "authenticate",
    "authorize",
    "meter",
    "presented_token",
    "resolve",
    "run",
]

Arrays = dict[str, np.ndarray[Any, Any]]

# Bodies larger than this are decoded in a worker thread, so big JSON never stalls the loop.
_DECODE_INLINE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class InferCall:
    """One inference request, as the HTTP adapter hands it over.

    Attributes:
        name: The model name from the path (a product handle).
        version: The version from the path, or None for the latest.
        token: The presented API key, or None.
        body: The raw request body.
        header_length: ``Inference-Header-Content-Length`` (binary tensors), or None for JSON.
        idempotency_key: The client's ``Idempotency-Key``, if any.
        request_id: The platform's request id.
        request_id_chosen: Whether the client chose ``request_id`` (``X-Request-Id``); then it
            cannot name the usage event, which takes a fresh id of its own.
        principal: A caller the platform has authenticated already (the portal's signed-in
            user, whose credential may be a realm token rather than a key); step 1 then takes
            it instead of reading ``token``. Every later step is the same.
    """

    name: str
    version: str | None
    token: str | None
    body: bytes
    header_length: str | None
    idempotency_key: str | None
    request_id: str
    request_id_chosen: bool = False
    principal: Principal | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """A response body and the headers to send with it (status 200), and who was served."""

    body: bytes
    headers: dict[str, str]
    principal: Principal | None = None


def presented_token(authorization: str | None, api_key: str | None) -> str | None:
    """The API key from ``Authorization: Bearer <key>`` or ``X-API-Key``, or None."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise UnauthenticatedError("Authorization header must be 'Bearer <API key>'")
        return value.strip()
    return api_key.strip() if api_key else None


# --------------------------------------------------------------------------- 1. authenticate


def authenticate(session: Session | Connection, token: str | None) -> Caller:
    """The key's principal (401 for a bad key), or None for an anonymous caller.

    Hits the database every time: nothing cached could keep a revoked key working. (The key's
    last-used time is stamped in the background: :meth:`Gateway._stamp_last_used`.)
    """
    if token is None:
        return None
    return authenticate_token(session, token)


# --------------------------------------------------------------------------- 2. resolve


def resolve(
    session: Session | Connection, cache: ResolveCache, name: str, version: str | None
) -> ResolvedModel | None:
    """The model product ``name`` and its addressed version (None: no such model)."""
    return resolve_model(session, cache, name, version)


# --------------------------------------------------------------------------- 3. authorize


def not_found(name: str, version: str | None) -> NotFoundError:
    """The one answer for a model that is missing or that the caller may not see."""
    return NotFoundError(f"model '{name}' not found")


def visible_version(
    caller: Caller, model: ResolvedModel | None, name: str, version: str | None
) -> ResolvedModel:
    """The model if the caller may see it and the addressed version exists; else 404.

    Invisible and missing models answer the same; only for a visible model does the message
    say that the version is what is missing.
    """
    if model is None or not can_see(caller, model.listing):
        raise not_found(name, version)
    if model.version is None:
        if version is not None:
            raise NotFoundError(f"model '{name}' has no version {version!r}")
        raise NotFoundError(f"model '{name}' has no published version; address a version")
    return model


def needs_grant(caller: Caller, model: ResolvedModel | None) -> bool:
    """Whether using ``model`` takes an access grant: restricted or confidential, not one's own."""
    return model is not None and policy.needs_grant(caller, model.listing)


def find_grant(conn: Session | Connection, caller: Caller, model: ResolvedModel | None) -> bool:
    """Whether an access grant with the ``infer`` scope is in force for this call (checked on
    every call, never cached: an expired or revoked grant stops on the very next one)."""
    if caller is None or model is None or not needs_grant(caller, model):
        return False
    return grant_in_force(conn, caller.tenant_id, model.product_id, Scope.INFER.value)


def authorize(
    caller: Caller, model: ResolvedModel | None, call: InferCall, *, granted: bool = False
) -> Principal:
    """Apply the tier policy to an inference call; return the principal to bill.

    Public models serve any key with ``infer``; restricted ones, holders of an access grant;
    confidential ones, government tenants with a grant; secret ones, their owner only.

    Raises:
        UnauthenticatedError: No key.
        NotFoundError: Missing, or invisible to the caller (indistinguishable).
        ForbiddenError: Visible, but the key lacks ``infer`` or the caller holds no grant.
    """
    if caller is None:
        raise UnauthenticatedError(
            "an API key is required (Authorization: Bearer <key> or X-API-Key)"
        )
    served = visible_version(caller, model, call.name, call.version)
    verdict = policy.use_verdict(caller, served.listing, scope=Scope.INFER.value, granted=granted)
    if verdict is policy.Use.NO_SCOPE:
        raise ForbiddenError("this API key lacks the 'infer' scope", scope=Scope.INFER.value)
    if verdict is policy.Use.HIDDEN:
        raise not_found(call.name, call.version)
    if verdict is policy.Use.NO_GRANT:
        raise ForbiddenError(
            f"model '{call.name}' is {served.tier}: using it needs an access grant "
            "(POST /api/v1/access-requests)",
            reason="no-grant",
        )
    return caller


# --------------------------------------------------------------------------- 4. quota


class Quota(Protocol):
    """Quotas and rate limits per key, tenant and product (marketplace.gateway.quota).

    ``check`` raises ``QuotaExceededError`` (429 with ``Retry-After``) to refuse a call.
    """

    async def check(self, principal: Principal, model: ResolvedModel) -> None: ...

    async def add_units(self, principal: Principal, model: ResolvedModel, units: float) -> None:
        """Count a successful call's metered units against unit budgets."""


class NoQuota:
    """Every call is within quota."""

    async def check(self, principal: Principal, model: ResolvedModel) -> None:
        return None

    async def add_units(self, principal: Principal, model: ResolvedModel, units: float) -> None:
        return None


# --------------------------------------------------------------------------- 5. run


def decode(call: InferCall) -> InferRequest:
    """Decode the body (JSON, or binary tensors when the header length is given)."""
    header_length: int | None = None
    if call.header_length is not None:
        try:
            header_length = int(call.header_length)
        except ValueError:
            raise BadRequestError(
                f"{INFERENCE_HEADER_CONTENT_LENGTH} must be an integer, got {call.header_length!r}"
            ) from None
    return decode_request(call.body, header_length)


RuntimeFactory = Callable[[], Runtime]
"""Makes a runtime on first use (e.g. a managed Triton that starts nothing until asked)."""

RUNTIME_SETTINGS = {
    "triton": "CITYBRAIN_TRITON__URL and __REPOSITORY_DIR, or CITYBRAIN_TRITON__MANAGED=true",
    "kserve": "CITYBRAIN_KSERVE__KUBECONFIG and __NAMESPACE",
}
"""What configures each optional runtime (named in the 503 when it is not configured)."""


class Runtimes(Runtime):
    """The runtimes of one deployment, by the manifest ``runtime`` name they serve, as one
    :class:`~model_store.Runtime`: each key is served by the runtime it was registered with
    (``embedded`` always; ``triton`` and ``kserve`` when configured, made on first use).

    Args:
        embedded: The in-process runtime.
        backends: More runtimes (or factories of them) by name.
    """

    def __init__(
        self, embedded: Runtime, backends: Mapping[str, Runtime | RuntimeFactory] | None = None
    ) -> None:
        self.embedded = embedded
        self._wanted: dict[str, Runtime | RuntimeFactory] = {"embedded": embedded}
        self._wanted.update(backends or {})
        self._made: dict[str, Runtime] = {"embedded": embedded}
        self._by_key: dict[str, Runtime] = {}

    @property
    def names(self) -> list[str]:
        """The runtime names this deployment serves."""
        return list(self._wanted)

    def made(self, name: str) -> Runtime | None:
        """The runtime ``name`` if it exists yet (factories run on first use)."""
        return self._made.get(name)

    def get(self, name: str) -> Runtime:
        """The runtime serving manifests whose ``runtime`` is ``name``.

        Raises:
            ModelUnavailableError: This deployment does not run it (503, naming it).
        """
        made = self._made.get(name)
        if made is not None:
            return made
        wanted = self._wanted.get(name)
        if wanted is None:
            hint = RUNTIME_SETTINGS.get(name)
            raise ModelUnavailableError(
                f"the {name} runtime is not configured on this deployment"
                + (f" (set {hint})" if hint else "")
            )
        made = wanted if isinstance(wanted, Runtime) else wanted()
        self._made[name] = made
        return made

    def _for_key(self, key: str) -> Runtime:
        runtime = self._by_key.get(key)
        if runtime is None:
            raise ModelUnavailableError(f"model '{key}' is not registered")
        return runtime

    def register(self, key: str, manifest: ModelManifest, artifact_path: Path) -> None:
        current = self._by_key.get(key)
        runtime = self.get(manifest.runtime)
        if current is not None and current is not runtime:
            raise ValueError(f"model '{key}' is registered on another runtime")
        runtime.register(key, manifest, artifact_path)
        self._by_key[key] = runtime

    async def load(self, key: str, manifest: ModelManifest, artifact_path: Path) -> None:
        self.register(key, manifest, artifact_path)
        await self._by_key[key].load(key, manifest, artifact_path)

    async def infer(self, key: str, inputs: Arrays) -> Arrays:
        return await self._for_key(key).infer(key, inputs)

    def is_ready(self, key: str) -> bool:
        runtime = self._by_key.get(key)
        return runtime is not None and runtime.is_ready(key)

    async def unload(self, key: str) -> None:
        runtime = self._by_key.pop(key, None)
        if runtime is not None:
            await runtime.unload(key)

    def stats(self) -> RuntimeStats:
        parts = [runtime.stats() for runtime in self._made.values()]
        return RuntimeStats(
            models={k: v for part in parts for k, v in part.models.items()},
            memory_used_bytes=sum(p.memory_used_bytes for p in parts),
            memory_budget_bytes=sum(p.memory_budget_bytes for p in parts),
            loaded_models=sum(p.loaded_models for p in parts),
        )

    async def close(self) -> None:
        """Close every runtime made (a managed Triton server stops)."""
        made, self._made = self._made, {}
        self._by_key.clear()
        for runtime in made.values():
            await runtime.close()


class ServingState:
    """What the gateway knows about models in the runtimes: which are registered (on which
    runtime, by the manifest's ``runtime``), and how many calls to each unbatched model are in
    flight (the runtime bounds batched queues itself).

    Embedded models are registered (loaded on first call); Triton and KServe models are loaded
    at once (exported and loaded in Triton, or their InferenceService applied and awaited), so
    that their readiness means what it says.
    """

    def __init__(
        self,
        runtime: Runtime,
        blobs: BlobStore,
        metrics: GatewayMetrics,
        backends: Mapping[str, Runtime | RuntimeFactory] | None = None,
    ):
        self.runtime = runtime if isinstance(runtime, Runtimes) else Runtimes(runtime, backends)
        self.blobs = blobs
        self.metrics = metrics
        self.registered: dict[str, str] = {}  # runtime key → artifact digest
        self.in_flight: dict[str, int] = {}

    async def ensure_registered(self, model: ResolvedModel) -> str:
        key = model.runtime_key
        assert model.digest is not None and model.manifest is not None
        if self.registered.get(key) == model.digest:
            return key
        manifest = model.manifest
        backend = self.runtime.get(manifest.runtime)  # 503 naming it when not configured
        path = await asyncio.to_thread(self.blobs.local_path, model.digest)
        try:
            self.runtime.register(key, manifest, path)
        except ValueError:  # the handle was deleted and made again: a new artifact
            await self.runtime.unload(key)
            self.runtime.register(key, manifest, path)
        if backend is not self.runtime.embedded:
            await self.runtime.load(key, manifest, path)
        self.metrics.name_key(key, model.label)
        self.registered[key] = model.digest
        return key


async def run(state: ServingState, model: ResolvedModel, request: InferRequest) -> Arrays:
    """Check the request against the signature and run the model on the runtime."""
    manifest = model.manifest
    assert manifest is not None
    arrays = check_inputs(request, manifest.inputs)
    check_requested_outputs(request, manifest.outputs)
    key = await state.ensure_registered(model)
    if manifest.batched:
        return await state.runtime.infer(key, arrays)
    # Unbatched models run one request at a time: bound how many may wait, like the batcher.
    waiting = state.in_flight.get(key, 0)
    if waiting > manifest.batching.max_queue_size:
        raise QueueFullError(f"model '{model.handle}' has {waiting} requests waiting")
    state.in_flight[key] = waiting + 1
    try:
        return await state.runtime.infer(key, arrays)
    finally:
        state.in_flight[key] -= 1


# --------------------------------------------------------------------------- 6. meter


def usage_quantity(model: ResolvedModel, outputs: Arrays) -> tuple[str, float]:
    """The call's billing unit and quantity, as the manifest's metering spec says: one call,
    or the sum of an output (e.g. the audio seconds a speech model transcribed)."""
    assert model.manifest is not None
    spec = model.manifest.metering
    if spec.quantity_output is None:
        return spec.unit, 1.0
    values = outputs.get(spec.quantity_output)
    quantity = float(np.sum(values)) if values is not None else 0.0
    return spec.unit, max(quantity, 0.0)


async def meter(
    usage: Meter,
    principal: Principal,
    model: ResolvedModel,
    call: InferCall,
    latency_ms: float,
    *,
    unit: str = CALL_UNIT,
    quantity: float = 1.0,
    others_in_flight: int = 0,
) -> bool:
    """Record the call's usage event before the response goes out.

    ``others_in_flight``: how many other calls are in progress in this process; with any, the
    event's fsync is made off the event loop while they go on (a lone call makes it on the
    loop, cheaper), and under load several calls' events share it.

    Returns True if this ``Idempotency-Key`` was already recorded for the tenant (a retry):
    then nothing is recorded again.
    """
    assert model.version is not None
    recorded = await record_usage(
        usage,
        principal,
        product=model.handle,
        product_id=model.product_id,
        version=model.version,
        unit=unit,
        quantity=quantity,
        latency_ms=latency_ms,
        idempotency_key=call.idempotency_key,
        request_id=call.request_id,
        request_id_chosen=call.request_id_chosen,
        others_in_flight=others_in_flight,
    )
    return recorded.replayed


# --------------------------------------------------------------------------- the gateway


class Gateway:
    """The v2 data plane of the platform: the steps above, plus metadata and readiness."""

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        cache: ResolveCache,
        runtime: Runtime,
        blobs: BlobStore,
        usage: Meter,
        metrics: GatewayMetrics,
        quota: Quota | None = None,
        last_used_resolution: timedelta | None = None,
        version: str = "",
        metering: bool = True,
        backends: Mapping[str, Runtime | RuntimeFactory] | None = None,
        write_factory: sessionmaker[Session] | None = None,
        inline_lookup: bool = False,
        keys: KeyReader | None = None,
    ) -> None:
        self.session_factory = session_factory
        self._read_bind: Engine = session_factory.kw["bind"]
        # Sessions for the gateway's one write, the key's last-used stamp (default: the same).
        self.write_factory = write_factory or session_factory
        self.inline_lookup = inline_lookup
        # Step 1 on a raw driver connection (marketplace.keys.reader); None: in the session.
        self.keys = keys
        self._stamped: dict[str, float] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.cache = cache
        self.usage = usage
        # False (billing.metering, for benchmarks and internal deployments): skip step 6.
        self.metering = metering
        self.metrics = metrics
        self.quota: Quota = quota or NoQuota()
        # runtime: the embedded runtime (or a Runtimes); backends: triton, kserve by name.
        self.serving = ServingState(runtime, blobs, metrics, backends)
        self.last_used_resolution = last_used_resolution
        self.version = version
        # Inference calls in progress (on this process's one event loop), for step 6.
        self.in_flight = 0

    # steps 1 + 2, one short read-only session
    def _lookup_sync(
        self, token: str | None, name: str, version: str | None, caller: Caller = None
    ) -> tuple[Caller, Any, bool]:
        # A plain Core connection: the ORM's session machinery would cost more than the queries.
        with self._read_bind.connect() as conn:
            if caller is None:
                caller = authenticate(conn, token)
            model = resolve(conn, self.cache, name, version)
            granted = find_grant(conn, caller, model)
        return caller, model, granted

    async def close(self) -> None:
        """Release the key reader's connections."""
        if self.keys is not None:
            await self.keys.close()

    async def lookup(
        self,
        token: str | None,
        name: str,
        version: str | None,
        principal: Principal | None = None,
    ) -> tuple[Caller, ResolvedModel | None, bool]:
        """Steps 1 and 2 (and whether a grant is in force), in one short read-only session.
        ``principal``: a caller authenticated already (``InferCall.principal``).

        On SQLite (a local file, sub-millisecond reads) it runs on the event loop: a thread
        hop would cost more than the queries. Elsewhere it runs in a worker thread.
        """
        caller: Caller = principal
        if principal is not None:
            pass  # authenticated by the portal: resolution and the grant check below
        elif token is None:  # anonymous: resolution alone, often from the cache
            hit = self.cache.get((name, version))
            if hit is not MISSING:
                return None, hit, False
        elif self.keys is not None:
            # The common call: the key read on the loop, the model from the cache, no grant.
            key_id, secret = parse_token(token)
            caller = check_key(await self.keys.read(key_id), key_id, secret, utcnow())
            hit = self.cache.get((name, version))
            if hit is not MISSING and not needs_grant(caller, hit):
                self._stamp_last_used(caller)
                return caller, hit, False
        if self.inline_lookup:
            result = self._lookup_sync(token, name, version, caller)
        else:
            result = await asyncio.to_thread(self._lookup_sync, token, name, version, caller)
        if result[0] is not None:
            self._stamp_last_used(result[0])
        return result

    def _stamp_last_used(self, principal: Principal) -> None:
        """Record when a key was last used, at most once per resolution period per process,
        in the background: the write never holds up a call (nor waits on SQLite's lock)."""
        if self.last_used_resolution is None or principal.key_id is None:
            return
        now = time.monotonic()
        last = self._stamped.get(principal.key_id)
        if last is not None and now - last < self.last_used_resolution.total_seconds():
            return
        self._stamped[principal.key_id] = now
        task = asyncio.get_running_loop().create_task(
            asyncio.to_thread(self._stamp_sync, principal.key_id)
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _stamp_sync(self, key_id: str) -> None:
        try:
            with self.write_factory() as session, session.begin():
                touch_key(session, key_id)
        except OperationalError:  # busy: the next period's call stamps it
            self._stamped.pop(key_id, None)

    async def infer(self, call: InferCall) -> Reply:
        """Serve one inference call through every step; count it in the metrics."""
        started = time.perf_counter()
        label = UNRESOLVED
        self.in_flight += 1
        try:
            check_idempotency_key(call.idempotency_key)
            caller, model, granted = await self.lookup(
                call.token, call.name, call.version, call.principal
            )
            principal = authorize(caller, model, call, granted=granted)
            assert model is not None
            label = model.label
            await self.quota.check(principal, model)
            if len(call.body) > _DECODE_INLINE_BYTES:
                request = await asyncio.to_thread(decode, call)
            else:
                request = decode(call)
            outputs = await run(self.serving, model, request)
            body, headers = encode_response(call.name, str(model.version), outputs, request)
            latency_ms = (time.perf_counter() - started) * 1000.0
            unit, quantity = usage_quantity(model, outputs)
            replayed = self.metering and await meter(
                self.usage,
                principal,
                model,
                call,
                latency_ms,
                unit=unit,
                quantity=quantity,
                others_in_flight=self.in_flight - 1,
            )
            if replayed:
                headers[IDEMPOTENT_REPLAYED_HEADER] = "true"
            else:
                await self.quota.add_units(principal, model, quantity)
        except Exception as e:
            self.metrics.observe(label, getattr(e, "status", 500), time.perf_counter() - started)
            raise
        finally:
            self.in_flight -= 1
        self.metrics.observe(label, 200, time.perf_counter() - started)
        return Reply(body, headers, principal)

    async def visible(self, token: str | None, name: str, version: str | None) -> ResolvedModel:
        caller, model, _ = await self.lookup(token, name, version)
        return visible_version(caller, model, name, version)

    async def model_metadata(
        self, token: str | None, name: str, version: str | None
    ) -> Mapping[str, Any]:
        """``GET /v2/models/{name}[/versions/{v}]``: what the caller may see of the model."""
        model = await self.visible(token, name, version)
        manifest = model.manifest
        assert manifest is not None
        return model_metadata(
            name,
            [str(v) for v in model.versions],
            PLATFORMS.get(manifest.format, manifest.format),
            manifest.inputs,
            manifest.outputs,
        )

    async def model_ready(self, token: str | None, name: str, version: str | None) -> bool:
        """Whether a visible model version can serve now (registers it; loading stays lazy)."""
        model = await self.visible(token, name, version)
        try:
            key = await self.serving.ensure_registered(model)
        except ModelUnavailableError:
            return False
        except Exception as e:  # a missing or corrupt blob
            raise UnavailableError(f"model '{name}' is not available") from e
        return self.serving.runtime.is_ready(key)

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": self.version, "extensions": list(EXTENSIONS)}

    def is_ready(self) -> bool:
        """Ready when usage can be metered (a call that cannot be billed is refused)."""
        return bool(self.usage.status()["spool_available"])
