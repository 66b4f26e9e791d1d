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


# -- the fast path (orjson) against the reference semantics (tolist() + json) ----------------------


def _same(actual, expected, where="value") -> None:
    """Equal JSON, of the same types (1 vs 1.0 vs true), floats the same double (sign of 0 too)."""
    assert type(actual) is type(expected), f"{where}: {actual!r} vs {expected!r}"
    if isinstance(expected, list):
        assert len(actual) == len(expected), f"{where}: length {len(actual)} vs {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _same(a, e, f"{where}[{i}]")
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), where
        for key in expected:
            _same(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, float):
        assert actual == expected and math.copysign(1, actual) == math.copysign(1, expected), (
            f"{where}: {actual!r} vs {expected!r}")
    else:
        assert actual == expected, f"{where}: {actual!r} vs {expected!r}"


def _with_non_finite(array: np.ndarray, rng: np.random.Generator, share: float) -> np.ndarray:
    array = array.copy()
    flat = array.reshape(-1)
    picks = rng.random(flat.size) < share
    flat[picks] = rng.choice([np.nan, np.inf, -np.inf], size=int(picks.sum()))
    return array


def _arrays() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(1234)
    normal = rng.normal(size=997) * 10.0 ** rng.integers(-30, 30, size=997)
    image = rng.normal(size=(31, 17))
    special = np.array([0.0, -0.0, 1e16, 1e15, 1e-5, 1e-4, 2.5e-7, 5e-324, 2.2250738585072014e-308,
                        1.7976931348623157e308, -1.7976931348623157e308, 0.1, 1 / 3, 1e22, 1e23,
                        123456789012345678.0, 9007199254740993.0, 100.0, -1.0])
    cases = [
        ("float64 normal", normal),
        ("float64 special", special),
        ("float64 special, no small exponent", special[(special == 0) | (abs(special) >= 1e-4)]),
        ("float64 image", image),
        ("float64 3-d", rng.normal(size=(3, 4, 5))),
        ("float64 one NaN", _with_non_finite(normal, rng, 0.001)),
        ("float64 sparse non-finite", _with_non_finite(normal, rng, 0.05)),
        ("float64 image sparse non-finite", _with_non_finite(rng.normal(size=(40, 30)), rng, 0.05)),
        ("float32 sparse non-finite",
         _with_non_finite(rng.normal(size=500).astype(np.float32), rng, 0.05)),
        ("float64 mixed non-finite", _with_non_finite(normal, rng, 0.3)),
        ("float64 image non-finite", _with_non_finite(image, rng, 0.2)),
        ("float64 all NaN", np.full(50, np.nan)),
        ("float64 all non-finite", np.array([np.inf, -np.inf, np.nan, -np.nan] * 5)),
        ("float64 non-finite first and last", np.array([np.nan, 1.0, -0.0, 2.0, -np.inf])),
        ("float64 non-contiguous", image[::2, ::-3]),
        ("float64 non-contiguous non-finite", _with_non_finite(image, rng, 0.2)[1::3, ::2]),
        ("float64 big-endian", normal[:20].astype(">f8")),
        ("float64 big-endian NaN", np.array([1.0, np.nan], dtype=">f8")),
        ("float32", rng.normal(size=300).astype(np.float32)),
        ("float32 tenths", np.arange(0, 2, 0.1, dtype=np.float32)),
        ("float32 non-finite", _with_non_finite(rng.normal(size=300).astype(np.float32), rng, 0.1)),
        ("float32 image", rng.normal(size=(7, 9)).astype(np.float32)),
        ("float16", np.array([0.1, 1.5, -2.25, 65504.0, np.nan], dtype=np.float16)),
        ("bool", rng.random(100) < 0.5),
        ("bool image", rng.random((4, 6)) < 0.5),
        ("empty float64", np.zeros(0)),
        ("empty image rows", np.zeros((0, 5))),
        ("empty image columns", np.zeros((5, 0))),
        ("0-d float64", np.array(2.5)),
        ("0-d NaN", np.array(np.nan)),
        ("strings", np.array(["a", "b\u00e9", ""])),
        ("objects", np.array([1, "x", None, 2.5, np.nan], dtype=object)),
        ("masked", np.ma.masked_array([1.0, 2.0, 3.0], mask=[False, True, False])),
        ("masked NaN", np.ma.masked_array([1.0, 2.0, np.nan], mask=[False, True, False])),
    ]
    for dtype in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                  np.uint64):
        info = np.iinfo(dtype)
        values = np.array([info.min, info.max, 0, 1, info.max // 3], dtype=dtype)
        cases.append((np.dtype(dtype).name, values))
        cases.append((np.dtype(dtype).name + " image", np.resize(values, (3, 4))))
    return cases


ARRAYS = _arrays()


@pytest.mark.parametrize(("label", "array"), ARRAYS, ids=[label for label, _ in ARRAYS])
def test_fast_path_matches_the_reference(label, array) -> None:
    reference = strict_loads(jsonenc._reference_dumps(array))
    _same(strict_loads(jsonenc.dumps(array)), reference, label)
    body = {"name": "x", "value": array, "quality": "ATTR_VALID", "none": None, "n": [np.nan]}
    _same(strict_loads(jsonenc.dumps_bytes(body)), strict_loads(jsonenc._reference_dumps(body)))
    image = {"data": array.ravel(), "width": int(array.size), "height": 1}
    _same(strict_loads(jsonenc.dumps(image)), strict_loads(jsonenc._reference_dumps(image)))


@pytest.mark.parametrize(("label", "array"), ARRAYS, ids=[label for label, _ in ARRAYS])
def test_fast_path_text_is_the_reference_text_but_small_exponents(label, array) -> None:
    """Byte for byte the reference, except where json writes an exponent like ``e-05``."""
    reference = jsonenc._reference_dumps(array)
    if "e-" not in reference:
        assert jsonenc.dumps(array) == reference
        assert jsonenc.dumps_bytes(array) == reference.encode("utf-8")


def test_float32_keeps_the_decimal_of_the_widened_double() -> None:
    """Not float32's own shortest decimal (0.1): the value the reference always sent."""
    assert jsonenc.dumps(np.array([0.1, np.nan], dtype=np.float32)) == (
        '[0.10000000149011612,"NaN"]')
    assert jsonenc.dumps(np.array([[0.1]], dtype=np.float32)) == "[[0.10000000149011612]]"


def test_non_finite_elements_keep_their_place_and_other_nulls_stay_null() -> None:
    value = {"a": None, "v": np.array([[np.nan, 1.5], [np.inf, -np.inf]]), "b": [None, 2]}
    assert jsonenc.dumps(value) == (
        '{"a":null,"v":[["NaN",1.5],["Infinity","-Infinity"]],"b":[null,2]}')


def test_large_arrays_take_the_fast_path(monkeypatch) -> None:
    """Finite arrays go to orjson as they are, others as a fragment: not through the reference."""
    rng = np.random.default_rng(7)
    finite = rng.normal(size=(100, 100))
    assert isinstance(jsonenc._array_for_orjson(finite), np.ndarray)
    with_nan = _with_non_finite(finite, rng, 0.01)
    assert type(jsonenc._array_for_orjson(with_nan)).__name__ == "Fragment"
    mostly_nan = _with_non_finite(finite, rng, 0.5)
    assert isinstance(jsonenc._array_for_orjson(mostly_nan), list)

    def refuse(value):
        raise AssertionError("the reference path was taken")

    monkeypatch.setattr(jsonenc, "_reference_dumps", refuse)
    monkeypatch.setattr(jsonenc, "_array_to_list", refuse)
    for array in (finite, with_nan, finite.astype(np.float32), finite.astype(np.int32),
                  finite[::2, ::-3], with_nan[1::3, ::-1], finite.astype(">f8"),
                  with_nan.astype(">f4"), finite > 0, mostly_nan):
        assert strict_loads(jsonenc.dumps({"value": array}))["value"][0][0] is not None


def test_what_orjson_refuses_goes_through_the_reference_whole() -> None:
    value = {"big": 2**70, "small": -(2**64), "v": np.array([1.0, np.nan])}
    assert jsonenc.dumps(value) == '{"big":1180591620717411303424,"small":-18446744073709551616,' \
        '"v":[1.0,"NaN"]}'
    assert jsonenc.dumps_bytes(value) == jsonenc.dumps(value).encode("utf-8")
    deep: list = []
    for _ in range(300):
        deep = [deep]
    assert jsonenc.dumps(deep) == "[" * 301 + "]" * 301
