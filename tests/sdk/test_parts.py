"""The SDK's parts without a server: the v2 tensor codec, the mapping of error answers to typed
exceptions, the retry decisions, query plans, the config file, and what importing it pulls in."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
from citybrain_sdk import (
    APIError,
    BadRequest,
    InternalError,
    NotFound,
    QuotaExceeded,
    Retry,
    Unauthorized,
    Unavailable,
    ValidationError,
    raise_for_status,
)
from citybrain_sdk.cli import config
from citybrain_sdk.errors import error_for
from citybrain_sdk.resources.query import query_body
from citybrain_sdk.tensors import HEADER_CONTENT_LENGTH, decode_response, encode_request

ROOT = Path(__file__).resolve().parents[2]


def _answer(status: int, body: object = None, **headers: str) -> httpx.Response:
    content = json.dumps(body).encode() if body is not None else b""
    return httpx.Response(status, content=content, headers=headers)


# --------------------------------------------------------------------------- tensors


def _echo(body: bytes, headers: dict[str, str]) -> tuple[bytes, str]:
    """What a v2 server returns for outputs equal to the inputs (binary when asked so): the
    body and its ``Inference-Header-Content-Length``."""
    length = int(headers.get(HEADER_CONTENT_LENGTH, len(body)))
    doc = json.loads(body[:length])
    outputs = [
        {k: v for k, v in entry.items() if k in ("name", "datatype", "shape", "data", "parameters")}
        for entry in doc["inputs"]
    ]
    header = json.dumps({"model_name": "echo", "outputs": outputs}).encode()
    return header + body[length:], str(len(header))


@pytest.mark.parametrize("binary", [True, False])
def test_tensors_survive_the_round_trip(binary: bool) -> None:
    inputs = {
        "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
        "i64": np.array([[-(2**40), 7]], dtype=np.int64),
        "flag": np.array([True, False, True]),
        "half": np.array([0.5, -1.25], dtype=np.float16),
        "text": np.array([["浙A·12345", ""], ["b", "ccc"]], dtype=object),
    }
    body, headers = encode_request(inputs, binary=binary)
    assert (HEADER_CONTENT_LENGTH in headers) is binary
    echoed, length = _echo(body, headers)
    result = decode_response(echoed, {HEADER_CONTENT_LENGTH: length} if binary else {})
    for name, array in inputs.items():
        got = result[name]
        assert got.shape == array.shape
        if name == "text":
            assert got.tolist() == [[s.encode() for s in row] for row in array.tolist()]
        else:
            assert got.dtype == array.dtype
            np.testing.assert_array_equal(got, array)
            assert got.flags.writeable


def test_binary_request_layout_is_the_v2_extension() -> None:
    flow = np.ones((2, 16), np.float32)
    body, headers = encode_request({"flow": flow})
    length = int(headers[HEADER_CONTENT_LENGTH])
    doc = json.loads(body[:length])
    assert doc["inputs"] == [
        {
            "name": "flow",
            "datatype": "FP32",
            "shape": [2, 16],
            "parameters": {"binary_data_size": 128},
        }
    ]
    assert doc["parameters"] == {"binary_data_output": True}
    assert body[length:] == flow.tobytes()
    _, wanted = encode_request({"flow": flow}, outputs=["smoothed"])
    assert HEADER_CONTENT_LENGTH in wanted


def test_a_dtype_without_a_v2_datatype_is_refused() -> None:
    with pytest.raises(TypeError, match="complex"):
        encode_request({"z": np.ones(2, np.complex64)})


# --------------------------------------------------------------------------- errors


def test_codes_map_to_their_classes_statuses_to_theirs() -> None:
    body = {"error": "model not ready", "code": "ModelUnavailable", "request_id": "r1"}
    e = error_for(_answer(503, body))
    assert isinstance(e, Unavailable) and e.code == "ModelUnavailable" and e.request_id == "r1"
    assert isinstance(
        error_for(_answer(422, {"error": "bad", "code": "InvalidArtifact"})), ValidationError
    )
    assert isinstance(
        error_for(_answer(400, {"error": "x", "code": "InvalidUsageEvent"})), BadRequest
    )
    assert isinstance(
        error_for(_answer(401, {"error": "x", "code": "Unauthenticated"})), Unauthorized
    )
    # An unknown code falls back to its status's class, an unknown status to APIError.
    assert type(error_for(_answer(404, {"error": "x", "code": "Gone"}))) is NotFound
    teapot = error_for(_answer(418, {"error": "short and stout"}))
    assert type(teapot) is APIError and teapot.status == 418
    assert isinstance(error_for(_answer(502)), Unavailable)
    # A proxy's HTML page: the status and the request id header still come through.
    proxy = error_for(
        httpx.Response(500, content=b"<html>oops</html>", headers={"X-Request-Id": "r2"})
    )
    assert isinstance(proxy, InternalError) and proxy.request_id == "r2"
    assert proxy.server_message == "Internal Server Error"


def test_retry_after_in_seconds_or_as_a_date() -> None:
    e = error_for(
        _answer(429, {"error": "slow down", "code": "QuotaExceeded"}, **{"Retry-After": "3"})
    )
    assert isinstance(e, QuotaExceeded) and e.retry_after == 3.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    dated = error_for(_answer(429, {"code": "QuotaExceeded"}, **{"Retry-After": later}))
    assert isinstance(dated, QuotaExceeded) and dated.retry_after is not None
    assert 25 <= dated.retry_after <= 30
    bare = error_for(_answer(429, {"code": "QuotaExceeded"}))
    assert isinstance(bare, QuotaExceeded) and bare.retry_after is None


def test_raise_for_status_passes_successes() -> None:
    raise_for_status(_answer(200, {"ok": True}))
    raise_for_status(_answer(204))
    with pytest.raises(NotFound):
        raise_for_status(_answer(404, {"error": "x", "code": "NotFound"}))


# --------------------------------------------------------------------------- retry


def test_retry_waits_as_the_server_says_within_bounds() -> None:
    retry = Retry(max_retries=2, backoff_s=1.0, max_retry_after_s=10)
    assert retry.delay_after_status(0, httpx.Response(429, headers={"Retry-After": "2"})) == 2.0
    assert retry.delay_after_status(0, httpx.Response(429, headers={"Retry-After": "11"})) is None
    backoff = retry.delay_after_status(1, httpx.Response(503))
    assert backoff is not None and 1.0 <= backoff <= 2.0  # 2nd retry: base 2 s, equal jitter
    assert retry.delay_after_status(2, httpx.Response(503)) is None  # retries spent
    assert retry.delay_after_status(0, httpx.Response(500)) is None  # not a retried status
    assert Retry(max_retries=0).delay_after_status(0, httpx.Response(429)) is None


def test_retry_after_a_broken_connection_only_when_resending_is_safe() -> None:
    retry = Retry()
    request = httpx.Request("POST", "http://x/y")
    refused = httpx.ConnectError("refused", request=request)
    reset = httpx.ReadError("reset", request=request)
    assert retry.delay_after_error(0, refused, resend_safe=False) is not None  # never sent
    assert retry.delay_after_error(0, reset, resend_safe=False) is None  # may have been done
    assert retry.delay_after_error(0, reset, resend_safe=True) is not None
    assert retry.delay_after_error(3, refused, resend_safe=True) is None


# --------------------------------------------------------------------------- query plans


def test_query_plans_from_tuples_and_strings() -> None:
    body = query_body(
        ["lot"],
        [("free", "gt", 3), ("plate", "is_null"), {"column": "lot", "op": "in", "value": ["A"]}],
        ["lot", {"column": "minute", "time_bucket": "hour", "as": "hour"}],
        [("avg", "free", "mean_free"), ("count", "*")],
        ["-mean_free", ("lot", False)],
        10,
        None,
        2,
    )
    assert body == {
        "version": 2,
        "select": ["lot"],
        "where": [
            {"column": "free", "op": "gt", "value": 3},
            {"column": "plate", "op": "is_null"},
            {"column": "lot", "op": "in", "value": ["A"]},
        ],
        "group_by": ["lot", {"column": "minute", "time_bucket": "hour", "as": "hour"}],
        "aggregates": [{"fn": "avg", "column": "free", "as": "mean_free"}, {"fn": "count"}],
        "order_by": [{"column": "mean_free", "desc": True}, {"column": "lot", "desc": False}],
        "limit": 10,
    }
    assert query_body(None, None, None, None, None, None, None, None) == {}


# --------------------------------------------------------------------------- config file


def test_config_is_private_even_over_a_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "citybrain" / "config.toml"
    path.parent.mkdir()
    path.write_text("# someone else's\n")
    os.chmod(path, 0o644)
    odd = 'cbk_"quoted"\\back\\slash·浙'
    config.save_profile(config.Profile("default", "http://h:1", api_key=odd), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert config.load_profiles(path) == {"default": {"url": "http://h:1", "api_key": odd}}
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]  # no temporary left
    with pytest.raises(ValueError, match="profile name"):
        config.save_profile(config.Profile("bad name]", "http://h"), path)


# --------------------------------------------------------------------------- imports


def test_importing_the_sdk_pulls_in_nothing_of_the_server() -> None:
    """The import contract checks the code; this checks what a process really loads (from
    outside the repository, so only the installed distribution can be found)."""
    code = (
        "import json, sys, citybrain_sdk;"
        "lean = 'numpy' in sys.modules;"
        "import citybrain_sdk.cli.app, citybrain_sdk.cli.data;"
        "server = {'marketplace', 'model_store', 'billing', 'fastapi', 'sqlalchemy', 'pydantic',"
        " 'torch'};"
        "print(json.dumps([lean, sorted({m.split('.')[0] for m in sys.modules} & server)]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/", env=env
    ).stdout
    numpy_loaded, server_modules = json.loads(out)
    assert numpy_loaded is False  # tensors import numpy when first used
    assert server_modules == []


# --------------------------------------------------------------------------- docstrings


def _public_callables() -> Iterator[tuple[str, object]]:
    """Public functions and methods of the SDK's public modules, and of what the package
    exports from its private ones (the CLI's commands are documented by ``--help``)."""
    import citybrain_sdk

    names = [m.name for m in pkgutil.walk_packages(citybrain_sdk.__path__, "citybrain_sdk.")]
    modules = [
        importlib.import_module(n)
        for n in names
        if not any(p.startswith("_") for p in n.split(".")[1:])
        and n not in ("citybrain_sdk.cli.app", "citybrain_sdk.cli.data")
    ]
    exported = [getattr(citybrain_sdk, n) for n in citybrain_sdk.__all__ if n != "__version__"]
    objects = [
        (f"{m.__name__}.{k}", v)
        for m in modules
        for k, v in vars(m).items()
        if getattr(v, "__module__", None) == m.__name__  # defined there, not imported
    ]
    objects += [(f"citybrain_sdk.{getattr(o, '__name__', o)}", o) for o in exported]
    for name, obj in objects:
        if name.rsplit(".", 1)[-1].startswith("_") or not (
            inspect.isclass(obj) or inspect.isfunction(obj)
        ):
            continue
        if inspect.isfunction(obj):
            yield name, obj
            continue
        for member_name, member in vars(obj).items():
            if member_name.startswith("_"):
                continue
            if isinstance(member, classmethod | staticmethod):
                yield f"{name}.{member_name}", member.__func__
            elif isinstance(member, property):
                yield f"{name}.{member_name}", member.fget
            elif inspect.isfunction(member):
                yield f"{name}.{member_name}", member


def test_every_public_method_has_a_docstring_with_an_example() -> None:
    found = dict(_public_callables())
    assert "citybrain_sdk.resources.datasets.Datasets.query" in found  # the walk finds them
    assert "citybrain_sdk.Retry.delay_after_status" in found
    lacking = sorted(n for n, f in found.items() if "Example" not in (inspect.getdoc(f) or ""))
    assert lacking == []
