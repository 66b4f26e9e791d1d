"""rc3 attributes of sys/tg_test/1: links, values of every attribute, plain values, info, history,
attribute properties.

The reference for every value is a direct ``tango.DeviceProxy`` read of the same attribute,
converted here, independently of the bridge's own conversion code, to the JSON rc3 specifies.
"""

from __future__ import annotations

import base64
import io
import json
import math
import time
from typing import Any

import numpy as np
import pytest
import tango
from PIL import Image

from mtango.demo import ATTRIBUTE_PROPERTIES, DEMO_DEVICE
from tests.bridge import poll

# Every attribute of the demo device (test_attribute_names_are_complete keeps this list honest).
ATTRIBUTES = [
    "double_scalar", "double_scalar_w", "float_scalar", "long_scalar", "long_scalar_w",
    "long_scalar_rww", "long64_scalar", "ulong_scalar", "ulong64_scalar", "short_scalar",
    "short_scalar_ro", "ushort_scalar", "uchar_scalar", "boolean_scalar", "string_scalar",
    "enum_scalar", "enum_scalar_ro", "ampli", "no_value", "nan_scalar", "inf_spectrum",
    "encoded_scalar", "encoded_gray16", "encoded_rgb24", "encoded_jpeg", "double_spectrum",
    "double_spectrum_ro", "float_spectrum", "long_spectrum", "long64_spectrum", "short_spectrum",
    "ushort_spectrum", "ulong_spectrum", "uchar_spectrum", "boolean_spectrum", "string_spectrum",
    "double_image", "long_image", "uchar_image",
    "big_spectrum", "big_nan_spectrum", "big_image", "polled_counter", "pushed_counter",
    "pushed_spectrum", "State", "Status",
]

INFO_KEYS = {
    "name", "writable", "data_format", "data_type", "max_dim_x", "max_dim_y", "description",
    "label", "unit", "standard_unit", "display_unit", "format", "min_value", "max_value",
    "min_alarm", "max_alarm", "writable_attr_name", "level", "extensions", "alarms", "events",
    "sys_extensions", "isMemorized", "isSetAtInit", "memorized", "root_attr_name", "enum_label",
}


# -- helpers ---------------------------------------------------------------------------------------


def strict_json(body: bytes) -> Any:
    """Parse as strict JSON: bare NaN/Infinity (which browsers refuse) fail the test."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"non-standard JSON constant {name} in {body[:200]!r}")

    return json.loads(body, parse_constant=refuse)


def ms(tv: Any) -> int:
    return int(tv.tv_sec) * 1000 + int(tv.tv_usec) // 1000


def now_ms() -> int:
    return int(time.time() * 1000)


def _plain(value: Any) -> Any:
    """Python/numpy value -> JSON-like Python value, non-finite floats as rc3 strings."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def expected_value(da: tango.DeviceAttribute, labels: list[str]) -> Any:
    """What rc3 should send as ``value`` for this DeviceProxy read."""
    if da.type == tango.CmdArgType.DevState:
        return tango.DevState(int(da.value)).name
    if da.type == tango.CmdArgType.DevEnum:
        return labels[int(da.value)]
    if da.type == tango.CmdArgType.DevEncoded:
        fmt, data = da.value
        return {"format": fmt, "data": base64.b64encode(bytes(data)).decode("ascii")}
    if da.data_format == tango.AttrDataFormat.IMAGE:
        return {"data": _plain(np.asarray(da.value).ravel()), "width": da.dim_x,
                "height": da.dim_y}
    return _plain(da.value)


def assert_same(actual: Any, expected: Any, where: str = "value") -> None:
    """Equal and of the same JSON type (so 1 vs 1.0 vs true are told apart)."""
    assert type(actual) is type(expected), f"{where}: {actual!r} vs expected {expected!r}"
    if isinstance(expected, list):
        assert len(actual) == len(expected), f"{where}: {actual!r} vs {expected!r}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{where}[{i}]")
    elif isinstance(expected, dict):
        assert set(actual) == set(expected), f"{where}: {actual!r} vs {expected!r}"
        for key in expected:
            assert_same(actual[key], expected[key], f"{where}.{key}")
    else:
        assert actual == expected, f"{where}: {actual!r} vs expected {expected!r}"


def enum_labels(proxy: tango.DeviceProxy, name: str) -> list[str]:
    return list(proxy.get_attribute_config_ex([name])[0].enum_labels)


def _errors_reasons(body: dict) -> list[str]:
    return [e["reason"] for e in body["errors"]]


# -- the attribute list and link objects ----------------------------------------------------------


def test_attribute_names_are_complete(proxy):
    assert sorted(ATTRIBUTES) == sorted(proxy.get_attribute_list())


def test_attributes_list(bridge, proxy, device_path):
    reply = bridge.get(f"{device_path}/attributes")
    assert reply.status == 200
    items = reply.json()
    assert [item["name"] for item in items] == list(proxy.get_attribute_list())
    dev = f"{bridge.base}{device_path}"
    for item in items:
        url = f"{dev}/attributes/{item['name']}"
        assert item == {
            "name": item["name"],
            "value": f"{url}/value",
            "info": f"{url}/info",
            "history": f"{url}/history",
            "properties": f"{url}/properties",
            "_links": {"_device": dev, "_parent": f"{dev}/attributes", "_self": url},
        }


def test_one_attribute_link_object(bridge, device_path):
    reply = bridge.get(f"{device_path}/attributes/long_scalar")
    assert reply.status == 200
    listed = bridge.get(f"{device_path}/attributes").json()
    assert reply.json() == next(item for item in listed if item["name"] == "long_scalar")


def test_attribute_links_lead_to_values(bridge, device_path):
    body = bridge.get(f"{device_path}/attributes/string_scalar").json()
    reply = bridge.get(body["value"][len(bridge.base):])
    assert reply.json()["name"] == "string_scalar"
    assert bridge.get(body["info"][len(bridge.base):]).json()["data_type"] == "DevString"


# -- one value, for every attribute ----------------------------------------------------------------


@pytest.mark.parametrize("name", ATTRIBUTES)
def test_value_of_every_attribute(bridge, proxy, device_path, name):
    """Bridge read between two proxy reads: same value, quality, type and a timestamp between."""
    labels = enum_labels(proxy, name)
    wall_before = now_ms()
    try:
        before = proxy.read_attribute(name)
    except tango.DevFailed as exc:
        before, failure = None, exc
    reply = bridge.get(f"{device_path}/attributes/{name}/value")
    after = None if before is None else proxy.read_attribute(name)
    wall_after = now_ms()

    assert reply.status == 200
    assert reply.headers["content-type"].startswith("application/json")
    body = strict_json(reply.body)
    assert type(body["timestamp"]) is int

    if before is None:  # the device refuses this read: a FAILURE body (as Java's), still HTTP 200
        assert body.get("name", name) == name
        assert body["quality"] == "FAILURE"
        assert "value" not in body
        assert _errors_reasons(body)[0] == failure.args[0].reason
        assert wall_before <= body["timestamp"] <= wall_after + 1
        return

    assert set(body) == {"name", "value", "quality", "timestamp"}
    assert body["name"] == name
    assert body["quality"] == before.quality.name
    assert ms(before.time) <= body["timestamp"] <= ms(after.time)
    old, new = expected_value(before, labels), expected_value(after, labels)
    if old == new:
        assert_same(body["value"], old)
    elif body["timestamp"] == ms(before.time):
        assert_same(body["value"], old)
    elif body["timestamp"] == ms(after.time):
        assert_same(body["value"], new)
    else:  # a value that moves (double_scalar, the counters): read in between, only its type
        assert type(body["value"]) is type(old)


def test_value_last_modified_header(bridge, device_path):
    reply = bridge.get(f"{device_path}/attributes/long_scalar/value")
    stamp = reply.json()["timestamp"] // 1000
    assert reply.headers["last-modified"] == time.strftime(
        "%a, %d %b %Y %H:%M:%S GMT", time.gmtime(stamp)
    )


def test_integer_widths(bridge, proxy, device_path):
    for name in ("long_scalar", "long64_scalar", "ulong_scalar", "ulong64_scalar",
                 "short_scalar", "short_scalar_ro", "ushort_scalar", "uchar_scalar"):
        value = bridge.get(f"{device_path}/attributes/{name}/value").json()["value"]
        assert type(value) is int, name
        assert value == proxy.read_attribute(name).value, name


def test_ulong64_is_exact(bridge, proxy, device_path):
    assert proxy.read_attribute("ulong64_scalar").value == 2**64 - 2
    reply = bridge.get(f"{device_path}/attributes/ulong64_scalar/value")
    assert b'"value":18446744073709551614' in reply.body.replace(b" ", b"")
    assert reply.json()["value"] == 2**64 - 2


def test_long64_spectrum_is_exact(bridge, device_path):
    value = bridge.get(f"{device_path}/attributes/long64_spectrum/value").json()["value"]
    assert value == [2**40, -(2**40), 3]


def test_booleans_are_json_booleans(bridge, proxy, device_path):
    scalar = bridge.get(f"{device_path}/attributes/boolean_scalar/value")
    assert scalar.json()["value"] is bool(proxy.read_attribute("boolean_scalar").value)
    assert b'"value":true' in scalar.body or b'"value":false' in scalar.body
    spectrum = bridge.get(f"{device_path}/attributes/boolean_spectrum/value").json()["value"]
    assert spectrum == [True, False, True]
    assert all(type(v) is bool for v in spectrum)


def test_strings(bridge, proxy, device_path):
    scalar = bridge.get(f"{device_path}/attributes/string_scalar/value").json()["value"]
    assert scalar == proxy.read_attribute("string_scalar").value
    spectrum = bridge.get(f"{device_path}/attributes/string_spectrum/value").json()["value"]
    assert spectrum == list(proxy.read_attribute("string_spectrum").value)


def test_state_attribute_is_its_name(bridge, proxy, device_path):
    body = bridge.get(f"{device_path}/attributes/State/value").json()
    assert body["value"] == proxy.state().name
    assert body["value"] in tango.DevState.names


def test_enum_values_are_labels(bridge, proxy, device_path):
    labels = enum_labels(proxy, "enum_scalar")
    assert labels == ["Zero", "One", "Two", "Three"]
    value = bridge.get(f"{device_path}/attributes/enum_scalar/value").json()["value"]
    assert value == labels[proxy.read_attribute("enum_scalar").value]
    if proxy.read_attribute("enum_scalar").value == 1:  # unless another test wrote it
        assert value == "One"
    read_only = bridge.get(f"{device_path}/attributes/enum_scalar_ro/value").json()["value"]
    assert read_only == "Two"


def test_spectra_are_lists(bridge, proxy, device_path):
    for name in ("double_spectrum_ro", "float_spectrum", "long_spectrum", "ushort_spectrum",
                 "ulong_spectrum", "uchar_spectrum"):
        value = bridge.get(f"{device_path}/attributes/{name}/value").json()["value"]
        assert value == np.asarray(proxy.read_attribute(name).value).tolist(), name
    assert bridge.get(f"{device_path}/attributes/uchar_spectrum/value").json()["value"] == [
        0, 1, 127, 255
    ]


def test_images_are_flat_row_major(bridge, proxy, device_path):
    for name in ("double_image", "long_image", "uchar_image"):
        value = bridge.get(f"{device_path}/attributes/{name}/value").json()["value"]
        array = proxy.read_attribute(name).value
        assert array.shape == (3, 5)
        assert value == {"data": array.ravel().tolist(), "width": 5, "height": 3}, name
    long_image = bridge.get(f"{device_path}/attributes/long_image/value").json()["value"]
    assert long_image["data"][:6] == [0, 1, 2, 3, 4, 10]  # row 0, then row 1


def test_encoded_value_decodes_to_the_device_bytes(bridge, proxy, device_path):
    value = bridge.get(f"{device_path}/attributes/encoded_scalar/value").json()["value"]
    fmt, data = proxy.read_attribute("encoded_scalar").value
    assert value["format"] == fmt == "utf8"
    assert base64.b64decode(value["data"], validate=True) == bytes(data) == b"Hello encoded"


def test_non_finite_floats_are_strings(bridge, device_path):
    nan = bridge.get(f"{device_path}/attributes/nan_scalar/value")
    assert strict_json(nan.body)["value"] == "NaN"
    inf = bridge.get(f"{device_path}/attributes/inf_spectrum/value")
    assert strict_json(inf.body)["value"] == [1.0, "Infinity", "-Infinity", "NaN"]


def test_failed_read_is_a_failure_body(bridge, device_path):
    reply = bridge.get(f"{device_path}/attributes/no_value/value")
    assert reply.status == 200
    body = reply.json()
    assert body["quality"] == "FAILURE"
    assert _errors_reasons(body)[0] == "DemoNoValue"
    assert set(body["errors"][0]) == {"reason", "description", "severity", "origin"}
    assert "no_value never has a value" in body["errors"][0]["description"]


# -- several values --------------------------------------------------------------------------------


def test_several_values_in_order(bridge, proxy, device_path):
    names = ["string_scalar", "long_scalar", "double_spectrum_ro", "State"]
    reply = bridge.get(f"{device_path}/attributes/value?" + "&".join(f"attr={n}" for n in names))
    assert reply.status == 200
    items = strict_json(reply.body)
    assert [item["name"] for item in items] == names
    for item, name in zip(items, names, strict=True):
        da = proxy.read_attribute(name)
        assert_same(item["value"], expected_value(da, []), name)
        assert item["quality"] == da.quality.name
        assert type(item["timestamp"]) is int


def test_several_values_with_a_failing_attribute(bridge, proxy, device_path):
    start = now_ms()
    reply = bridge.get(f"{device_path}/attributes/value?attr=long_scalar&attr=no_value"
                       "&attr=string_scalar")
    end = now_ms()
    assert reply.status == 200
    items = reply.json()
    assert [item["name"] for item in items] == ["long_scalar", "no_value", "string_scalar"]
    assert items[0]["value"] == proxy.read_attribute("long_scalar").value
    assert items[2]["value"] == proxy.read_attribute("string_scalar").value
    failed = items[1]
    assert set(failed) == {"name", "errors", "quality", "timestamp"}
    assert failed["quality"] == "FAILURE"
    assert "DemoNoValue" in _errors_reasons(failed)
    assert start <= failed["timestamp"] <= end + 1


def test_several_values_with_an_unknown_attribute(bridge, proxy, device_path):
    reply = bridge.get(f"{device_path}/attributes/value?attr=long_scalar&attr=no_such_attr"
                       "&attr=string_scalar")
    assert reply.status == 200
    items = reply.json()
    assert [item["name"] for item in items] == ["long_scalar", "no_such_attr", "string_scalar"]
    assert items[0]["value"] == proxy.read_attribute("long_scalar").value
    assert items[0]["quality"] == "ATTR_VALID"
    assert items[2]["value"] == proxy.read_attribute("string_scalar").value
    unknown = items[1]
    assert unknown["quality"] == "FAILURE"
    assert "value" not in unknown
    assert unknown["errors"][0]["reason"] == "API_AttrNotFound"


# -- plain values ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["long_scalar", "ulong64_scalar", "double_scalar_w", "string_scalar",
             "boolean_scalar", "double_spectrum", "string_spectrum", "enum_scalar_ro"]
)
def test_plain_value(bridge, proxy, device_path, name):
    reply = bridge.get(f"{device_path}/attributes/{name}/value/plain")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("application/json")
    assert_same(strict_json(reply.body),
                expected_value(proxy.read_attribute(name), enum_labels(proxy, name)))


def test_plain_value_literals(bridge, device_path):
    assert bridge.get(f"{device_path}/attributes/string_spectrum/value/plain").body == (
        b'["Hello","Tango","!"]'
    )
    assert strict_json(bridge.get(f"{device_path}/attributes/nan_scalar/value/plain").body) == (
        "NaN"
    )


@pytest.mark.parametrize("name", ["long_image", "double_image", "uchar_image"])
def test_plain_image_is_a_jpeg_data_url(bridge, device_path, name):
    reply = bridge.get(f"{device_path}/attributes/{name}/value/plain")
    assert reply.status == 200
    url = reply.json()
    prefix = "data:image/jpeg;base64,"
    assert isinstance(url, str) and url.startswith(prefix)
    jpeg = base64.b64decode(url[len(prefix):], validate=True)
    assert jpeg.startswith(b"\xff\xd8")
    with Image.open(io.BytesIO(jpeg)) as image:
        assert image.format == "JPEG"
        assert image.size == (5, 3)


def test_plain_value_of_a_failing_attribute(bridge, device_path):
    reply = bridge.get(f"{device_path}/attributes/no_value/value/plain")
    assert reply.status == 200
    body = reply.json()
    assert body["quality"] == "FAILURE"
    assert _errors_reasons(body)[0] == "DemoNoValue"


# -- info ------------------------------------------------------------------------------------------


def expected_info(proxy: tango.DeviceProxy, name: str) -> dict[str, Any]:
    """The fields of get_attribute_config_ex that rc3 reports as they are (enums as names)."""
    c = proxy.get_attribute_config_ex([name])[0]
    return {
        "name": c.name,
        "writable": c.writable.name,
        "data_format": c.data_format.name,
        "data_type": tango.CmdArgType(int(c.data_type)).name,
        "max_dim_x": c.max_dim_x,
        "max_dim_y": c.max_dim_y,
        "description": c.description,
        "label": c.label,
        "unit": c.unit,
        "standard_unit": c.standard_unit,
        "display_unit": c.display_unit,
        "format": c.format,
        "min_value": c.min_value,
        "max_value": c.max_value,
        "min_alarm": c.min_alarm,
        "max_alarm": c.max_alarm,
        "writable_attr_name": c.writable_attr_name,
        "level": c.disp_level.name,
        "root_attr_name": c.root_attr_name,
        "enum_label": list(c.enum_labels),
        "alarms": {
            "min_alarm": c.alarms.min_alarm,
            "max_alarm": c.alarms.max_alarm,
            "min_warning": c.alarms.min_warning,
            "max_warning": c.alarms.max_warning,
            "delta_t": c.alarms.delta_t,
            "delta_val": c.alarms.delta_val,
            "extensions": list(c.alarms.extensions),
        },
        "events": {
            "ch_event": {
                "rel_change": c.events.ch_event.rel_change,
                "abs_change": c.events.ch_event.abs_change,
                "extensions": list(c.events.ch_event.extensions),
            },
            "per_event": {
                "period": c.events.per_event.period,
                "extensions": list(c.events.per_event.extensions),
            },
            "arch_event": {
                "rel_change": c.events.arch_event.archive_rel_change,
                "abs_change": c.events.arch_event.archive_abs_change,
                "period": c.events.arch_event.archive_period,
                "extensions": list(c.events.arch_event.extensions),
            },
        },
    }


def test_info_of_double_scalar(bridge, device_path):
    reply = bridge.get(f"{device_path}/attributes/double_scalar/info")
    assert reply.status == 200
    info = reply.json()
    assert set(info) == INFO_KEYS
    assert len(INFO_KEYS) == 27
    assert info["name"] == "double_scalar"
    assert info["data_type"] == "DevDouble"
    assert info["writable"] == "READ_WRITE"
    assert info["data_format"] == "SCALAR"
    assert info["level"] == "OPERATOR"
    assert info["unit"] == "mm"  # from the attribute property in the database
    assert info["memorized"] == "NOT_MEMORIZED"
    assert info["isMemorized"] is False
    assert info["isSetAtInit"] is False


@pytest.mark.parametrize(
    "name", ["double_scalar", "long_scalar", "enum_scalar", "string_scalar", "boolean_scalar",
             "double_spectrum", "long_image", "encoded_scalar", "ulong64_scalar", "State"]
)
def test_info_matches_the_device_config(bridge, proxy, device_path, name):
    info = bridge.get(f"{device_path}/attributes/{name}/info").json()
    assert set(info) == INFO_KEYS
    for key, value in expected_info(proxy, name).items():
        assert info[key] == value, key


def test_info_details(bridge, device_path):
    def info(name: str) -> dict[str, Any]:
        return bridge.get(f"{device_path}/attributes/{name}/info").json()

    assert info("enum_scalar")["enum_label"] == ["Zero", "One", "Two", "Three"]
    assert info("enum_scalar")["data_type"] == "DevEnum"
    long_scalar = info("long_scalar")
    assert (long_scalar["min_value"], long_scalar["max_value"]) == ("-1000", "1000")
    assert long_scalar["data_type"] == "DevLong"
    spectrum = info("double_spectrum_ro")
    assert (spectrum["data_format"], spectrum["writable"]) == ("SPECTRUM", "READ")
    assert spectrum["max_dim_x"] == 256
    image = info("uchar_image")
    assert (image["data_format"], image["data_type"]) == ("IMAGE", "DevUChar")
    assert (image["max_dim_x"], image["max_dim_y"]) == (64, 64)
    assert info("ulong64_scalar")["data_type"] == "DevULong64"
    assert info("encoded_scalar")["data_type"] == "DevEncoded"


def test_several_infos(bridge, device_path):
    reply = bridge.get(f"{device_path}/attributes/info?attr=double_scalar&attr=enum_scalar"
                       "&attr=long_image")
    assert reply.status == 200
    infos = reply.json()
    assert [i["name"] for i in infos] == ["double_scalar", "enum_scalar", "long_image"]
    for item in infos:
        assert item == bridge.get(f"{device_path}/attributes/{item['name']}/info").json()


# -- history ---------------------------------------------------------------------------------------


def _wait_for_polled_history(proxy: tango.DeviceProxy, entries: int) -> None:
    poll(f"{entries} polled values of double_scalar",
         lambda: len(proxy.attribute_history("double_scalar", 10)) >= entries, timeout=20)


def _history_pairs(proxy: tango.DeviceProxy) -> set[tuple[int, float]]:
    return {(ms(h.time), h.value) for h in proxy.attribute_history("double_scalar", 10)
            if not h.has_failed}


def test_history_of_a_polled_attribute(bridge, proxy, device_path):
    _wait_for_polled_history(proxy, 2)
    # The buffer slides once a second: what the bridge saw was in it before or after the read
    # (CI once saw the bridge's oldest entry already gone from a read made afterwards).
    known = _history_pairs(proxy)
    reply = bridge.get(f"{device_path}/attributes/double_scalar/history")
    assert reply.status == 200
    items = reply.json()
    assert isinstance(items, list)
    assert 2 <= len(items) <= 10
    known |= _history_pairs(proxy)
    for item in items:
        assert set(item) == {"name", "value", "quality", "timestamp"}
        assert item["name"] == "double_scalar"
        assert item["quality"] == "ATTR_VALID"
        assert type(item["value"]) is float
        assert (item["timestamp"], item["value"]) in known  # same buffer, timestamps in ms
    assert len({item["timestamp"] for item in items}) == len(items)


def test_history_depth(bridge, proxy, device_path):
    _wait_for_polled_history(proxy, 4)
    known = _history_pairs(proxy)  # before and after: the buffer slides (see above)
    items = bridge.get(f"{device_path}/attributes/double_scalar/history?depth=3").json()
    assert len(items) == 3
    known |= _history_pairs(proxy)
    assert all((i["timestamp"], i["value"]) in known for i in items)
    assert len(bridge.get(f"{device_path}/attributes/double_scalar/history?depth=1").json()) == 1


# -- attribute properties --------------------------------------------------------------------------


def test_attribute_properties(bridge, control_system, device_path):
    reply = bridge.get(f"{device_path}/attributes/double_scalar/properties")
    assert reply.status == 200
    items = reply.json()
    assert all(isinstance(item, dict) and len(item) == 1 for item in items)
    found = {name: values for item in items for name, values in item.items()}
    db = control_system.database().get_device_attribute_property(DEMO_DEVICE, ["double_scalar"])
    assert found == {n: list(v) for n, v in db["double_scalar"].items()}
    assert {"my_attribute_property": ["42"]} in items
    for name, values in ATTRIBUTE_PROPERTIES[DEMO_DEVICE]["double_scalar"].items():
        assert found[name] == values


def test_one_attribute_property(bridge, device_path):
    reply = bridge.get(f"{device_path}/attributes/double_scalar/properties/my_attribute_property")
    assert reply.status == 200
    assert reply.json() == {"my_attribute_property": ["42"]}


def test_attribute_properties_of_another_attribute(bridge, device_path):
    items = bridge.get(f"{device_path}/attributes/long_scalar/properties").json()
    found = {name: values for item in items for name, values in item.items()}
    assert found == {"min_value": ["-1000"], "max_value": ["1000"]}
