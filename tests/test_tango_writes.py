"""Tango writes through the backend (no routes): attributes, commands, properties, configuration.

The backend runs in an event loop of its own (a thread), as in a worker, and writes to
``test/writes/1``: a ``WritesTest`` device (``tests/writes_server.py``: the demo device plus
writable images, DevEncoded, more spectra, a write-only attribute and one that refuses writes) in
a server of its own, so no value that other tests read from ``sys/tg_test/1`` changes. A direct
PyTango client (``dev``) checks that the device really holds what was written; the one test that
writes to the demo device itself restores the value.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import threading
from collections.abc import Awaitable, Callable, Iterator
from types import SimpleNamespace
from typing import Any, TypeVar

import numpy as np
import pytest
import tango

from mtango.cache import AsyncLRUCache, SingleFlight
from mtango.config import Config
from mtango.demo import DEMO_DEVICE
from mtango.demo.stack import ControlSystem
from mtango.demo.tangotest import _RW_SCALARS
from mtango.errors import ApiError, FailureKind
from mtango.tango.backend import TangoBackend, WriteOutcome
from tests.bridge import poll
from tests.conftest import TEST_TIMEOUT_MS

T = TypeVar("T")

WRITES_SERVER = "WritesTest/writes"
DEVICE = "test/writes/1"


class Runner:
    """A ``TangoBackend`` started in an event loop running in a thread, as in a worker."""

    def __init__(self, config: Config) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.backend = TangoBackend(config)
        self.backend.start()
        self.host = self.backend.host_key(*config.tango_host.rsplit(":", 1))

    def __call__(self, call: Callable[[TangoBackend], Awaitable[T]]) -> T:
        """``call(backend)`` as one request (its own deadline) on the loop; its result."""

        async def request() -> T:
            self.backend.begin_request()
            return await call(self.backend)

        return asyncio.run_coroutine_threadsafe(request(), self.loop).result(60)

    def close(self) -> None:
        self.backend.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def device(control_system: ControlSystem) -> str:
    """``test/writes/1``, started once per test process (the session's stack stops it)."""
    if WRITES_SERVER not in control_system.servers:
        control_system.add_server(WRITES_SERVER, {"WritesTest": [DEVICE]},
                                  module="tests.writes_server")
    return DEVICE


@pytest.fixture(scope="module")
def dev(control_system: ControlSystem, device: str) -> tango.DeviceProxy:
    """The reference client: PyTango, straight to the device."""
    return tango.DeviceProxy(control_system.trl(device))


@pytest.fixture(scope="module")
def run(control_system: ControlSystem, device: str) -> Iterator[Runner]:
    runner = Runner(Config(tango_host=control_system.tango_host,
                           tango_timeout_ms=TEST_TIMEOUT_MS))
    yield runner
    runner.close()


def write(run: Runner, attribute: str, raw: Any, *, from_json: bool = False,
          wait: bool = True) -> WriteOutcome:
    return run(lambda b: b.write_attribute(run.host, DEVICE, attribute, raw,
                                           from_json=from_json, wait=wait))


def fails(call: Callable[[], Any]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call()
    return caught.value


def device_value(dev: tango.DeviceProxy, attribute: str) -> Any:
    value = dev.read_attribute(attribute).value
    if isinstance(value, np.ndarray):
        return value.tolist()
    return list(value) if isinstance(value, tuple) else value


# -- scalars of every type -------------------------------------------------------------------------

# attribute, query text, JSON value, the value PyTango reads back, the value the bridge answers
SCALARS = [
    ("double_scalar_w", "-2.75", -2.75, -2.75, -2.75),
    ("float_scalar", "0.25", 0.25, 0.25, 0.25),
    ("long_scalar_w", "-2147483648", -2147483648, -2147483648, -2147483648),
    ("long_scalar_rww", "2147483647", 2147483647, 2147483647, 2147483647),
    ("long64_scalar", "-1099511627777", -1099511627777, -1099511627777, -1099511627777),
    ("ulong_scalar", "4294967295", 4294967295, 4294967295, 4294967295),
    ("ulong64_scalar", "18446744073709551615", 18446744073709551615, 2**64 - 1, 2**64 - 1),
    ("short_scalar", "-32768", -32768, -32768, -32768),
    ("ushort_scalar", "65535", 65535, 65535, 65535),
    ("uchar_scalar", "255", 255, 255, 255),
    ("boolean_scalar", "false", False, False, False),
    ("string_scalar", "Grüße, writes!", "Grüße, writes!", "Grüße, writes!", "Grüße, writes!"),
    ("enum_scalar", "Three", "Three", 3, "Three"),
]


@pytest.mark.parametrize("from_json", [False, True], ids=["query", "json"])
@pytest.mark.parametrize(("attribute", "text", "value", "on_device", "answered"), SCALARS,
                         ids=[s[0] for s in SCALARS])
def test_scalar_of_every_type(run: Runner, dev: tango.DeviceProxy, attribute: str, text: str,
                              value: Any, on_device: Any, answered: Any, from_json: bool) -> None:
    before = run(lambda b: b.read_attribute(run.host, DEVICE, attribute))["value"]
    outcome = write(run, attribute, value if from_json else [text], from_json=from_json)
    try:
        assert device_value(dev, attribute) == on_device
        assert set(outcome.body) == {"name", "value", "quality", "timestamp"}
        assert outcome.body["name"] == attribute
        assert outcome.body["value"] == answered
        assert outcome.body["quality"] == "ATTR_VALID"
        assert (outcome.before, outcome.sent, outcome.after) == (before, answered, answered)
        json.dumps([outcome.before, outcome.sent, outcome.after], allow_nan=False)
    finally:
        default = _RW_SCALARS[attribute]
        dev.write_attribute(attribute, int(default) if attribute == "enum_scalar" else default)


def test_the_answer_is_the_read_shape(run: Runner) -> None:
    outcome = write(run, "long_scalar_w", ["12"])
    read = run(lambda b: b.read_attribute(run.host, DEVICE, "long_scalar_w"))
    assert set(outcome.body) == set(read)
    assert outcome.body["value"] == read["value"] == 12
    assert outcome.body["timestamp"] <= read["timestamp"]


@pytest.mark.parametrize(("raw", "from_json", "expected"), [
    (["true"], False, True), (["0"], False, False), (["1"], False, True), (["TRUE"], False, True),
    (True, True, True), (0, True, False), ("false", True, False),
])
def test_booleans(run: Runner, dev: tango.DeviceProxy, raw: Any, from_json: bool,
                  expected: bool) -> None:
    dev.write_attribute("boolean_scalar", not expected)
    write(run, "boolean_scalar", raw, from_json=from_json)
    assert dev.read_attribute("boolean_scalar").value is expected


@pytest.mark.parametrize(("raw", "from_json", "index"), [
    (["Two"], False, 2), (["two"], False, 2), (["3"], False, 3), (["0"], False, 0),
    ("Zero", True, 0), (1, True, 1), ({"value": "Three"}, True, 3),
])
def test_enum_by_label_and_by_index(run: Runner, dev: tango.DeviceProxy, raw: Any,
                                    from_json: bool, index: int) -> None:
    dev.write_attribute("enum_scalar", (index + 1) % 4)
    outcome = write(run, "enum_scalar", raw, from_json=from_json)
    assert dev.read_attribute("enum_scalar").value == index
    assert outcome.body["value"] == ["Zero", "One", "Two", "Three"][index]


@pytest.mark.parametrize(("raw", "from_json"), [
    (["NaN"], False), (["Infinity"], False), (["-inf"], False), ("NaN", True), ("-Infinity", True),
])
def test_non_finite_floats_are_converted_and_tango_refuses_them(
    run: Runner, dev: tango.DeviceProxy, raw: Any, from_json: bool
) -> None:
    """Reads send NaN as ``"NaN"``: the bridge reads it back the same way, and the device decides
    (cppTango refuses NaN and infinities for attributes; commands take them)."""
    dev.write_attribute("double_scalar_w", 4.0)
    error = fails(lambda: write(run, "double_scalar_w", raw, from_json=from_json))
    assert error.kind is FailureKind.FAILED
    assert "NaN or INF" in error.entries[0].description
    assert dev.read_attribute("double_scalar_w").value == 4.0


def test_an_unencoded_plus_in_a_query_value(run: Runner, dev: tango.DeviceProxy) -> None:
    """The tangojs connector does not URL-encode values: ``1e+3`` arrives as ``1e 3``."""
    write(run, "double_scalar_w", ["1e 3"])
    assert dev.read_attribute("double_scalar_w").value == 1000.0
    write(run, "long_scalar_w", [" 5"])
    assert dev.read_attribute("long_scalar_w").value == 5


def test_an_integral_float_is_an_integer(run: Runner, dev: tango.DeviceProxy) -> None:
    write(run, "long64_scalar", 3.0, from_json=True)
    assert dev.read_attribute("long64_scalar").value == 3
    write(run, "short_scalar", ["-4.0"])
    assert dev.read_attribute("short_scalar").value == -4


def test_a_write_only_attribute(run: Runner, dev: tango.DeviceProxy) -> None:
    outcome = write(run, "long_write_only", ["77"])
    assert dev.read_attribute("long_write_only").w_value == 77
    assert outcome.body["name"] == "long_write_only"
    assert outcome.sent == 77


def test_an_attribute_named_in_another_case(run: Runner, dev: tango.DeviceProxy) -> None:
    outcome = write(run, "DOUBLE_Scalar_W", ["6.5"])
    assert dev.read_attribute("double_scalar_w").value == 6.5
    assert outcome.body["name"] == "double_scalar_w"


# -- spectra, images, DevEncoded -------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "from_json"), [
    (["1.5", "2.5", "-3"], False),       # repeated v
    (["[1.5, 2.5, -3]"], False),         # one v holding a JSON array
    (["1.5,2.5,-3"], False),             # String(array) of the tangojs connector
    ([1.5, 2.5, -3], True),              # JSON body
    ({"value": [1.5, 2.5, -3]}, True),   # a value object sent back
])
def test_double_spectrum(run: Runner, dev: tango.DeviceProxy, raw: Any, from_json: bool) -> None:
    dev.write_attribute("double_spectrum", [0.0])
    outcome = write(run, "double_spectrum", raw, from_json=from_json)
    try:
        assert device_value(dev, "double_spectrum") == [1.5, 2.5, -3.0]
        assert outcome.body["value"].tolist() == [1.5, 2.5, -3.0]
        assert outcome.sent == outcome.after == [1.5, 2.5, -3.0]
    finally:
        dev.write_attribute("double_spectrum", [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5])


@pytest.mark.parametrize(("attribute", "raw", "from_json", "expected"), [
    ("string_spectrum", ["a b", "c,d"], False, ["a b", "c,d"]),
    ("string_spectrum", ['["x", "y,z"]'], False, ["x", "y,z"]),
    ("string_spectrum", ["x,y"], False, ["x", "y"]),
    ("string_spectrum", "alone", True, ["alone"]),
    ("boolean_spectrum_rw", ["true", "0", "1"], False, [True, False, True]),
    ("boolean_spectrum_rw", [False, True], True, [False, True]),
    ("uchar_spectrum_rw", ["0,128,255"], False, [0, 128, 255]),
    ("long_spectrum_rw", [-1, 2, -3, 4], True, [-1, 2, -3, 4]),
    ("long_spectrum_rw", "3,-4", True, [3, -4]),
    ("long_spectrum_rw", 9, True, [9]),
])
def test_spectra(run: Runner, dev: tango.DeviceProxy, attribute: str, raw: Any, from_json: bool,
                 expected: list[Any]) -> None:
    previous = device_value(dev, attribute)
    try:
        outcome = write(run, attribute, raw, from_json=from_json)
        assert device_value(dev, attribute) == expected
        assert outcome.after == expected
    finally:
        dev.write_attribute(attribute, previous)


def test_an_empty_spectrum(run: Runner, dev: tango.DeviceProxy) -> None:
    outcome = write(run, "long_spectrum_rw", [""])
    assert device_value(dev, "long_spectrum_rw") == []
    assert outcome.sent == outcome.after == []
    write(run, "long_spectrum_rw", ["[5]"])
    assert device_value(dev, "long_spectrum_rw") == [5]


@pytest.mark.parametrize(("raw", "from_json"), [
    ([[1.5, 2, 3], [4, 5, 6.25]], True),
    ({"data": [1.5, 2, 3, 4, 5, 6.25], "width": 3, "height": 2}, True),
    (["[[1.5, 2, 3], [4, 5, 6.25]]"], False),
])
def test_image(run: Runner, dev: tango.DeviceProxy, raw: Any, from_json: bool) -> None:
    dev.write_attribute("double_image_rw", np.zeros((1, 1)))
    outcome = write(run, "double_image_rw", raw, from_json=from_json)
    assert device_value(dev, "double_image_rw") == [[1.5, 2, 3], [4, 5, 6.25]]
    expected = {"data": [1.5, 2, 3, 4, 5, 6.25], "width": 3, "height": 2}
    assert outcome.sent == outcome.after == expected
    assert outcome.body["value"]["width"] == 3 and outcome.body["value"]["height"] == 2


def test_an_integer_image(run: Runner, dev: tango.DeviceProxy) -> None:
    write(run, "long_image_rw", [[1, -2], [3, 4], [5, 2147483647]], from_json=True)
    value = dev.read_attribute("long_image_rw").value
    assert value.dtype == np.int32 and value.tolist() == [[1, -2], [3, 4], [5, 2147483647]]


def test_a_large_image_is_converted_at_once(run: Runner, dev: tango.DeviceProxy) -> None:
    rows = [[float(y * 64 + x) for x in range(64)] for y in range(64)]
    write(run, "double_image_rw", rows, from_json=True)
    assert device_value(dev, "double_image_rw") == rows


def test_dev_encoded(run: Runner, dev: tango.DeviceProxy) -> None:
    data = base64.b64encode(b"\x00\x01binary").decode()
    outcome = write(run, "encoded_rw", {"format": "raw", "data": data}, from_json=True)
    assert dev.read_attribute("encoded_rw").value == ("raw", b"\x00\x01binary")
    assert outcome.sent == outcome.after == {"format": "raw", "data": data}
    write(run, "encoded_rw", ['{"format": "utf8", "data": "aGk="}'])
    assert dev.read_attribute("encoded_rw").value == ("utf8", b"hi")


# -- values that cannot be written: 400 (405), nothing written ------------------------------------

BAD = [
    ("double_scalar_w", ["abc"], False, "BadValue"),
    ("double_scalar_w", ["1_000"], False, "BadValue"),
    ("double_scalar_w", True, True, "BadValue"),
    ("double_scalar_w", ["1", "2"], False, "BadShape"),
    ("double_scalar_w", [], False, "MissingValue"),
    ("double_scalar_w", None, True, "BadValue"),
    ("double_scalar_w", [1.0], True, "BadValue"),
    ("float_scalar", ["1e39"], False, "ValueOutOfRange"),
    ("short_scalar", ["32768"], False, "ValueOutOfRange"),
    ("short_scalar", 40000, True, "ValueOutOfRange"),
    ("ushort_scalar", ["-1"], False, "ValueOutOfRange"),
    ("uchar_scalar", ["256"], False, "ValueOutOfRange"),
    ("ulong64_scalar", ["18446744073709551616"], False, "ValueOutOfRange"),
    ("long_scalar_w", ["1.5"], False, "BadValue"),
    ("long_scalar_w", 2.5, True, "BadValue"),
    ("long_scalar_w", True, True, "BadValue"),
    ("boolean_scalar", ["yes"], False, "BadValue"),
    ("boolean_scalar", 2, True, "BadValue"),
    ("enum_scalar", ["Four"], False, "BadValue"),
    ("enum_scalar", ["4"], False, "ValueOutOfRange"),
    ("enum_scalar", -1, True, "ValueOutOfRange"),
    ("string_scalar", ["\u20ac uro"], False, "BadValue"),
    ("string_scalar", ["nul\x00inside"], False, "BadValue"),
    ("string_scalar", {"a": 1}, True, "BadValue"),
    ("double_spectrum", ["1", "x"], False, "BadValue"),
    ("double_spectrum", ["[1, 2"], False, "BadValue"),
    ("double_spectrum", {"a": [1]}, True, "BadValue"),
    ("long_spectrum_rw", ["1,2,3,4,5"], False, "BadShape"),
    ("double_image_rw", [[1, 2], [3]], True, "BadShape"),
    ("double_image_rw", [1, 2, 3], True, "BadShape"),
    ("double_image_rw", ["1", "2"], False, "BadShape"),
    ("double_image_rw", {"data": [1, 2, 3], "width": 2, "height": 2}, True, "BadShape"),
    ("double_image_rw", [[0.0] * 65], True, "BadShape"),
    ("double_image_rw", [[1, "x"]], True, "BadValue"),
    ("encoded_rw", {"format": "raw", "data": "not base64!"}, True, "BadValue"),
    ("encoded_rw", ["plain text"], False, "BadValue"),
]


@pytest.mark.parametrize(("attribute", "raw", "from_json", "reason"), BAD,
                         ids=[f"{b[0]}-{b[3]}-{i}" for i, b in enumerate(BAD)])
def test_a_value_that_cannot_be_converted_is_400_and_nothing_is_written(
    run: Runner, dev: tango.DeviceProxy, attribute: str, raw: Any, from_json: bool,
    reason: str,
) -> None:
    before = dev.read_attribute(attribute)
    error = fails(lambda: write(run, attribute, raw, from_json=from_json))
    assert error.status == 400 and error.kind is None
    assert error.entries[0].reason == reason, error.entries
    assert attribute in error.entries[0].description
    after = dev.read_attribute(attribute)
    assert _same(after.value, before.value)
    assert _same(after.w_value, before.w_value)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def test_a_read_only_attribute_is_405(run: Runner, dev: tango.DeviceProxy) -> None:
    """405: the value of a read-only attribute allows GET only (see ``writes.not_writable``)."""
    error = fails(lambda: write(run, "short_scalar_ro", ["1"]))
    assert error.status == 405 and error.kind is None
    assert error.entries[0].reason == "API_AttrNotWritable"
    assert "short_scalar_ro" in error.entries[0].description
    assert "READ" in error.entries[0].description
    assert dev.read_attribute("short_scalar_ro").value == -12


def test_an_unknown_attribute_is_tangos_not_found(run: Runner) -> None:
    error = fails(lambda: write(run, "no_such_attribute", ["1"]))
    assert error.kind is FailureKind.NOT_FOUND


def test_a_write_the_device_refuses_is_its_failure(run: Runner) -> None:
    error = fails(lambda: write(run, "refuses_writes", ["1"]))
    assert error.kind is FailureKind.FAILED
    assert error.entries[0].reason == "WritesRefused"


def test_async_write_does_not_read_back(run: Runner, dev: tango.DeviceProxy) -> None:
    dev.write_attribute("long_scalar_w", 1)
    outcome = write(run, "long_scalar_w", ["31"], wait=False)
    assert outcome.body is None and outcome.after is None
    assert (outcome.before, outcome.sent) == (1, 31)
    assert dev.read_attribute("long_scalar_w").value == 31


def test_a_write_to_the_demo_device(run: Runner, proxy: tango.DeviceProxy) -> None:
    """The demo device itself (``sys/tg_test/1``); its value is restored for the other tests."""
    initial = proxy.read_attribute("long_scalar_rww").value
    try:
        outcome = run(lambda b: b.write_attribute(run.host, DEMO_DEVICE, "long_scalar_rww",
                                                  ["-99"], from_json=False))
        assert proxy.read_attribute("long_scalar_rww").value == -99
        assert outcome.body["value"] == -99 and outcome.before == initial
    finally:
        proxy.write_attribute("long_scalar_rww", initial)


# -- several attributes ------------------------------------------------------------------------

def write_many(run: Runner, values: dict[str, list[str]], wait: bool = True) -> WriteOutcome:
    return run(lambda b: b.write_attributes(run.host, DEVICE, values, wait=wait))


def test_several_attributes_one_of_them_bad(run: Runner, dev: tango.DeviceProxy) -> None:
    dev.write_attribute("double_scalar_w", 1.0)
    dev.write_attribute("string_spectrum", ["old"])
    try:
        outcome = write_many(run, {
            "long_scalar_w": ["5"],
            "double_scalar_w": ["not a number"],
            "string_scalar": ["two words"],
            "string_spectrum": ["a", "b"],
            "no_such_attribute": ["1"],
            "short_scalar_ro": ["1"],
        })
        names = [item["name"] for item in outcome.body]
        assert names == ["long_scalar_w", "double_scalar_w", "string_scalar", "string_spectrum",
                         "no_such_attribute", "short_scalar_ro"]
        good, bad, text, spectrum, unknown, read_only = outcome.body
        assert good["value"] == 5 and good["quality"] == "ATTR_VALID"
        assert text["value"] == "two words"
        assert list(spectrum["value"]) == ["a", "b"]
        assert bad["quality"] == "FAILURE" and bad["errors"][0]["reason"] == "BadValue"
        assert unknown["quality"] == "FAILURE"
        assert read_only["errors"][0]["reason"] == "API_AttrNotWritable"
        assert dev.read_attribute("long_scalar_w").value == 5
        assert dev.read_attribute("double_scalar_w").value == 1.0
        assert dev.read_attribute("string_scalar").value == "two words"
        assert outcome.sent == {"long_scalar_w": 5, "string_scalar": "two words",
                                "string_spectrum": ["a", "b"]}
        assert outcome.before["string_spectrum"] == ["old"]
        assert outcome.after == outcome.sent
    finally:
        dev.write_attribute("string_scalar", "Hello Tango!")
        dev.write_attribute("string_spectrum", ["Hello", "Tango", "!"])


def test_several_attributes_one_refused_by_the_device(run: Runner, dev: tango.DeviceProxy) -> None:
    dev.write_attribute("double_scalar_w", 1.0)
    outcome = write_many(run, {"refuses_writes": ["1"], "double_scalar_w": ["8.5"]})
    refused, written = outcome.body
    assert refused["name"] == "refuses_writes" and refused["quality"] == "FAILURE"
    assert refused["errors"][0]["reason"] == "API_AttributeFailed"
    assert written["value"] == 8.5
    assert dev.read_attribute("double_scalar_w").value == 8.5
    assert outcome.after == {"double_scalar_w": 8.5}


def test_several_attributes_async(run: Runner, dev: tango.DeviceProxy) -> None:
    outcome = write_many(run, {"long_scalar_w": ["41"], "short_scalar": ["-41"]}, wait=False)
    assert outcome.body is None and outcome.sent == {"long_scalar_w": 41, "short_scalar": -41}
    assert dev.read_attribute("long_scalar_w").value == 41
    assert dev.read_attribute("short_scalar").value == -41
    dev.write_attribute("short_scalar", 7)


def test_several_attributes_async_one_bad_writes_nothing(run: Runner,
                                                         dev: tango.DeviceProxy) -> None:
    dev.write_attribute("long_scalar_w", 1)
    error = fails(lambda: write_many(run, {"long_scalar_w": ["2"], "short_scalar": ["x"],
                                           "ushort_scalar": ["-1"]}, wait=False))
    assert error.status == 400
    assert [e.reason for e in error.entries] == ["BadValue", "ValueOutOfRange"]
    assert dev.read_attribute("long_scalar_w").value == 1


# -- commands ------------------------------------------------------------------------------------

def command(run: Runner, name: str, body: bytes, content_type: str | None = None,
            wait: bool = True, device: str = DEVICE) -> WriteOutcome:
    return run(lambda b: b.run_command(run.host, device, name, body, content_type, wait=wait))


def v1(name: str, argin: Any) -> bytes:
    return json.dumps({"host": "db:10000", "device": DEVICE, "name": name,
                       "input": argin}).encode()


# command, JSON body, tangojs's un-quoted String(value), the output
COMMANDS = [
    ("DevBoolean", b"true", b"true", True),
    ("DevShort", b"-32768", b"-32768", -32768),
    ("DevUShort", b"65535", b"65535", 65535),
    ("DevLong", b"-2147483648", b"-2147483648", -2147483648),
    ("DevULong", b"4294967295", b"4294967295", 4294967295),
    ("DevLong64", b"-9223372036854775808", b"-9223372036854775808", -(2**63)),
    ("DevULong64", b"18446744073709551615", b"18446744073709551615", 2**64 - 1),
    ("DevFloat", b"1.5", b"1.5", 1.5),
    ("DevDouble", b"3.25", b"3.25", 3.25),
    ("DevString", b'"text, with a comma"', b"hello tangojs", None),
    ("DevVarCharArray", b"[0, 1, 255]", b"0,1,255", [0, 1, 255]),
    ("DevVarShortArray", b"[-1, 2]", b"-1,2", [-1, 2]),
    ("DevVarLongArray", b"[-1, 2, 3]", b"-1,2,3", [-1, 2, 3]),
    ("DevVarLong64Array", b"[4611686018427387904]", b"4611686018427387904", [2**62]),
    ("DevVarULongArray", b"[4294967295, 0]", b"4294967295,0", [4294967295, 0]),
    ("DevVarFloatArray", b"[1.5, 2.5, 4]", b"1.5,2.5,4", [1.5, 2.5, 4.0]),
    ("DevVarDoubleArray", b"[1.5, 2.5, 4]", b"1.5,2.5,4", [1.5, 2.5, 4.0]),
    ("DevVarStringArray", b'["a", "b c"]', b"a,b c", ["a", "b c"]),
]


@pytest.mark.parametrize("form", ["json", "json-as-text", "tangojs", "tangojs-text", "v1"])
@pytest.mark.parametrize(("name", "as_json", "unquoted", "output"), COMMANDS,
                         ids=[c[0] for c in COMMANDS])
def test_command_of_every_argument_type(run: Runner, name: str, as_json: bytes,
                                        unquoted: bytes, output: Any, form: str) -> None:
    body, content_type = {
        "json": (as_json, "application/json"),
        "json-as-text": (as_json, "text/plain;charset=UTF-8"),
        "tangojs": (unquoted, None),
        "tangojs-text": (unquoted, "text/plain;charset=UTF-8"),
        "v1": (v1(name, json.loads(as_json)), "application/json"),
    }[form]
    if output is None:  # DevString echoes its argument
        output = json.loads(as_json) if form in ("json", "json-as-text", "v1") \
            else unquoted.decode()
    outcome = command(run, name, body, content_type)
    assert outcome.body["name"] == name
    assert set(outcome.body) == {"name", "output"}
    assert outcome.after == output
    assert outcome.sent == output
    assert outcome.before is None
    json.dumps(outcome.after, allow_nan=False)


STRUCTS = [
    ("DevVarLongStringArray", {"lvalue": [1, -2], "svalue": ["a", "b"]}),
    ("DevVarDoubleStringArray", {"dvalue": [1.5, -2.0], "svalue": ["x"]}),
]


@pytest.mark.parametrize("form", ["json", "pair", "v1"])
@pytest.mark.parametrize(("name", "argin"), STRUCTS, ids=[s[0] for s in STRUCTS])
def test_struct_arguments(run: Runner, name: str, argin: dict[str, list[Any]], form: str) -> None:
    body = {"json": json.dumps(argin).encode(),
            "pair": json.dumps(list(argin.values())).encode(),
            "v1": v1(name, argin)}[form]
    outcome = command(run, name, body)
    assert outcome.after == argin
    assert set(outcome.body["output"]) == set(argin)
    assert list(outcome.body["output"]["svalue"]) == argin["svalue"]


@pytest.mark.parametrize(("name", "body", "output"), [
    ("DevShort", b"0", 0),
    ("DevString", b"", ""),
    ("DevString", b'""', ""),
    ("DevBoolean", b"false", False),
    ("DevVarDoubleArray", b"[]", []),
    ("DevVarStringArray", b"", []),
    ("DevDouble", b"NaN", "NaN"),
    ("DevString", b"42", "42"),
    ("DevString", b'["not", "an array"]', '["not", "an array"]'),
    ("DevVarDoubleArray", b"7", [7.0]),
])
def test_command_outputs_that_are_falsy_or_special_are_kept(run: Runner, name: str, body: bytes,
                                                            output: Any) -> None:
    outcome = command(run, name, body)
    assert "output" in outcome.body
    assert outcome.after == output


@pytest.mark.parametrize("body", [b"", b"  ", b"null", v1("DevVoid", None)])
def test_dev_void(run: Runner, body: bytes) -> None:
    outcome = command(run, "DevVoid", body)
    assert outcome.body == {"name": "DevVoid"}
    assert outcome.sent is None and outcome.after is None


def test_a_void_command_with_an_output(run: Runner, dev: tango.DeviceProxy) -> None:
    outcome = command(run, "Status", b"")
    assert outcome.body == {"name": "Status", "output": dev.status()}


@pytest.mark.parametrize(("name", "body", "content_type", "reason"), [
    ("DevVoid", b"5", None, "BadValue"),
    ("DevShort", b"32768", None, "ValueOutOfRange"),
    ("DevUShort", b"-1", None, "ValueOutOfRange"),
    ("DevLong", b"abc", None, "BadValue"),
    ("DevLong", b"2.5", None, "BadValue"),
    ("DevDouble", b"", None, "MissingValue"),
    ("DevDouble", b"null", None, "MissingValue"),
    ("DevBoolean", b"yes", None, "BadValue"),
    ("DevString", b"hello tangojs", "application/json", "BadBody"),
    ("DevString", "\u20ac".encode(), None, "BadValue"),
    ("DevString", b"\xff\xfe", None, "BadBody"),
    ("DevVarCharArray", b"1,256", None, "ValueOutOfRange"),
    ("DevVarLongArray", b'{"a": 1}', None, "BadValue"),
    ("DevVarLongStringArray", b"1,2", None, "BadValue"),
    ("DevVarLongStringArray", b'{"lvalue": [1.5], "svalue": []}', None, "BadValue"),
    ("DevVarLongStringArray", b'{"dvalue": [1], "svalue": []}', None, "BadValue"),
])
def test_an_argin_that_cannot_be_converted_is_400(run: Runner, name: str, body: bytes,
                                                  content_type: str | None, reason: str) -> None:
    error = fails(lambda: command(run, name, body, content_type))
    assert error.status == 400 and error.kind is None
    assert error.entries[0].reason == reason, error.entries
    assert name in error.entries[0].description


def test_an_unknown_command_is_tangos_not_found(run: Runner) -> None:
    assert fails(lambda: command(run, "NoSuchCommand", b"")).kind is FailureKind.NOT_FOUND


def test_async_command(run: Runner, dev: tango.DeviceProxy) -> None:
    """``wait=False`` sends the command and does not wait for it: the device runs it anyway."""
    assert dev.state() == tango.DevState.ON
    try:
        outcome = command(run, "SwitchStates", b"", wait=False)
        assert outcome.body is None
        poll("SwitchStates run", lambda: dev.state() == tango.DevState.FAULT)
    finally:
        if dev.state() != tango.DevState.ON:
            dev.command_inout("SwitchStates")


def test_a_command_of_the_demo_device(run: Runner) -> None:
    outcome = command(run, "DevDouble", b"2.5", device=DEMO_DEVICE)
    assert outcome.body == {"name": "DevDouble", "output": 2.5}


# -- properties ----------------------------------------------------------------------------------

def test_device_properties_put_and_delete(run: Runner, dev: tango.DeviceProxy) -> None:
    try:
        outcome = run(lambda b: b.put_device_properties(
            run.host, DEVICE, {"write_test": ["a", "b c"], "write_other": ["1"]}))
        assert outcome.body == [{"name": "write_test", "values": ["a", "b c"]},
                                {"name": "write_other", "values": ["1"]}]
        assert dev.get_property(["write_test", "write_other"]) == {
            "write_test": ["a", "b c"], "write_other": ["1"]}
        assert outcome.before == {"write_test": [], "write_other": []}
        assert outcome.after == outcome.sent == {"write_test": ["a", "b c"], "write_other": ["1"]}

        outcome = run(lambda b: b.put_device_properties(run.host, DEVICE, {"write_test": ["z"]}))
        assert outcome.before == {"write_test": ["a", "b c"]}
        assert dev.get_property("write_test") == {"write_test": ["z"]}

        outcome = run(lambda b: b.delete_device_property(run.host, DEVICE, "write_test"))
        assert outcome.body is None and outcome.before == {"write_test": ["z"]}
        assert dev.get_property("write_test") == {"write_test": []}
        assert dev.get_property("write_other") == {"write_other": ["1"]}
    finally:
        dev.delete_property(["write_test", "write_other"])


def test_device_property_errors(run: Runner, control_system: ControlSystem) -> None:
    error = fails(lambda: run(lambda b: b.put_device_properties(run.host, DEVICE, {"p": []})))
    assert error.status == 400 and error.entries[0].reason == "MissingValue"
    error = fails(lambda: run(lambda b: b.put_device_properties(run.host, DEVICE, {"p": ["\x00"]})))
    assert error.status == 400
    error = fails(lambda: run(lambda b: b.put_device_properties(
        run.host, "no/such/device", {"p": ["1"]})))
    assert error.kind is FailureKind.NOT_FOUND
    assert control_system.database().get_device_property("no/such/device", "p") == {"p": []}


def test_attribute_property_put_and_delete(run: Runner, control_system: ControlSystem) -> None:
    db = control_system.database()

    def stored() -> dict[str, list[str]]:
        return {k: list(v) for k, v in db.get_device_attribute_property(
            DEVICE, ["double_scalar_w"])["double_scalar_w"].items()}

    try:
        outcome = run(lambda b: b.put_attribute_property(
            run.host, DEVICE, "double_scalar_w", "write_note", ["x", "y"]))
        assert outcome.body == {"write_note": ["x", "y"]}
        assert stored()["write_note"] == ["x", "y"]
        assert outcome.before == {"write_note": []} and outcome.after == outcome.body
        listed = run(lambda b: b.attribute_properties(run.host, DEVICE, "double_scalar_w"))
        assert listed["write_note"] == ["x", "y"]

        outcome = run(lambda b: b.delete_attribute_property(
            run.host, DEVICE, "double_scalar_w", "write_note"))
        assert outcome.body is None and outcome.before == {"write_note": ["x", "y"]}
        assert "write_note" not in stored()
    finally:
        db.delete_device_attribute_property(DEVICE, {"double_scalar_w": ["write_note"]})


# -- attribute configuration ---------------------------------------------------------------------

def set_info(run: Runner, body: Any, attribute: str = "double_scalar_w") -> WriteOutcome:
    return run(lambda b: b.set_attribute_info(run.host, DEVICE, attribute, body))


def test_set_attribute_info_and_back(run: Runner, dev: tango.DeviceProxy) -> None:
    original = run(lambda b: b.attribute_info(run.host, DEVICE, "double_scalar_w"))  # cached
    try:
        outcome = set_info(run, {"label": "Set point", "unit": "mm",
                                 "alarms": {"max_alarm": 100}, "events": {"ch_event": {
                                     "abs_change": "0.5"}}})
        config = dev.get_attribute_config_ex("double_scalar_w")[0]
        assert (config.label, config.unit, config.alarms.max_alarm) == ("Set point", "mm", "100")
        assert config.events.ch_event.abs_change == "0.5"
        assert outcome.body["label"] == "Set point" and outcome.body["unit"] == "mm"
        assert outcome.sent == {"label": "Set point", "unit": "mm", "alarms.max_alarm": "100",
                                "events.ch_event.abs_change": "0.5"}
        assert outcome.before == {"label": original["label"], "unit": original["unit"],
                                  "alarms.max_alarm": "Not specified",
                                  "events.ch_event.abs_change": "Not specified"}
        assert outcome.after == outcome.sent
        # the cached info is gone: a read of the info sees the new one
        info = run(lambda b: b.attribute_info(run.host, DEVICE, "double_scalar_w"))
        assert (info["label"], info["unit"], info["max_alarm"]) == ("Set point", "mm", "100")

        # the whole info object PUT back, with one field changed
        info["label"] = "Set point 2"
        assert set_info(run, info).sent == {"label": "Set point 2"}
        assert dev.get_attribute_config("double_scalar_w").label == "Set point 2"
    finally:  # null and "" give Tango's defaults back
        back = set_info(run, {"label": None, "unit": "", "alarms": {"max_alarm": None},
                              "events": {"ch_event": {"abs_change": ""}}})
    config = dev.get_attribute_config_ex("double_scalar_w")[0]
    assert (config.label, config.unit) == (original["label"], original["unit"])
    assert back.body["alarms"]["max_alarm"] == "Not specified"
    assert back.body["events"]["ch_event"]["abs_change"] == "Not specified"


def test_set_enum_labels(run: Runner, dev: tango.DeviceProxy) -> None:
    dev.write_attribute("enum_scalar", 1)
    assert run(lambda b: b.read_attribute(run.host, DEVICE, "enum_scalar"))["value"] == "One"
    try:
        set_info(run, {"enum_label": ["Zéro", "Un", "Deux", "Trois"]}, "enum_scalar")
        assert run(lambda b: b.read_attribute(run.host, DEVICE, "enum_scalar"))["value"] == "Un"
        write(run, "enum_scalar", ["Deux"])
        assert dev.read_attribute("enum_scalar").value == 2
    finally:
        set_info(run, {"enum_label": ["Zero", "One", "Two", "Three"]}, "enum_scalar")


@pytest.mark.parametrize(("body", "reason"), [
    ({"data_type": "DevLong"}, "NotChangeable"),
    ({"writable": "READ"}, "NotChangeable"),
    ({"nonsense": "1"}, "UnknownField"),
    ({"alarms": {"nonsense": "1"}}, "UnknownField"),
    ({"label": ["a list"]}, "BadValue"),
    ({"label": True}, "BadValue"),
    ({"enum_label": ["a"]}, "NotChangeable"),
    ({"min_alarm": "1", "alarms": {"min_alarm": "2"}}, "BadValue"),
    ([1, 2], "BadValue"),
])
def test_set_attribute_info_refuses(run: Runner, dev: tango.DeviceProxy, body: Any,
                                    reason: str) -> None:
    label = dev.get_attribute_config("double_scalar_w").label
    error = fails(lambda: set_info(run, body))
    assert error.status == 400 and error.entries[0].reason == reason, error.entries
    assert dev.get_attribute_config("double_scalar_w").label == label


def test_set_attribute_info_tango_refuses(run: Runner) -> None:
    error = fails(lambda: set_info(run, {"min_value": "abc"}))
    assert error.kind is FailureKind.FAILED and error.entries[0].reason == "API_AttrOptProp"


def test_set_attribute_info_without_change_sets_nothing(run: Runner) -> None:
    info = run(lambda b: b.attribute_info(run.host, DEVICE, "double_scalar_w"))
    outcome = set_info(run, {"name": "DOUBLE_SCALAR_W", "label": info["label"]})
    assert outcome.sent == {} and outcome.body == info


# -- nothing begun before a write answers after it -------------------------------------------------

def test_a_shared_read_under_way_takes_no_new_readers_after_a_write(
    run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read of ``[x, y]`` is under way when ``x`` is written; the same read asked after the
    write must ask the device again, not join the one that holds the old value."""
    backend = TangoBackend(Config(tango_host=run.backend.config.tango_host))
    stored = {"x": 1.0, "y": 2.0}
    gate = asyncio.Event()
    calls: list[str] = []

    def attribute(name: str, value: float) -> Any:
        return SimpleNamespace(name=name, value=value, has_failed=False, type=None,
                               data_format=tango.AttrDataFormat.SCALAR,
                               quality=tango.AttrQuality.ATTR_VALID,
                               time=SimpleNamespace(tv_sec=1, tv_usec=0))

    async def device_call(host: str, device: str, method: str, *args: Any) -> Any:
        calls.append(method)
        if method == "read_attributes":
            snapshot = [attribute(n, stored[n]) for n in args[0]]
            if calls.count("read_attributes") == 1:
                await gate.wait()  # the first read's answer is still on its way
            return snapshot
        if method == "read_attribute":
            return attribute(args[0], stored[args[0]])
        if method == "write_attribute":
            stored["x"] = args[1]
            return None
        raise AssertionError(method)

    async def config(host: str, device: str, name: str) -> Any:
        return ({"name": name, "writable": "READ_WRITE", "data_type": "DevDouble",
                 "data_format": "SCALAR", "max_dim_x": 1, "max_dim_y": 0}, None)

    monkeypatch.setattr(backend, "_device_call", device_call)
    monkeypatch.setattr(backend, "_attribute_config", config)

    async def scenario() -> tuple[Any, Any]:
        first = asyncio.ensure_future(backend.read_attributes("h", "d", ["x", "y"]))
        await asyncio.sleep(0)
        await backend.write_attribute("h", "d", "x", ["5"], from_json=False, wait=False)
        second = asyncio.ensure_future(backend.read_attributes("h", "d", ["x", "y"]))
        await asyncio.sleep(0)
        gate.set()
        return await first, await second

    old, new = asyncio.run_coroutine_threadsafe(scenario(), run.loop).result(10)
    assert old[0]["value"] == 1.0
    assert new[0]["value"] == 5.0
    assert calls.count("read_attributes") == 2


def test_single_flight_forget() -> None:
    async def scenario() -> tuple[list[int], int]:
        flight = SingleFlight()
        gates = {1: asyncio.Event(), 2: asyncio.Event()}
        runs = 0

        async def call() -> int:
            nonlocal runs
            runs += 1
            mine = runs
            if mine in gates:
                await gates[mine].wait()
            return mine

        first = asyncio.ensure_future(flight.run("k", call))
        joined = asyncio.ensure_future(flight.run("k", call))
        await asyncio.sleep(0)
        assert flight.forget(lambda key: key == "k") == 1
        later = asyncio.ensure_future(flight.run("k", call))  # runs anew
        await asyncio.sleep(0)
        gates[1].set()
        results = [await first, await joined]
        # the first call's end leaves the later call in place: a new caller joins it
        joiner = asyncio.ensure_future(flight.run("k", call))
        await asyncio.sleep(0)
        gates[2].set()
        return results + [await later, await joiner], runs

    results, runs = asyncio.run(scenario())
    assert results == [1, 1, 2, 2] and runs == 2


def test_a_discarded_cache_entry_is_built_anew_and_an_old_build_is_not_stored() -> None:
    async def scenario() -> list[str]:
        cache: AsyncLRUCache[str] = AsyncLRUCache("t", 10)
        gate = asyncio.Event()
        built = 0

        async def build() -> str:
            nonlocal built
            built += 1
            mine = built
            if mine == 1:
                await gate.wait()
                return "old"
            return "new"

        slow = asyncio.ensure_future(cache.get("k", build))
        await asyncio.sleep(0)
        cache.discard("k")
        fresh = await cache.get("k", build)
        gate.set()
        stale = await slow
        return [stale, fresh, await cache.get("k", build)]

    assert asyncio.run(scenario()) == ["old", "new", "new"]


# -- pure conversions without a device ---------------------------------------------------------

def test_property_values() -> None:
    from mtango.tango.writes import property_values

    assert property_values(["a", "b c"]) == ["a", "b c"]
    assert property_values("alone") == ["alone"]
    assert property_values(['["x", "y,z"]']) == ["x", "y,z"]
    assert property_values([1, 2.5]) == ["1", "2.5"]
    assert property_values(["[not json"]) == ["[not json"]
    for bad in ([], ["nul\x00"], {"a": 1}, ["[]"]):
        error = fails(lambda bad=bad: property_values(bad))
        assert error.status == 400


def test_dev_state_values() -> None:
    from mtango.tango.writes import attribute_value, sent_value

    info = {"name": "states", "writable": "READ_WRITE", "data_type": "DevState",
            "data_format": "SPECTRUM", "max_dim_x": 4, "max_dim_y": 0}
    value = attribute_value(info, ["on", "FAULT", "8"], from_json=False)
    assert value == [tango.DevState.ON, tango.DevState.FAULT, tango.DevState.FAULT]
    assert sent_value(info, value) == ["ON", "FAULT", "FAULT"]
    assert fails(lambda: attribute_value(info, ["BROKEN"], from_json=False)).status == 400


def test_enum_spectrum_is_sent_as_labels() -> None:
    from mtango.tango.writes import attribute_value, sent_value

    info = {"name": "modes", "writable": "WRITE", "data_type": "DevEnum",
            "data_format": "SPECTRUM", "max_dim_x": 4, "max_dim_y": 0,
            "enum_label": ["Off", "Slow", "Fast"]}
    value = attribute_value(info, ["Fast", "0", "slow"], from_json=False)
    assert value.dtype == np.int16 and value.tolist() == [2, 0, 1]
    assert sent_value(info, value) == ["Fast", "Off", "Slow"]


def test_read_with_write_names_its_set_point() -> None:
    from mtango.tango.writes import attribute_value

    info = {"name": "position", "writable": "READ_WITH_WRITE", "data_type": "DevDouble",
            "data_format": "SCALAR", "writable_attr_name": "position_sp"}
    error = fails(lambda: attribute_value(info, ["1"], from_json=False))
    assert error.status == 405
    assert "position_sp" in error.entries[0].description
