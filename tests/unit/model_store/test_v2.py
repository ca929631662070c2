"""Tests of the v2 codec against tritonclient.http's own encoder and decoder.

The client side (``encode_request``/``decode_response``, what the KServe runtime uses to call a
predictor) is checked against tritonclient's server-side counterparts: a request it writes is
read by ``decode_request`` unchanged, and it reads what tritonclient-compatible servers answer.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient

from model_store.errors import InferenceFailedError, InferenceInputError
from model_store.manifest import TensorSpec
from model_store.v2 import (
    HEADER_CONTENT_LENGTH,
    check_inputs,
    check_requested_outputs,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    model_metadata,
)

FLOW = [TensorSpec(name="flow", datatype="FP32", shape=[-1, 3])]

SAMPLES: dict[str, np.ndarray[Any, Any]] = {
    "FP32": np.array([[1.5, -2.25, 3.0], [0.1, 1e-7, 7.0]], dtype=np.float32),
    "INT64": np.array([[1, -2, 2**40], [4, 5, -(2**62)]], dtype=np.int64),
    "FP16": np.array([[0.5, 1.25, -3.0], [65504.0, 1e-3, 0.0]], dtype=np.float16),
    "BOOL": np.array([[True, False, True], [False, False, True]], dtype=np.bool_),
    "BYTES": np.array([[b"a", b"", "城市".encode()], [b"xyz", b"1", b"2"]], dtype=np.object_),
}


def _client_request(
    inputs: list[httpclient.InferInput],
    outputs: list[httpclient.InferRequestedOutput] | None = None,
    request_id: str = "",
) -> tuple[bytes, int | None]:
    body, header_length = httpclient.InferenceServerClient.generate_request_body(
        inputs, outputs=outputs, request_id=request_id
    )
    return body, header_length


def _parse(body: bytes, headers: dict[str, str]) -> httpclient.InferResult:
    length = headers.get(HEADER_CONTENT_LENGTH)
    return httpclient.InferResult.from_response_body(
        body, header_length=int(length) if length is not None else None
    )


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_round_trip_with_tritonclient(datatype: str, binary: bool) -> None:
    array = SAMPLES[datatype]
    tensor = httpclient.InferInput("t", list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    wanted = [httpclient.InferRequestedOutput("out", binary_data=binary)]
    body, header_length = _client_request([tensor], wanted, request_id="req-1")

    request = decode_request(body, header_length)
    spec = TensorSpec(name="t", datatype=datatype, shape=[-1, 3])
    arrays = check_inputs(request, [spec])
    np.testing.assert_array_equal(arrays["t"], array)
    assert arrays["t"].dtype == array.dtype

    response, headers = encode_response("m", "1", {"out": arrays["t"]}, request)
    assert (HEADER_CONTENT_LENGTH in headers) is binary
    result = _parse(response, headers)
    got = result.as_numpy("out")
    assert got is not None
    if datatype == "BYTES" and not binary:
        got = np.vectorize(lambda s: s.encode())(got).astype(np.object_)
    np.testing.assert_array_equal(got, array)
    assert result.get_response()["id"] == "req-1"
    assert result.get_response()["model_name"] == "m"


def test_all_outputs_binary_by_default_from_tritonclient() -> None:
    tensor = httpclient.InferInput("flow", [1, 3], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 3), dtype=np.float32))
    request = decode_request(*_client_request([tensor]))
    assert request.binary_data_output is True
    outputs: dict[str, np.ndarray[Any, Any]] = {
        "a": np.zeros((1, 3), np.float32),
        "b": np.arange(3, dtype=np.int32),
    }
    body, headers = encode_response("m", None, outputs, request)
    result = _parse(body, headers)
    np.testing.assert_array_equal(result.as_numpy("b"), np.arange(3, dtype=np.int32))
    assert "model_version" not in result.get_response()


def test_mixed_binary_and_json_outputs() -> None:
    tensor = httpclient.InferInput("flow", [1, 3], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 3), dtype=np.float32), binary_data=False)
    wanted = [
        httpclient.InferRequestedOutput("b", binary_data=False),
        httpclient.InferRequestedOutput("a", binary_data=True),
    ]
    request = decode_request(*_client_request([tensor], wanted))
    outputs: dict[str, np.ndarray[Any, Any]] = {
        "a": np.full((2, 2), 7, np.uint8),
        "b": np.array([1.5], np.float64),
    }
    body, headers = encode_response("m", "3", outputs, request)
    result = _parse(body, headers)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["b", "a"]
    np.testing.assert_array_equal(result.as_numpy("a"), outputs["a"])
    np.testing.assert_array_equal(result.as_numpy("b"), outputs["b"])


def test_nested_json_data_accepted() -> None:
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "flow",
                    "datatype": "FP32",
                    "shape": [2, 3],
                    "data": [[1, 2, 3], [4, 5, 6]],
                }
            ]
        }
    ).encode()
    arrays = check_inputs(decode_request(body, None), FLOW)
    assert arrays["flow"].tolist() == [[1, 2, 3], [4, 5, 6]]
    assert arrays["flow"].dtype == np.float32


def test_fp16_accepted_when_declared() -> None:
    tensor = httpclient.InferInput("h", [1, 2], "FP16")
    tensor.set_data_from_numpy(np.array([[1.0, 2.0]], np.float16))
    request = decode_request(*_client_request([tensor]))
    arrays = check_inputs(request, [TensorSpec(name="h", datatype="FP16", shape=[-1, 2])])
    assert arrays["h"].dtype == np.float16


def test_model_metadata_shape() -> None:
    meta = model_metadata("traffic.smoother", ["1", "2"], "pytorch_torchscript", FLOW, FLOW)
    assert meta == {
        "name": "traffic.smoother",
        "versions": ["1", "2"],
        "platform": "pytorch_torchscript",
        "inputs": [{"name": "flow", "datatype": "FP32", "shape": [-1, 3]}],
        "outputs": [{"name": "flow", "datatype": "FP32", "shape": [-1, 3]}],
    }


# ------------------------------------------------------------------------ malformed input


def _json_request(*inputs: dict[str, Any]) -> bytes:
    return json.dumps({"inputs": list(inputs)}).encode()


def _check(body: bytes, header_length: int | None = None) -> None:
    check_inputs(decode_request(body, header_length), FLOW)


def _binary_flow(array: np.ndarray[Any, Any], datatype: str = "FP32") -> tuple[bytes, int]:
    tensor = httpclient.InferInput("flow", list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=True)
    body, length = _client_request([tensor])
    assert length is not None
    return body, length


def test_wrong_datatype_named() -> None:
    body, length = _binary_flow(np.zeros((1, 3), np.int64), "INT64")
    with pytest.raises(InferenceInputError, match="input 'flow': expected FP32, got INT64"):
        _check(body, length)


def test_unknown_input_named() -> None:
    body = _json_request(
        {"name": "flow", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]},
        {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]},
    )
    with pytest.raises(InferenceInputError, match="unknown input 'x'"):
        _check(body)


def test_missing_input_named() -> None:
    body = _json_request({"name": "other", "datatype": "FP32", "shape": [1], "data": [1]})
    with pytest.raises(InferenceInputError, match="missing input 'flow'"):
        check_inputs(
            decode_request(body, None),
            [*FLOW, TensorSpec(name="other", datatype="FP32", shape=[1])],
        )


def test_json_data_length_mismatch_named() -> None:
    body = _json_request(
        {"name": "flow", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5]}
    )
    with pytest.raises(
        InferenceInputError, match=r"input 'flow': shape \[2, 3\] needs 6 elements, got 5"
    ):
        _check(body)


def test_binary_size_mismatch_named() -> None:
    body, length = _binary_flow(np.zeros((2, 3), np.float32))
    header = json.loads(body[:length])
    header["inputs"][0]["shape"] = [3, 3]
    new_header = json.dumps(header).encode()
    with pytest.raises(InferenceInputError, match=r"input 'flow': shape \[3, 3\] needs 9 elements"):
        _check(new_header + body[length:], len(new_header))


def test_rank_mismatch_named() -> None:
    body = _json_request({"name": "flow", "datatype": "FP32", "shape": [3], "data": [1, 2, 3]})
    with pytest.raises(InferenceInputError, match=r"input 'flow': expected shape \[-1, 3\]"):
        _check(body)


def test_fixed_dimension_mismatch_named() -> None:
    body = _json_request(
        {"name": "flow", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}
    )
    with pytest.raises(InferenceInputError, match="input 'flow': dimension 1 must be 3, got 4"):
        _check(body)


def test_bad_json() -> None:
    with pytest.raises(InferenceInputError, match="malformed JSON"):
        _check(b'{"inputs": [')


def test_non_numeric_json_data_named() -> None:
    body = _json_request(
        {"name": "flow", "datatype": "FP32", "shape": [1, 3], "data": ["a", "b", "c"]}
    )
    with pytest.raises(InferenceInputError, match="input 'flow': FP32 data must be numbers"):
        _check(body)


def test_ragged_json_data_named() -> None:
    body = _json_request(
        {"name": "flow", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3]]}
    )
    with pytest.raises(InferenceInputError, match="input 'flow'"):
        _check(body)


def test_truncated_binary_named() -> None:
    body, length = _binary_flow(np.zeros((2, 3), np.float32))
    with pytest.raises(InferenceInputError, match="truncated binary data for input 'flow'"):
        _check(body[:-5], length)


def test_trailing_binary_rejected() -> None:
    body, length = _binary_flow(np.zeros((2, 3), np.float32))
    with pytest.raises(InferenceInputError, match="bytes of binary data follow the last input"):
        _check(body + b"\x00" * 4, length)


def test_truncated_bytes_element_named() -> None:
    tensor = httpclient.InferInput("s", [2], "BYTES")
    tensor.set_data_from_numpy(np.array([b"abc", b"defgh"], dtype=np.object_))
    body, length = _client_request([tensor])
    header = json.loads(body[:length])
    header["inputs"][0]["parameters"]["binary_data_size"] -= 2
    new_header = json.dumps(header).encode()
    with pytest.raises(InferenceInputError, match="truncated binary data for input 's'"):
        decode_request(new_header + body[length:-2], len(new_header))


def test_header_length_past_body() -> None:
    with pytest.raises(InferenceInputError, match=HEADER_CONTENT_LENGTH):
        decode_request(b"{}", 10)


def test_integer_out_of_range_named() -> None:
    body = _json_request({"name": "i", "datatype": "INT8", "shape": [1], "data": [300]})
    with pytest.raises(InferenceInputError, match="input 'i': a value is out of range for INT8"):
        decode_request(body, None)


def test_unknown_requested_output_named() -> None:
    body = json.dumps(
        {
            "inputs": [{"name": "flow", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}],
            "outputs": [{"name": "nope"}],
        }
    ).encode()
    with pytest.raises(InferenceInputError, match="unknown output 'nope'"):
        check_requested_outputs(decode_request(body, None), FLOW)


# --------------------------------------------------------------------------- client side


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_a_forwarded_request_decodes_to_the_same_arrays(datatype: str) -> None:
    array = SAMPLES[datatype]
    spec = TensorSpec(name="t", datatype=datatype, shape=[-1, 3])
    body, headers = encode_request({"t": array}, [spec], ["out"])
    assert headers == {"Content-Type": "application/json"}

    request = decode_request(body, None)  # what the predictor's server does with it
    np.testing.assert_array_equal(check_inputs(request, [spec])["t"], array)
    assert [o.name for o in request.outputs or []] == ["out"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_responses_decode_binary_and_json_alike(datatype: str, binary: bool) -> None:
    tensor = httpclient.InferInput("t", [1], "INT32")
    tensor.set_data_from_numpy(np.ones(1, np.int32), binary_data=False)
    wanted = [httpclient.InferRequestedOutput("out", binary_data=binary)]
    request = decode_request(*_client_request([tensor], wanted))
    body, headers = encode_response("m", "1", {"out": SAMPLES[datatype]}, request)

    length = headers.get(HEADER_CONTENT_LENGTH)
    outputs = decode_response(body, None if length is None else int(length))
    assert list(outputs) == ["out"]
    np.testing.assert_array_equal(outputs["out"], SAMPLES[datatype])
    assert outputs["out"].dtype == SAMPLES[datatype].dtype


def test_a_request_casts_to_the_declared_datatype() -> None:
    body, _ = encode_request({"flow": np.array([[1, 2, 3]], np.int64)}, FLOW)
    (entry,) = json.loads(body)["inputs"]
    assert entry == {"name": "flow", "datatype": "FP32", "shape": [1, 3], "data": [1.0, 2.0, 3.0]}
    assert "outputs" not in json.loads(body)


def test_a_request_names_what_it_cannot_carry() -> None:
    with pytest.raises(InferenceInputError, match="missing input 'flow'"):
        encode_request({}, FLOW)
    spec = TensorSpec(name="text", datatype="BYTES", shape=[1])
    with pytest.raises(InferenceInputError, match="input 'text' holds bytes that are not UTF-8"):
        encode_request({"text": np.array([b"\xff"], dtype=np.object_)}, [spec])


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        (b"<html>bad gateway</html>", None, "malformed JSON response"),
        (b'{"model_name": "m"}', None, "no 'outputs' list"),
        (
            b'{"outputs": [{"name": "y", "datatype": "FP32", "shape": [2], "data": [1]}]}',
            None,
            r"output 'y': shape \[2\] needs 2 elements",
        ),
        (
            b'{"outputs":[{"name":"y","datatype":"FP32","shape":[2],'
            b'"parameters":{"binary_data_size":8}}]}\x00\x00\x80?',
            92,
            "truncated binary data for output 'y'",
        ),
    ],
)
def test_an_unreadable_response_is_a_failure_naming_the_output(
    body: bytes, header_length: int | None, message: str
) -> None:
    with pytest.raises(InferenceFailedError, match=message):
        decode_response(body, header_length)
