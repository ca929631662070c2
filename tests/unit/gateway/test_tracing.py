"""Traces of an inference call (a request span, a child per gateway step) and JSON log lines."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from marketplace.api.tracing import REQUEST_ID_ATTRIBUTE
from marketplace.config import TelemetrySettings
from marketplace.telemetry import JsonFormatter, configure_tracing, stop_tracing
from tests.unit.gateway.conftest import Models
from tests.unit.gateway.test_infer import _infer, _json_body

STEPS = {"gateway.auth", "gateway.resolve", "gateway.quota", "gateway.runtime", "gateway.meter"}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert configure_tracing(TelemetrySettings(service_name="citybrain-test"), exporter=exporter)
    yield exporter
    stop_tracing()  # later tests' spans are dropped, not kept in this exporter


def test_an_infer_call_yields_a_request_span_with_a_child_per_step(
    models: Models, spans: InMemorySpanExporter
) -> None:
    spans.clear()  # the uploads and publishing of the fixture
    rid = "trace-test-0001"
    r = _infer(models.city, models.public, _json_body(), **{"X-Request-Id": rid})
    assert r.status_code == 200, r.text

    finished = spans.get_finished_spans()
    requests = [s for s in finished if s.attributes and s.attributes.get(REQUEST_ID_ATTRIBUTE)]
    assert len(requests) == 1
    request = requests[0]
    assert request.attributes is not None
    assert request.attributes[REQUEST_ID_ATTRIBUTE] == rid
    assert request.attributes["http.request.method"] == "POST"
    assert request.attributes["http.route"] == "/v2/models/{name}/infer"
    assert request.attributes["http.response.status_code"] == 200
    assert request.name == "POST /v2/models/{name}/infer"
    assert request.resource.attributes["service.name"] == "citybrain-test"

    children = {
        s.name: s
        for s in finished
        if s.parent is not None and s.parent.span_id == request.context.span_id
    }
    assert set(children) == STEPS
    for step in STEPS:
        assert children[step].context.trace_id == request.context.trace_id


def test_a_denied_call_stops_its_trace_at_the_failing_step(
    models: Models, spans: InMemorySpanExporter
) -> None:
    spans.clear()
    r = _infer(
        models.city, models.public, _json_body(), who=None, Authorization="Bearer cbk_revoked"
    )
    assert r.status_code == 401
    finished = spans.get_finished_spans()
    names = {s.name for s in finished}
    assert "gateway.auth" in names
    (request,) = [s for s in finished if s.name.startswith("POST ")]
    assert request.attributes is not None
    assert request.attributes["http.response.status_code"] == 401
    assert names.isdisjoint({"gateway.resolve", "gateway.runtime", "gateway.meter"})


def test_routes_fastapi_answers_carry_the_request_id_on_its_span(
    models: Models, spans: InMemorySpanExporter
) -> None:
    spans.clear()
    r = models.city.client.get(f"/v2/models/{models.public}", headers={"X-Request-Id": "meta-0001"})
    assert r.status_code == 200
    (request,) = [s for s in spans.get_finished_spans() if s.name == "GET /v2/models/{name}"]
    assert request.attributes is not None
    assert request.attributes[REQUEST_ID_ATTRIBUTE] == "meta-0001"
    assert request.attributes["http.route"] == "/v2/models/{name}"


def test_json_logs_are_one_parseable_object_a_line_with_the_request_id(models: Models) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("citybrain.access")
    level = access.level
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        rid = "json-log-0001"
        r = _infer(models.city, models.public, _json_body(), **{"X-Request-Id": rid})
        assert r.status_code == 200
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    mine = [e for e in lines if e.get("request_id") == rid]
    assert len(mine) == 1
    entry = mine[0]
    assert entry["logger"] == "citybrain.access"
    assert entry["level"] == "INFO"
    assert f"/v2/models/{models.public}/infer 200" in entry["message"]
    assert set(entry) >= {"time", "level", "logger", "message", "request_id"}


def test_the_json_logs_setting_makes_the_root_handler_write_json() -> None:
    # A process of its own: pytest's root logger has handlers already, which basicConfig
    # (like the server's logging set-up) leaves alone.
    script = (
        "import logging\n"
        "from marketplace.config import TelemetrySettings\n"
        "from marketplace.context import request_id_var\n"
        "from marketplace.telemetry import configure_logging\n"
        "configure_logging('info', TelemetrySettings(json_logs=True))\n"
        "request_id_var.set('json-setting-01')\n"
        "logging.getLogger('citybrain.test').info('hello %s', 'there')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    (line,) = done.stderr.splitlines()
    entry = json.loads(line)
    assert entry["message"] == "hello there"
    assert entry["logger"] == "citybrain.test"
    assert entry["request_id"] == "json-setting-01"
