"""Model cards from Hugging Face-style READMEs: YAML front matter between ``---`` lines.

The front matter (``license``, ``tags``, ``pipeline_tag``, ``language``, ``datasets``,
``metrics``, ``model-index``…) becomes the card's fields; the markdown after it is the card's
text. Only JSON-safe values are kept, and the card is bounded in size, because it is stored
with the version and shown to anyone who may see the product.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Final

import yaml

__all__ = ["MAX_README_BYTES", "CardError", "ModelCard", "parse_readme"]

MAX_README_BYTES: Final = 256 * 1024
"""The longest README taken as a card (the front matter and the text together)."""

_MAX_FIELDS_JSON: Final = 32 * 1024


class CardError(ValueError):
    """The README's front matter is not a YAML mapping, or the card is too large."""


@dataclass(frozen=True, slots=True)
class ModelCard:
    """A parsed README.

    Attributes:
        fields: The front matter, JSON-safe (empty without front matter).
        text: The markdown after the front matter.
        metrics: Numeric metrics found in the front matter (``model-index`` results, or a
            ``metrics`` mapping of name → number); a ``metrics`` list of names has no values.
    """

    fields: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


def _json_safe(value: Any) -> Any:
    # YAML may hold dates, sets and other types JSON cannot carry; keep their text.
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_json_safe(v) for v in value]
    return str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _metrics(fields: dict[str, Any]) -> dict[str, float]:
    found: dict[str, float] = {}
    declared = fields.get("metrics")
    if isinstance(declared, dict):
        for name, value in declared.items():
            number = _number(value)
            if number is not None:
                found[str(name)] = number
    index = fields.get("model-index")
    for model in index if isinstance(index, list) else []:
        results = model.get("results") if isinstance(model, dict) else None
        for result in results if isinstance(results, list) else []:
            entries = result.get("metrics") if isinstance(result, dict) else None
            for entry in entries if isinstance(entries, list) else []:
                if not isinstance(entry, dict):
                    continue
                name = entry.get("name") or entry.get("type")
                number = _number(entry.get("value"))
                if name and number is not None:
                    found[str(name)] = number
    return found


def parse_readme(text: str) -> ModelCard:
    """Split a README into its front matter and its text.

    Args:
        text: The README (markdown, optionally opening with ``---`` front matter ``---``).

    Returns:
        The card.

    Raises:
        CardError: The README is too large, or its front matter is not a YAML mapping.

    Example:
        >>> card = parse_readme("---\\nlicense: mit\\ntags: [traffic]\\n---\\n# Flow\\n")
        >>> card.fields, card.text
        ({'license': 'mit', 'tags': ['traffic']}, '# Flow\\n')
    """
    if len(text.encode("utf-8")) > MAX_README_BYTES:
        raise CardError(f"the README is over {MAX_README_BYTES // 1024} KiB")
    text = text.removeprefix("\ufeff")
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        return ModelCard(text=text)
    end = next((i for i in range(1, len(lines)) if lines[i].strip() in ("---", "...")), None)
    if end is None:
        raise CardError("the README's front matter opens with '---' but never closes")
    try:
        raw = yaml.safe_load("".join(lines[1:end]))
    except yaml.YAMLError as e:
        raise CardError(f"the README's front matter is not valid YAML: {e}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise CardError("the README's front matter must be a YAML mapping (key: value)")
    fields = _json_safe(raw)
    if len(json.dumps(fields)) > _MAX_FIELDS_JSON:
        raise CardError(f"the README's front matter is over {_MAX_FIELDS_JSON // 1024} KiB")
    body = "".join(lines[end + 1 :]).lstrip("\n")
    return ModelCard(fields=fields, text=body, metrics=_metrics(fields))
