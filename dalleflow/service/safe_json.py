"""JSON answers that can always be sent, whatever the request carried.

Python's JSON parser takes what JSON cannot carry back: NaN and Infinity (and
numbers too large for a float, which become Infinity), and strings with a lone
surrogate ("\\ud800"), which UTF-8 cannot encode. An answer that echoes such an
input, such as a 422 naming the bad value, must not fail to render and become a 500.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from fastapi.responses import JSONResponse


class LongNumber(str):
    """An integer literal longer than Python converts (sys.get_int_max_str_digits), kept as a
    note of its length: validation then refuses it by the field it was sent for."""


def strict_loads(body: bytes | str, non_finite: bool = False) -> Any:
    """JSON as the service reads it: a number too long to convert kept as a LongNumber, nesting past
    the interpreter's limit refused; NaN, Infinity and 1e400 (JSON has no value for them) refused
    too unless non_finite, where they come as floats for validation to refuse by field. Every
    refusal a ValueError."""

    def finite(text: str) -> float:
        number = float(text)
        if not math.isfinite(number):
            raise ValueError(f"{text} is not a finite number")
        return number

    def constant(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    def integer(text: str) -> int | LongNumber:
        digits = len(text.lstrip("-"))
        return int(text) if digits <= sys.get_int_max_str_digits() else LongNumber(f"<a number of {digits} digits>")

    strict = {} if non_finite else {"parse_float": finite, "parse_constant": constant}
    try:
        return json.loads(body, parse_int=integer, **strict)
    except RecursionError:
        raise ValueError("nested too deeply") from None


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
