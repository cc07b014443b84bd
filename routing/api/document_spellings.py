"""How each value of the declarative document is spelt: the type a person writes, the checks
it must pass (finite, in range), and the conversions between a model's value and the document's.
routing.api.document_shape maps each document key to a model field with one of these."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from routing.models import split_csv

__all__ = [
    "ADDRESSES",
    "BACKENDS_OR_NULL",
    "BOOL",
    "BOOL_OR_NULL",
    "CACHE_OR_NULL",
    "CORS_OR_NULL",
    "HEADERS",
    "INT",
    "INT_OR_NULL",
    "NAMES",
    "NUMBER",
    "ROUTE_CORS",
    "SECURITY",
    "SECURITY_OR_NULL",
    "STATUSES",
    "STR",
    "TRANSFORM",
    "Spelling",
    "as_is",
]


def _number_to_doc(value: float) -> int | float:
    """2.0 is written 2: the document reads as a person would write it, and stays stable."""
    return int(value) if float(value).is_integer() else float(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# Integers fit a 32-bit column and numbers (seconds) stay finite and sane: a NaN timeout or a
# 300-digit integer would otherwise pass the check and fail every request, or the save itself.
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
NUMBER_MAX = 1e9


def _int_in_range(value: Any) -> bool:
    return value is None or INT_MIN <= value <= INT_MAX


def _number_in_range(value: Any) -> bool:
    return math.isfinite(value) and -NUMBER_MAX <= value <= NUMBER_MAX


def _statuses_in_range(value: Any) -> bool:
    return all(INT_MIN <= item <= INT_MAX for item in value)


def _any(value: Any) -> bool:
    return True


@dataclass(frozen=True)
class Spelling:
    expected: str  # says what was expected in an error message
    accepts: Callable[[Any], bool]
    to_doc: Callable[[Any], Any]
    to_model: Callable[[Any], Any]
    # A value of the right type may still be out of bounds: then "expected <expected> <bounds>".
    in_range: Callable[[Any], bool] = _any
    bounds: str = ""

    def problem(self, value: Any) -> str | None:
        if not self.accepts(value):
            return f"expected {self.expected}"
        if not self.in_range(value):
            return f"expected {self.expected} {self.bounds}"
        return None


def as_is(value: Any) -> Any:
    return value


STR = Spelling("a string", lambda v: isinstance(v, str), as_is, as_is)
BOOL = Spelling("true or false", lambda v: isinstance(v, bool), as_is, as_is)
_INT_BOUNDS = f"from {INT_MIN} to {INT_MAX}"
INT = Spelling("an integer", _is_int, as_is, as_is, _int_in_range, _INT_BOUNDS)
INT_OR_NULL = Spelling(
    "an integer or null",
    lambda v: v is None or _is_int(v),
    as_is,
    as_is,
    _int_in_range,
    _INT_BOUNDS,
)
NUMBER = Spelling(
    "a number",
    _is_number,
    _number_to_doc,
    float,
    _number_in_range,
    "(finite, from -1e9 to 1e9)",
)
STATUSES = Spelling(
    "a list of status codes, e.g. [502, 503]",
    lambda v: isinstance(v, list) and all(_is_int(item) for item in v),
    lambda csv: [int(item) for item in split_csv(csv) if item.isascii() and item.isdigit()],
    lambda items: ", ".join(str(item) for item in items),
    _statuses_in_range,
    _INT_BOUNDS,
)
NAMES = Spelling(
    "a list of strings",
    lambda v: isinstance(v, list) and all(isinstance(item, str) for item in v),
    split_csv,
    lambda items: ", ".join(items),
)
HEADERS = Spelling(
    "a mapping of header name to value (quote values such as '2')",
    lambda v: isinstance(v, dict) and all(isinstance(x, str) for kv in v.items() for x in kv),
    lambda value: dict(sorted(value.items())) if isinstance(value, dict) else value,
    lambda value: dict(value),
)


# --- The edge options: JSON columns, spelt as their JSON (routing.config.edge) ----------------
# Only the JSON-ness is checked here (YAML also reads dates, and mapping keys that are not text);
# what the blocks mean is the model's clean(), so its messages are the admin's.


def _is_json(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_is_json(item) for item in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int | bool)


def _json_mapping(value: Any) -> bool:
    return isinstance(value, dict) and _is_json(value)


def _json_copy(value: Any) -> Any:
    """A copy: the row's value and the document's never share a dict that one side changes."""
    return copy.deepcopy(value)


_AS_JSON = "(JSON data: text keys, no dates)"
TRANSFORM = Spelling(
    f"a mapping of request and response rules {_AS_JSON}",
    _json_mapping,
    _json_copy,
    _json_copy,
)
ROUTE_CORS = Spelling(
    f"a mapping of CORS settings {_AS_JSON}, false (no CORS on this route) or null (the "
    "gateway-wide setting)",
    lambda v: v is None or v is False or _json_mapping(v),
    _json_copy,
    _json_copy,
)
CORS_OR_NULL = Spelling(
    f"a mapping of CORS settings {_AS_JSON} or null (no CORS)",
    lambda v: v is None or _json_mapping(v),
    _json_copy,
    _json_copy,
)
SECURITY = Spelling(
    f"a mapping of security header settings {_AS_JSON}", _json_mapping, _json_copy, _json_copy
)
SECURITY_OR_NULL = Spelling(
    f"a mapping of security header settings {_AS_JSON} or null (the gateway-wide ones)",
    lambda v: v is None or _json_mapping(v),
    _json_copy,
    _json_copy,
)
BOOL_OR_NULL = Spelling(
    "true, false or null (the gateway-wide setting)",
    lambda v: v is None or isinstance(v, bool),
    as_is,
    as_is,
)
ADDRESSES = Spelling(
    "a list of IP addresses or CIDR networks (strings)",
    lambda v: isinstance(v, list) and all(isinstance(item, str) for item in v),
    list,
    list,
)
BACKENDS_OR_NULL = Spelling(
    f"a list of backends {_AS_JSON} or null (not a composite route)",
    lambda v: v is None or (isinstance(v, list) and _is_json(v)),
    _json_copy,
    _json_copy,
)
CACHE_OR_NULL = Spelling(
    f"a mapping of response cache settings {_AS_JSON} or null (answers not cached)",
    lambda v: v is None or _json_mapping(v),
    _json_copy,
    _json_copy,
)
