"""The one serializer: strict JSON for every value type the backends hand over."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tango

from mtango import jsonenc


def strict_loads(text: str):
    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (math.nan, "NaN"),
        (math.inf, "Infinity"),
        (-math.inf, "-Infinity"),
        (np.float32("nan"), "NaN"),
        (np.array([1.0, np.nan, np.inf, -np.inf]), [1.0, "NaN", "Infinity", "-Infinity"]),
        (np.array([[1.0, np.nan], [2.0, 3.0]]), [[1.0, "NaN"], [2.0, 3.0]]),
        (np.uint64(2**64 - 2), 2**64 - 2),
        (np.array([2**64 - 1], dtype=np.uint64), [2**64 - 1]),
        (np.int8(-5), -5),
        (np.bool_(True), True),
        (np.array([True, False]), [True, False]),
        (tango.DevState.ON, "ON"),
        (tango.AttrQuality.ATTR_ALARM, "ATTR_ALARM"),
        (b"\x00\x01", "AAE="),
        (("a", "b"), ["a", "b"]),
        ({"nested": [np.float64(1.5), None]}, {"nested": [1.5, None]}),
    ],
)
def test_values_serialize_to_strict_json(value, expected) -> None:
    assert strict_loads(jsonenc.dumps(value)) == expected


def test_unknown_objects_are_refused_not_stringified() -> None:
    with pytest.raises(TypeError):
        jsonenc.dumps(object())
