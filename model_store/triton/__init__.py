"""Triton Inference Server support: model repository export and a managed ``tritonserver``."""

from model_store.triton.repository import (
    ExportedModel,
    default_python_paths,
    export_model,
    remove_model,
    render_config,
    triton_model_name,
)
from model_store.triton.server import ManagedTritonServer, TritonServerError

__all__ = [
    "ExportedModel",
    "ManagedTritonServer",
    "TritonServerError",
    "default_python_paths",
    "export_model",
    "remove_model",
    "render_config",
    "triton_model_name",
]
