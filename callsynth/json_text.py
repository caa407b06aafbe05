"""JSON that every parser reads. Python's json writes a figure that could not be measured (no blink in a clip,
no face in a codec's frames) as NaN, and an unbounded one as Infinity: neither is JSON, and a strict parser
(JavaScript's JSON.parse) refuses the whole file over one of them. Here such a figure is null, the JSON for
"no value"."""

from __future__ import annotations

import json
import math


def finite(value):
    """`value` with every NaN or infinite float inside it (dicts, lists, tuples) made None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def to_json(value, indent: int | None = 2) -> str:
    """`value` as standard JSON text (non-finite figures null; anything else json refuses is still refused)."""
    return json.dumps(finite(value), indent=indent, allow_nan=False)
