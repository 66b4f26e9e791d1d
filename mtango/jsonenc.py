"""Values to JSON, in one place.

Tango and EPICS hand us numpy scalars and arrays, enums (``DevState``, ``AttrQuality``), bytes,
and floats that JSON cannot carry (NaN, infinities). Python's ``json`` would write bare ``NaN``,
which browsers refuse, so non-finite floats become the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"`` (as pvws and epics2web do). ``to_jsonable`` makes any such value plain; ``dumps``
is the one serializer every response goes through.
"""

from __future__ import annotations

import base64
import enum
import json
import math
from typing import Any

import numpy as np

_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def clean_float(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else _NON_FINITE[value]


def _array_to_list(array: np.ndarray) -> list[Any]:
    kind = array.dtype.kind
    if kind == "f" and not np.isfinite(array).all():
        return _clean_nested(array.tolist())
    if kind in "biuf":
        return array.tolist()
    return [to_jsonable(v) for v in array.tolist()]


def _clean_nested(value: Any) -> Any:
    if isinstance(value, list):
        return [_clean_nested(v) for v in value]
    if isinstance(value, float):
        return clean_float(value)
    return value


_PLAIN = (str, int, bool, type(None))


def to_jsonable(value: Any) -> Any:
    """``value`` as plain JSON-compatible Python (dict, list, str, int, float, bool, None)."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is float:
        return clean_float(value)
    if isinstance(value, enum.Enum):  # DevState, AttrQuality, ... are IntEnums: name, not number
        return value.name
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _array_to_list(value)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return clean_float(float(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, str):
        return str(value)
    raise TypeError(f"cannot serialize {kind.__name__} to JSON")


def dumps(value: Any, **_: Any) -> str:
    """Serialize any response body; ``allow_nan=False`` turns a missed NaN into a loud bug."""
    return json.dumps(
        to_jsonable(value), allow_nan=False, separators=(",", ":"), ensure_ascii=False
    )
