"""Names the gateway shares with its HTTP adapter and its clients."""

from __future__ import annotations

from model_store.v2 import HEADER_CONTENT_LENGTH

SERVER_NAME = "citybrain"
V2_PREFIX = "/v2"
#: The v2 extensions the gateway implements (reported by ``GET /v2``).
EXTENSIONS = ("binary_tensor_data",)

INFERENCE_HEADER_CONTENT_LENGTH = HEADER_CONTENT_LENGTH
IDEMPOTENT_REPLAYED_HEADER = "Idempotent-Replayed"
MODEL_MANIFEST_HEADER = "X-Model-Manifest"
ARTIFACT_DIGEST_HEADER = "X-Artifact-Digest"

#: Platform names reported in v2 model metadata, by manifest format.
PLATFORMS = {"torchscript": "pytorch_torchscript", "python": "python", "onnx": "onnxruntime_onnx"}

#: The usage unit and quantity of one inference call.
CALL_UNIT = "call"
