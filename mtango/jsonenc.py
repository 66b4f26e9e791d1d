"""Values to JSON, in one place.

Tango and EPICS hand us numpy scalars and arrays, enums (``DevState``, ``AttrQuality``), bytes,
and floats that JSON cannot carry (NaN, infinities). Python's ``json`` would write bare ``NaN``,
which browsers refuse, so non-finite floats become the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"`` (as pvws and epics2web do). ``to_jsonable`` makes any such value plain; ``dumps``
(text) and ``dumps_bytes`` (UTF-8, what responses send) are the one serializer.

Speed (bench/large_values_bench.py): bodies are written by orjson, which writes numeric numpy
arrays itself, with no Python float per element. orjson would write NaN as ``null``, so an array
goes to it as it is only when ``np.isfinite`` says every element is finite; otherwise orjson
writes the array alone, each of its ``null`` (the only ones a numeric array's JSON can hold) is
replaced by the string of that element, in order, and the result goes into the body as an
``orjson.Fragment`` (or, when many elements are non-finite, the strings are put into an object
array, whose ``tolist()`` orjson writes). float32 (and float16) arrays are widened to float64
first: orjson would print a float32 as its own shortest decimal (``0.1``), the reference
(``tolist()`` then ``json``) prints the widened double (``0.10000000149011612``), and the value
must not change. Numbers are the same doubles as the reference (``_reference_dumps``); only
the spelling of small exponents differs: orjson writes ``1e-05`` as ``0.00001`` and ``2.5e-07``
as ``2.5e-7``. Whatever orjson refuses (integers beyond 64 bits, nesting deeper than 254, a lone
surrogate) goes through the reference path, whole.
"""

from __future__ import annotations

import base64
import enum
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def clean_float(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else _NON_FINITE[value]


def _array_to_list(array: np.ndarray) -> Any:
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


# Array element types orjson writes itself, exactly as the reference would (native byte order).
_ORJSON_DTYPES = frozenset(
    np.dtype(t)
    for t in (
        np.float64, np.int8, np.int16, np.int32, np.int64,
        np.uint8, np.uint16, np.uint32, np.uint64, np.bool_,
    )
)
_WIDENED = frozenset({np.dtype(np.float32), np.dtype(np.float16)})


def _array_for_orjson(array: np.ndarray) -> Any:
    """An array orjson may write as it is, or the plain list of the reference semantics."""
    if array.ndim == 0 or array.size == 0 or type(array) is not np.ndarray:  # masked, 0-d, ...
        return _array_to_list(array)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if array.dtype in _WIDENED:
        array = array.astype(np.float64)  # the double tolist() gives: the same decimal
    elif array.dtype not in _ORJSON_DTYPES:
        return _array_to_list(array)
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            return _non_finite_list(array, finite)
    return np.ascontiguousarray(array)


def _non_finite_list(array: np.ndarray, finite: np.ndarray) -> Any:
    """The array's JSON with NaN and infinities as their strings, as a fragment of the body.

    orjson writes every non-finite element as ``null``, and a numeric array's JSON has no other
    ``null``: the k-th ``null`` is the k-th non-finite element in C order, replaced by its string.
    Past one element in 8 non-finite, an object array with the strings put in (numpy does that in
    three passes) is faster than a Python slice per element.
    """
    if np.count_nonzero(~finite) * 8 > array.size:
        items = array.astype(object)
        items[np.isnan(array)] = "NaN"
        items[array == math.inf] = "Infinity"
        items[array == -math.inf] = "-Infinity"
        return items.tolist()
    array = np.ascontiguousarray(array)
    text = orjson.dumps(array, option=orjson.OPT_SERIALIZE_NUMPY)
    # Digits, "-+.e,[]" and "null": every "n" starts a null (a numpy scan, faster than split).
    nulls = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == ord("n"))
    bad = array[~finite]  # C order, as orjson writes them
    if nulls.size != bad.size:  # cannot happen; the reference semantics if it ever does
        return _clean_nested(array.tolist())
    starts = [0, *(nulls + 4).tolist()]
    ends = [*nulls.tolist(), len(text)]
    names = np.where(np.isnan(bad), 0, np.where(bad > 0, 1, 2))
    pieces: list[bytes] = [b""] * (2 * bad.size + 1)
    pieces[::2] = [text[start:end] for start, end in zip(starts, ends, strict=True)]
    pieces[1::2] = [_NON_FINITE_JSON[i] for i in names.tolist()]
    return orjson.Fragment(b"".join(pieces))


_NON_FINITE_JSON = (b'"NaN"', b'"Infinity"', b'"-Infinity"')


_PLAIN = (str, int, bool, type(None))


def _convert(value: Any, arrays: Callable[[np.ndarray], Any]) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is float:
        return clean_float(value)
    if isinstance(value, enum.Enum):  # DevState, AttrQuality, ... are IntEnums: name, not number
        return value.name
    if isinstance(value, dict):
        return {str(k): _convert(v, arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_convert(v, arrays) for v in value]
    if isinstance(value, np.ndarray):
        return arrays(value)
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


def to_jsonable(value: Any) -> Any:
    """``value`` as plain JSON-compatible Python (dict, list, str, int, float, bool, None)."""
    return _convert(value, _array_to_list)


def _reference_dumps(value: Any) -> str:
    """The reference semantics (and the path for what orjson refuses): ``allow_nan=False`` turns
    a missed NaN into a loud bug."""
    return json.dumps(
        to_jsonable(value), allow_nan=False, separators=(",", ":"), ensure_ascii=False
    )


def _orjson_dumps(value: Any) -> bytes:
    return orjson.dumps(_convert(value, _array_for_orjson), option=orjson.OPT_SERIALIZE_NUMPY)


def dumps_bytes(value: Any) -> bytes:
    """Serialize a response body to UTF-8 JSON."""
    try:
        return _orjson_dumps(value)
    except orjson.JSONEncodeError:
        return _reference_dumps(value).encode("utf-8")


def dumps(value: Any, **_: Any) -> str:
    """Serialize any body to JSON text."""
    try:
        return _orjson_dumps(value).decode("utf-8")
    except orjson.JSONEncodeError:
        return _reference_dumps(value)
