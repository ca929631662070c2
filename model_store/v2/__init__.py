"""The Open Inference Protocol (v2) codec: bytes in, numpy arrays out, and back.

No HTTP dependency: callers hand over bodies and the ``Inference-Header-Content-Length`` value
and get back arrays, or bodies and the headers to set. JSON tensors and the binary tensor data
extension are both supported, exactly as ``tritonclient.http`` writes and reads them.

* :mod:`model_store.v2.tensors` decodes and encodes one tensor (shared by both sides);
* :mod:`model_store.v2.server` decodes requests, checks them against a model's signature and
  encodes responses (the gateway);
* :mod:`model_store.v2.client` encodes requests and decodes responses (a runtime forwarding
  calls to another v2 server, such as a KServe predictor).
"""

from model_store.v2.client import decode_response, encode_request
from model_store.v2.server import (
    InferRequest,
    RequestedOutput,
    check_inputs,
    check_requested_outputs,
    decode_request,
    encode_response,
    model_metadata,
)
from model_store.v2.tensors import HEADER_CONTENT_LENGTH, InferInputTensor, tensor_metadata

__all__ = [
    "HEADER_CONTENT_LENGTH",
    "InferInputTensor",
    "InferRequest",
    "RequestedOutput",
    "check_inputs",
    "check_requested_outputs",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "model_metadata",
    "tensor_metadata",
]
