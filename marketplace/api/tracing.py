"""One OpenTelemetry server span per HTTP request, with the request id on it
(``citybrain.request_id``); ``marketplace.telemetry`` says where spans go (nowhere by default,
and then the fast path makes none).

FastAPI opens the span of every request it answers itself (its native telemetry: method, route
template, status, an incoming ``traceparent``); the request id middleware tags it
(:func:`tag_current_span`). The inference fast path (``marketplace.api.fastpath``) never enters
FastAPI's stack, so it opens a span of the same shape with :func:`request_span`; the gateway's
steps are its children.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, StatusCode

from marketplace.telemetry import tracing_active

REQUEST_ID_ATTRIBUTE = "citybrain.request_id"

_tracer = trace.get_tracer(__name__)


@contextmanager
def request_span(method: str, request_id: str) -> Iterator[Span]:
    """The request's span, current for the code inside (exceptions are recorded on it); a
    non-recording one, never made current, while tracing is off (``marketplace.telemetry``)."""
    if not tracing_active():
        yield INVALID_SPAN
        return
    with _tracer.start_as_current_span(method, kind=SpanKind.SERVER) as span:
        if span.is_recording():
            span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
            span.set_attribute("http.request.method", method)
        yield span


def end_request(span: Span, method: str, route: str | None, status: int) -> None:
    """Name the span for its route and mark its outcome (server errors are span errors)."""
    if not span.is_recording():
        return
    if route is not None:
        span.set_attribute("http.route", route)
        span.update_name(f"{method} {route}")
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(StatusCode.ERROR)


def tag_current_span(request_id: str) -> None:
    """Put the request id on the span FastAPI opened for this request (its native telemetry:
    one server span per request with method, route and status)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
