"""The manifest that travels with every model artifact: format, signature, batching, card.

Signatures use Triton's *full* shapes: when ``batching.max_batch_size > 0`` every input and
output shape includes the batch dimension first, and that dimension is ``-1``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from model_store.datatypes import DATATYPES

__all__ = ["ARTIFACT_FILES", "BatchingConfig", "ModelManifest", "TensorSpec"]

ARTIFACT_FILES = {"torchscript": "artifact.pt", "python": "artifact.zip", "onnx": "artifact.onnx"}
"""The file name an artifact of each format takes when exported for a serving runtime."""

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_ENTRYPOINT_RE = re.compile(rf"^{_IDENT}(\.{_IDENT})*:{_IDENT}$")


class TensorSpec(BaseModel):
    """One input or output of a model signature.

    Attributes:
        name: The tensor's name, as clients send it.
        datatype: A v2 datatype (``FP32``, ``INT64``, ``BYTES``…).
        shape: Dimensions; ``-1`` marks a variable dimension.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    datatype: str
    shape: list[int]

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(f"invalid tensor name {value!r}")
        return value

    @field_validator("datatype")
    @classmethod
    def _check_datatype(cls, value: str) -> str:
        if value not in DATATYPES:
            raise ValueError(f"unsupported datatype {value!r}; use one of {sorted(DATATYPES)}")
        return value

    @field_validator("shape")
    @classmethod
    def _check_shape(cls, value: list[int]) -> list[int]:
        if any(d < -1 for d in value):
            raise ValueError(f"shape {value}: dimensions are >= 0, or -1 for variable")
        return value


class BatchingConfig(BaseModel):
    """Dynamic batching settings of a model (Triton's ``dynamic_batching`` block).

    Attributes:
        max_batch_size: The most rows one batch may hold; 0 disables batching.
        max_queue_delay_ms: How long the first queued request may wait for others.
        preferred_batch_sizes: Batch sizes that are dispatched at once when reached.
        max_queue_size: How many requests may wait; more are refused with ``QueueFull``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(default=0, ge=0)
    max_queue_delay_ms: float = Field(default=2.0, ge=0.0)
    preferred_batch_sizes: list[int] = Field(default_factory=list)
    max_queue_size: int = Field(default=256, ge=1)

    @model_validator(mode="after")
    def _check_preferred(self) -> BatchingConfig:
        for size in self.preferred_batch_sizes:
            if not 1 <= size <= max(self.max_batch_size, 0):
                raise ValueError(
                    f"preferred batch size {size} must be between 1 and max_batch_size "
                    f"({self.max_batch_size})"
                )
        return self


_NUMERIC = frozenset(
    {
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "FP16",
        "FP32",
        "FP64",
    }
)


class MeteringSpec(BaseModel):
    """How a call to the model is metered.

    Attributes:
        unit: The billing unit (``"call"``, ``"audio-second"``, ``"row"``, ``"byte"``…).
        quantity_output: The output whose values, summed, are the call's quantity in ``unit``;
            None meters one unit per call.
    """

    model_config = ConfigDict(extra="forbid")

    unit: str = Field(default="call", min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9-]*$")
    quantity_output: str | None = None


class ModelManifest(BaseModel):
    """Everything the platform needs to validate, load and serve one model artifact.

    Attributes:
        format: ``"torchscript"`` (a ``torch.jit`` archive), ``"onnx"`` (an ONNX graph run
            by onnxruntime) or ``"python"`` (a zip of a module or package with a class named
            by ``entrypoint``).
        inputs: The input signature (full shapes, batch dimension first when batched).
        outputs: The output signature.
        runtime: Where it is served: ``"embedded"`` (in-process), ``"triton"`` or ``"kserve"``.
        batching: Dynamic batching settings.
        metrics: Evaluation metrics measured by the publisher (name → value).
        model_card: Markdown describing purpose, inputs, outputs and limits.
        entrypoint: For the python format, ``"module:Class"`` (module may be dotted).
        metering: The unit calls are billed in, and where the quantity comes from.
    """

    model_config = ConfigDict(extra="forbid")

    format: Literal["torchscript", "python", "onnx"]
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)
    runtime: Literal["embedded", "triton", "kserve"] = "embedded"
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    metrics: dict[str, float] = Field(default_factory=dict)
    model_card: str = ""
    entrypoint: str | None = None
    metering: MeteringSpec = Field(default_factory=MeteringSpec)

    @model_validator(mode="after")
    def _check_consistency(self) -> ModelManifest:
        for kind, specs in (("input", self.inputs), ("output", self.outputs)):
            names = [s.name for s in specs]
            if len(set(names)) != len(names):
                raise ValueError(f"duplicate {kind} names in {names}")
            if self.batching.max_batch_size > 0:
                for spec in specs:
                    if not spec.shape or spec.shape[0] != -1:
                        raise ValueError(
                            f"{kind} '{spec.name}': a batched model's shapes start with the "
                            f"batch dimension -1, got {spec.shape}"
                        )
        if self.format == "python":
            if self.entrypoint is None:
                raise ValueError("the python format needs an entrypoint 'module:Class'")
            if not _ENTRYPOINT_RE.match(self.entrypoint):
                raise ValueError(f"entrypoint {self.entrypoint!r} is not 'module:Class'")
        q = self.metering.quantity_output
        if q is not None:
            quantity = next((o for o in self.outputs if o.name == q), None)
            if quantity is None or quantity.datatype not in _NUMERIC:
                raise ValueError(f"metering.quantity_output {q!r} must name a numeric output")
        return self

    @property
    def batched(self) -> bool:
        """Whether the model takes batches along dimension 0 (``max_batch_size > 0``)."""
        return self.batching.max_batch_size > 0
