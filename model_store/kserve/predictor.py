"""The platform's KServe predictor: ``python -m model_store.kserve.predictor``.

The custom container of an InferenceService rendered for the platform's predictor
(:func:`~model_store.kserve.render.render_inference_service`) runs this module on the
platform image. It

1. finds the model version: the bundle in ``--model_dir`` (``/mnt/models``, where KServe's
   storage initializer copies the container's ``STORAGE_URI``), or else the bundle at
   ``STORAGE_URI`` itself, read with fsspec (s3fs for ``s3://``, configured by the usual
   ``AWS_*`` variables): see :func:`~model_store.kserve.storage.locate_bundle`;
2. loads it with :func:`model_store.formats.load_model`, the loader the embedded runtime and
   Triton's python backend use, so every runtime returns the same outputs;
3. serves it with ``kserve.ModelServer`` (v2 REST on ``--http_port``) under ``--model_name``,
   checking each request against the manifest's signature (400 naming the input) and reporting
   the signature in the model's metadata, which a bare ``kserve.Model`` leaves empty.

Its other options are ``kserve.ModelServer``'s own (``--enable_grpc``, ``--workers``…), plus
``--http_host``: KServe binds 0.0.0.0, right in a pod; a run outside one can bind loopback.

This is the only module of the platform that imports ``kserve``: ``kserve`` and
``tritonclient.grpc`` register the same protobuf symbols and cannot share a process, so it
runs as a process of its own (import-linter keeps ``kserve`` out of everything else).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import kserve
import numpy as np
from kserve import model_server
from kserve.errors import InferenceError, InvalidInput

from model_store.datatypes import BYTES, from_numpy_dtype
from model_store.errors import InferenceInputError, InvalidArtifactError
from model_store.formats import LoadedModel, load_model
from model_store.kserve.render import MODEL_DIR
from model_store.kserve.storage import Bundle, locate_bundle
from model_store.v2 import (
    InferInputTensor,
    InferRequest,
    RequestedOutput,
    check_inputs,
    check_requested_outputs,
    tensor_metadata,
)

__all__ = ["PlatformModel", "main"]

logger = logging.getLogger(__name__)


class PlatformModel(kserve.Model):  # type: ignore[misc]  # kserve ships no type information
    """A platform model version as a ``kserve.Model``.

    Args:
        name: The model name requests address (``--model_name``).
        bundle: The model version, on local disk.
    """

    def __init__(self, name: str, bundle: Bundle) -> None:
        super().__init__(name)
        self.bundle = bundle
        self._model: LoadedModel | None = None
        # Loaders promise one predict at a time per instance, as the embedded runtime keeps.
        self._lock = asyncio.Lock()

    def load(self) -> bool:
        """Load the artifact with the platform's loader for its format.

        Returns:
            True (``ready``); a broken artifact raises the loader's error instead.
        """
        self._model = load_model(self.bundle.manifest, self.bundle.artifact_path)
        self.ready = True
        return True

    def get_input_types(self) -> list[dict[str, Any]]:
        """Return the manifest's inputs, for ``GET /v2/models/{name}``."""
        return tensor_metadata(self.bundle.manifest.inputs)

    def get_output_types(self) -> list[dict[str, Any]]:
        """Return the manifest's outputs, for ``GET /v2/models/{name}``."""
        return tensor_metadata(self.bundle.manifest.outputs)

    async def predict(
        self,
        payload: kserve.InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> kserve.InferResponse:
        """Check a v2 request against the signature, run the model and answer its outputs.

        Args:
            payload: The request as KServe decoded it (JSON or binary tensors).
            headers: The request's headers (unused).
            response_headers: Headers to add to the response (unused).

        Returns:
            The requested outputs (all declared ones by default), JSON or binary as asked.

        Raises:
            InvalidInput: The request does not fit the signature (KServe answers 400).
            InferenceError: The model failed or broke its signature (KServe answers 500).
        """
        if not isinstance(payload, kserve.InferRequest):
            raise InvalidInput("this predictor speaks the v2 protocol only")
        manifest = self.bundle.manifest
        try:
            request = _as_request(payload)
            arrays = check_inputs(request, manifest.inputs)
            check_requested_outputs(request, manifest.outputs)
        except InferenceInputError as e:
            raise InvalidInput(str(e)) from None
        model = self._model
        if model is None:
            raise InferenceError(f"model '{self.name}' is not loaded")
        async with self._lock:
            try:
                outputs = await asyncio.to_thread(model.predict, arrays)
            except Exception as e:  # the publisher's code: anything can fail
                logger.exception("model %s failed a request", self.name)
                raise InferenceError(f"model '{self.name}' failed to run the request") from e
        if request.outputs is None:
            names = [spec.name for spec in manifest.outputs]
        else:
            names = [wanted.name for wanted in request.outputs]
        tensors: list[kserve.InferOutput] = []
        for name in names:
            if name not in outputs:
                raise InferenceError(f"model '{self.name}' returned no output '{name}'")
            array = np.asarray(outputs[name])
            tensors.append(
                kserve.InferOutput(
                    name=name,
                    shape=list(array.shape),
                    datatype=from_numpy_dtype(array.dtype),
                    data=array,
                )
            )
        return kserve.InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            infer_outputs=tensors,
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )


def _as_request(payload: kserve.InferRequest) -> InferRequest:
    """KServe's decoded request as the platform's codec holds it, so its checks apply."""
    inputs: list[InferInputTensor] = []
    for item in payload.inputs:
        try:
            array = item.as_numpy()
        except (ValueError, TypeError) as e:  # e.g. data that does not fit the shape
            raise InferenceInputError(f"input '{item.name}': {e}") from None
        if item.datatype == BYTES:
            # JSON BYTES arrive as str; the platform's models take BYTES as bytes.
            encoded = np.empty(array.shape, dtype=np.object_)
            encoded.ravel()[:] = [
                e.encode("utf-8") if isinstance(e, str) else bytes(e) for e in array.ravel()
            ]
            array = encoded
        inputs.append(InferInputTensor(item.name, item.datatype, tuple(item.shape), array))
    wanted = payload.request_outputs
    return InferRequest(
        inputs=inputs,
        outputs=None if not wanted else [RequestedOutput(o.name, o.binary_data) for o in wanted],
        id=payload.id,
    )


class _ModelServer(kserve.ModelServer):  # type: ignore[misc]  # kserve ships no type information
    """``kserve.ModelServer`` on a chosen address: KServe itself always binds 0.0.0.0."""

    def __init__(self, host: str, **options: Any) -> None:
        super().__init__(**options)
        self._host = host

    def setup_event_loop(self) -> None:
        # start() calls this after building its REST server and before binding it.
        if self._rest_server is not None:
            self._rest_server.config.host = self._host
        super().setup_event_loop()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model_store.kserve.predictor",
        description="Serve one platform model version with KServe's ModelServer (v2 REST).",
        parents=[model_server.parser],
    )
    parser.add_argument(
        "--model_dir",
        default=MODEL_DIR,
        help="Where the storage initializer put the export (else STORAGE_URI is read).",
    )
    parser.add_argument(
        "--http_host", default="0.0.0.0", help="The address to bind (KServe's is 0.0.0.0)."
    )
    return parser


def main() -> None:
    """Find, load and serve the model version; exits 1 when there is none to serve."""
    args, _ = _parser().parse_known_args()
    scratch = Path(tempfile.mkdtemp(prefix="citybrain-model-"))
    try:
        bundle = locate_bundle(args.model_dir, os.environ.get("STORAGE_URI") or None, scratch)
    except (InvalidArtifactError, OSError) as e:
        raise SystemExit(f"citybrain predictor: no model to serve: {e}") from None
    model = PlatformModel(args.model_name, bundle)
    model.load()
    server = _ModelServer(
        args.http_host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        enable_grpc=args.enable_grpc,
        workers=1,  # one model instance per pod: scale with replicas
    )
    server.start([model])


if __name__ == "__main__":
    main()
