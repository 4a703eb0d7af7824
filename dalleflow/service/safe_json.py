"""JSON answers that can always be sent, whatever the request carried.

Python's JSON parser takes what JSON cannot carry back: NaN and Infinity (and
numbers too large for a float, which become Infinity), and strings with a lone
surrogate ("\\ud800"), which UTF-8 cannot encode. An answer that echoes such an
input, such as a 422 naming the bad value, must not fail to render and become a 500.
"""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi.responses import JSONResponse


def json_safe(value: Any) -> Any:
    """The value with each non-finite float replaced by its name ("nan", "inf", "-inf")."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


class SafeJSONResponse(JSONResponse):
    """A JSONResponse for answers that may echo the request: ASCII-escaped, so a lone
    surrogate goes out as its \\u escape, and non-finite floats as their names."""

    def render(self, content: Any) -> bytes:
        return json.dumps(json_safe(content), ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")
