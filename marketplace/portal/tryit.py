"""Example requests for the product pages' "try it" forms.

A model's form starts with a v2 JSON request that fits its signature (variable dimensions
filled with small sizes, numbers or strings per datatype), so a visitor can send it as is and
then change it. What is sent goes through the platform's own gateway like any client's call
(authenticate, tier policy, quota, runtime, meter): the portal adds no path of its own.
"""

from __future__ import annotations

import json
from math import prod
from typing import Any

_VARIABLE_SIZES = (1, 8, 4, 4)
_MAX_EXAMPLE_VALUES = 64


def _shape(dims: list[int]) -> list[int]:
    return [d if d > 0 else _VARIABLE_SIZES[min(i, 3)] for i, d in enumerate(dims)]


def _values(datatype: str, n: int) -> list[Any]:
    if datatype == "BYTES":
        return ["Heavy traffic near West Lake bridge."] * n
    if datatype == "BOOL":
        return [i % 2 == 0 for i in range(n)]
    if datatype.startswith("FP"):
        # A wave of flow-like counts, so a smoother or a forecaster has something to show.
        return [float(20 + (i * 7) % 23) for i in range(n)]
    return [i % 10 for i in range(n)]


def example_request(manifest: dict[str, Any] | None) -> str:
    """A v2 inference request (JSON text) that fits the manifest's inputs; "" without one."""
    if not manifest or not manifest.get("inputs"):
        return ""
    inputs = []
    for spec in manifest["inputs"]:
        shape = _shape(list(spec.get("shape") or [1]))
        while prod(shape) > _MAX_EXAMPLE_VALUES and max(shape) > 1:
            shape[shape.index(max(shape))] //= 2
        datatype = str(spec.get("datatype", "FP32"))
        inputs.append(
            {
                "name": spec.get("name", "input"),
                "datatype": datatype,
                "shape": shape,
                "data": _values(datatype, prod(shape)),
            }
        )
    # One line per tensor: long data arrays stay readable in the form.
    lines = ",\n".join(f"  {json.dumps(tensor)}" for tensor in inputs)
    return f'{{"inputs": [\n{lines}\n]}}'


def _compact(value: Any, depth: int = 0) -> str:
    """Indented JSON whose lists of plain values stay on one line (tensor data, shapes)."""
    pad, inner = "  " * depth, "  " * (depth + 1)
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {_compact(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        return "[\n" + ",\n".join(f"{inner}{_compact(v, depth + 1)}" for v in value) + f"\n{pad}]"
    return json.dumps(value, ensure_ascii=False)


def pretty_json(body: bytes) -> str:
    """A response body for display: indented JSON when it is JSON, else the text."""
    try:
        return _compact(json.loads(body))
    except (ValueError, UnicodeDecodeError):
        return body.decode("utf-8", "replace")
