"""The process's telemetry: where OpenTelemetry spans go, and how log records are written.

The platform's modules take their tracers from ``opentelemetry.trace.get_tracer(__name__)`` and
open spans through :func:`span`, which makes none at all until :func:`configure_tracing` turns
tracing on (off by default: then a span costs a function call). OpenTelemetry lets a process
set its global provider only once, and tracers taken before keep the provider they first saw,
so the provider installed here is installed once and feeds one forwarding span processor; a
later :func:`configure_tracing` (a test's in-memory exporter, a new endpoint) changes where
that processor sends spans, never the provider.

:class:`JsonFormatter` writes each log record as one JSON object a line
(``telemetry.json_logs``), with the id of the request it was logged in.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from contextlib import AbstractContextManager
from datetime import UTC, datetime

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter

from marketplace.config import TelemetrySettings
from marketplace.context import current_request_id

__all__ = [
    "JsonFormatter",
    "configure_logging",
    "configure_tracing",
    "flush_tracing",
    "stop_tracing",
]

log = logging.getLogger("citybrain.telemetry")

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class _Forwarding(SpanProcessor):
    """The installed provider's one processor: passes spans on to ``target`` (None: dropped)."""

    def __init__(self) -> None:
        self.target: SpanProcessor | None = None

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        target = self.target
        if target is not None:
            target.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        target = self.target
        if target is not None:
            target.on_end(span)

    def shutdown(self) -> None:
        target, self.target = self.target, None
        if target is not None:
            target.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        target = self.target
        return target.force_flush(timeout_millis) if target is not None else True


_lock = threading.Lock()
_forwarding: _Forwarding | None = None
# Whether spans go anywhere (ours or another installed provider's).
_active = False
_OFF: AbstractContextManager[None] = contextlib.nullcontext()


def tracing_active() -> bool:
    return _active


def span(tracer: trace.Tracer, name: str) -> AbstractContextManager[object]:
    """``tracer``'s span ``name``, current inside the block; while tracing is off, a shared
    do-nothing context instead: even OpenTelemetry's no-op spans cost some 10 us each
    (contexts attached and detached), and the inference path opens six."""
    return tracer.start_as_current_span(name) if _active else _OFF


def _install_provider(service_name: str) -> _Forwarding | None:
    global _forwarding, _active
    if _forwarding is None:
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        forwarding = _Forwarding()
        provider.add_span_processor(forwarding)
        trace.set_tracer_provider(provider)
        if trace.get_tracer_provider() is not provider:
            # Someone else's provider (an auto-instrumentation agent): spans go where it says.
            log.warning("a tracer provider is installed already: citybrain's is not used")
            _active = True
            return None
        _forwarding = forwarding
    return _forwarding


def configure_tracing(settings: TelemetrySettings, exporter: SpanExporter | None = None) -> bool:
    """Send spans to ``exporter`` (each as it ends: tests, debugging) or else, batched, to
    ``settings.otlp_endpoint``. With neither, tracing is left as it is (off unless turned on
    before). Returns whether spans now go somewhere."""
    if exporter is None and settings.otlp_endpoint is None:
        return False
    processor: SpanProcessor
    if exporter is not None:
        processor = SimpleSpanProcessor(exporter)
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as e:
            raise RuntimeError(
                "telemetry.otlp_endpoint is set but the OTLP exporter is not installed "
                "(pip install 'citybrain[otlp]')"
            ) from e
        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint))
    global _active
    with _lock:
        forwarding = _install_provider(settings.service_name)
        if forwarding is None:
            processor.shutdown()
            return False
        previous, forwarding.target = forwarding.target, processor
        _active = True
    if previous is not None:
        previous.shutdown()
    return True


def flush_tracing() -> None:
    """Send the spans still queued now (an app's shutdown; the provider flushes at exit too)."""
    with _lock:
        forwarding = _forwarding
    if forwarding is not None:
        forwarding.force_flush()


def stop_tracing() -> None:
    """Flush the spans still queued and stop tracing (no spans are made from now on)."""
    global _active
    with _lock:
        forwarding = _forwarding
        _active = False
    if forwarding is not None:
        forwarding.shutdown()


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object: time (UTC, ISO 8601), level, logger, message, and
    request_id when the record was logged while serving a request; a traceback as exc_info."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = current_request_id()
        if rid != "-":
            entry["request_id"] = rid
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str, settings: TelemetrySettings) -> None:
    """The root logger at ``level``, writing to stderr plain text lines or JSON ones
    (``json_logs``); like ``logging.basicConfig``, a root logger with handlers is left as is."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if settings.json_logs else logging.Formatter(_TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
