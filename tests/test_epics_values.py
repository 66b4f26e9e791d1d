"""EPICS values and metadata through the bridge, checked against pyepics (libca) reads of the
same PVs: every DBR type, arrays (JSON and base64, ?count), enums, strings and long strings,
alarm states, timestamps, NaN; names raw in the path or as ?pv=."""

from __future__ import annotations

import base64
import json
import math
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest

from tests.bridge import http, poll

V1 = "/epics/rest/v1"

# (PV, expected bridge type). cp: the caproto IOC, sf: softioc (EPICS base records).
VALUE_PVS = [
    ("cp:double", "DOUBLE"),
    ("cp:float", "FLOAT"),
    ("cp:long", "LONG"),
    ("cp:short", "SHORT"),
    ("cp:char", "CHAR"),
    ("cp:enum", "ENUM"),
    ("cp:string", "STRING"),
    ("cp:string.VAL$", "STRING"),
    ("cp:waveform", "DOUBLE"),
    ("cp:int_waveform", "LONG"),
    ("cp:string_array", "STRING"),
    ("cp:alarm", "DOUBLE"),
    ("sf:ai", "DOUBLE"),
    ("sf:ai_alarm", "DOUBLE"),
    ("sf:ao", "DOUBLE"),
    ("sf:longin", "LONG"),
    ("sf:waveform", "DOUBLE"),
    ("sf:wf_float", "FLOAT"),
    ("sf:wf_short", "SHORT"),
    ("sf:wf_long", "LONG"),
    ("sf:wf_char", "CHAR"),
    ("sf:mbbi", "ENUM"),
    ("sf:stringin", "STRING"),
    ("sf:stringin.VAL$", "STRING"),
]
SEVERITIES = {0: ("NO_ALARM", "ATTR_VALID"), 1: ("MINOR", "ATTR_WARNING"),
              2: ("MAJOR", "ATTR_ALARM"), 3: ("INVALID", "ATTR_INVALID")}


def strict_json(body: bytes) -> Any:
    """Parse as browsers do: bare NaN or Infinity is an error."""
    def refuse(name: str) -> None:
        raise ValueError(f"invalid JSON constant {name}")

    return json.loads(body, parse_constant=refuse)


def get(bridge, path: str) -> Any:
    reply = bridge.get(V1 + path)
    assert reply.status == 200, reply.body
    return strict_json(reply.body)


def expected_value(name: str, reference: dict) -> Any:
    value = reference["value"]
    if name.endswith("$"):
        return bytes(np.asarray(value, dtype=np.uint8)).split(b"\0")[0].decode()
    if isinstance(value, np.ndarray):
        return [v if isinstance(v, str) else v.item() for v in value]
    return value


@pytest.mark.parametrize(("name", "type_name"), VALUE_PVS)
def test_value_matches_a_direct_read(epics_bridge, pyepics, name, type_name):
    body = get(epics_bridge, f"/pvs/{name}/value")
    reference = pyepics.get_pv(name).get_with_metadata(form="time", timeout=5)
    assert reference is not None
    assert body["name"] == name
    assert body["connected"] is True
    assert body["type"] == type_name
    assert body["value"] == pytest.approx(expected_value(name, reference))
    severity, quality = SEVERITIES[reference["severity"]]
    assert (body["severity"], body["quality"]) == (severity, quality)
    # Exactly the IOC's time stamp (pyepics's float ``timestamp`` is truncated to microseconds).
    assert (body["seconds"], body["nanos"]) == (
        reference["posixseconds"], reference["nanoseconds"]
    )
    assert body["timestamp"] == body["seconds"] * 1000 + body["nanos"] // 1_000_000
    if type_name == "ENUM":
        labels = list(pyepics.get_pv(name).get_ctrlvars(timeout=5)["enum_strs"])
        assert body["enum_strings"] == labels
        assert body["text"] == labels[reference["value"]]
    if not name.endswith("$"):
        assert body["count"] == len(np.atleast_1d(reference["value"]))
        assert body["native_count"] == pyepics.get_pv(name).count


def test_alarm_state_and_status(epics_bridge):
    body = get(epics_bridge, "/pvs/sf:ai_alarm/value")
    assert (body["severity"], body["status"], body["quality"]) == ("MAJOR", "HIHI", "ATTR_ALARM")
    body = get(epics_bridge, "/pvs/cp:alarm/value")
    assert (body["severity"], body["status"], body["quality"]) == ("MAJOR", "HIHI", "ATTR_ALARM")


def test_nan_is_valid_json(epics_bridge):
    reply = epics_bridge.get(V1 + "/pvs/cp:nan/value")
    assert reply.status == 200
    assert b"NaN" in reply.body
    assert strict_json(reply.body)["value"] == "NaN"


@pytest.mark.parametrize(
    ("name", "field", "dtype"),
    [
        ("sf:waveform", "b64dbl", "<f8"),
        ("sf:wf_float", "b64flt", "<f4"),
        ("sf:wf_long", "b64int", "<i4"),
        ("sf:wf_short", "b64srt", "<i2"),
        ("sf:wf_char", "b64byt", "u1"),
    ],
)
def test_base64_arrays_like_pvws(epics_bridge, pyepics, name, field, dtype):
    body = get(epics_bridge, f"/pvs/{name}/value?encoding=b64")
    assert "value" not in body
    decoded = np.frombuffer(base64.b64decode(body[field]), dtype=dtype)
    np.testing.assert_array_equal(decoded, pyepics.caget(name, timeout=5))


def test_count_trims_arrays(epics_bridge, pyepics):
    full = pyepics.caget("sf:waveform", timeout=5)
    native = pyepics.get_pv("sf:waveform").count
    body = get(epics_bridge, "/pvs/sf:waveform/value?count=5")
    assert body["value"] == pytest.approx(list(full[:5]))
    assert (body["count"], body["native_count"]) == (5, native)  # sent, and the PV's own
    fresh = get(epics_bridge, "/pvs/sf:waveform/value?count=3&fresh=1")
    assert fresh["value"] == pytest.approx(list(full[:3]))
    assert (fresh["count"], fresh["native_count"]) == (3, native)
    b64 = get(epics_bridge, "/pvs/sf:waveform?count=3&encoding=b64")
    assert (b64["count"], b64["native_count"]) == (3, native)
    whole = get(epics_bridge, "/pvs/sf:waveform/value?count=100000")
    assert whole["value"] == pytest.approx(list(full))
    assert whole["count"] == len(full) and whole["native_count"] == native


@pytest.mark.parametrize("name", ["cp:double", "sf:ai", "sf:mbbi", "cp:waveform", "sf:wf_short"])
def test_info_matches_the_control_metadata(epics_bridge, pyepics, name):
    info = get(epics_bridge, f"/pvs/{name}/info")
    pv = pyepics.get_pv(name)
    ctrl = pv.get_ctrlvars(timeout=5)
    assert info["name"] == name
    assert info["count"] == pv.count
    assert info["access"] == "READ_WRITE" and info["readonly"] is False
    assert info["host"].rsplit(":", 1)[1] == pv.host.rsplit(":", 1)[1]  # libca names it localhost
    if "enum_strs" in ctrl and ctrl["enum_strs"]:
        assert info["enum_strings"] == list(ctrl["enum_strs"])
        return
    assert info["units"] == ctrl["units"]
    if ctrl.get("precision") is not None:
        assert info["precision"] == ctrl["precision"]
    for key, prefix in (("display", "disp"), ("alarm", "alarm"), ("warning", "warning"),
                        ("control", "ctrl")):
        low, high = ctrl[f"lower_{prefix}_limit"], ctrl[f"upper_{prefix}_limit"]
        for got, want in ((info[key]["low"], low), (info[key]["high"], high)):
            if isinstance(want, float) and math.isnan(want):
                assert got == "NaN"
            else:
                assert got == pytest.approx(want)


def test_full_object_is_value_plus_metadata(epics_bridge):
    body = get(epics_bridge, "/pvs/cp:double")
    value = get(epics_bridge, "/pvs/cp:double/value")
    info = get(epics_bridge, "/pvs/cp:double/info")
    assert body["value"] == value["value"] == 1.234
    for key in ("units", "precision", "display", "alarm", "warning", "control", "access"):
        assert body[key] == info[key]
    assert body["units"] == "mm" and body["precision"] == 3
    assert body["display"] == {"low": -10.0, "high": 10.0}


def test_enum_full_object_and_info(epics_bridge):
    body = get(epics_bridge, "/pvs/cp:enum")
    assert (body["value"], body["text"]) == (1, "On")
    assert body["enum_strings"] == ["Off", "On", "Fault"]
    assert get(epics_bridge, "/pvs/cp:enum/info")["enum_strings"] == ["Off", "On", "Fault"]


def test_long_string_info_has_no_char_limits(epics_bridge):
    info = get(epics_bridge, "/pvs/sf:stringin.VAL$/info")
    assert info["type"] == "STRING" and info["native_type"] == "CHAR"
    assert "display" not in info and "units" not in info


def test_query_parameter_names_the_same_pv(epics_bridge):
    by_path = get(epics_bridge, "/pvs/sf:stringin.VAL$")
    by_query = get(epics_bridge, "/pvs?pv=" + quote("sf:stringin.VAL$"))
    assert by_query["value"] == by_path["value"] == "softioc string"
    assert by_query["name"] == by_path["name"] == "sf:stringin.VAL$"


def test_names_with_brackets_and_encoded_characters(epics_bridge, pyepics):
    # An EPICS array filter: elements 1 to 3 of the waveform, done by the IOC.
    name = "sf:waveform.[1:3]"
    expected = list(pyepics.caget("sf:waveform", timeout=5)[1:4])
    assert get(epics_bridge, f"/pvs/{name}/value")["value"] == pytest.approx(expected)
    assert get(epics_bridge, "/pvs/" + quote(name, safe=""))["value"] == pytest.approx(expected)
    # The same with a JSON channel filter, which must be percent-encoded in a URL.
    json_name = 'sf:waveform.{"arr":{"s":1,"e":3}}'
    body = get(epics_bridge, "/pvs/" + quote(json_name, safe="") + "/value")
    assert body["name"] == json_name
    assert body["value"] == pytest.approx(expected)


def test_string_arrays_and_scalars(epics_bridge):
    assert get(epics_bridge, "/pvs/cp:string_array/value")["value"] == ["one", "two", "three"]
    body = get(epics_bridge, "/pvs/cp:string/value")
    assert body["value"] == body["text"] == "hello from the demo IOC"


def test_root_links(epics_bridge):
    body = get(epics_bridge, "")
    assert body["health"] == f"{epics_bridge.base}{V1}/health"


def test_filter_parameter_applies(epics_bridge):
    body = get(epics_bridge, "/pvs/cp:double/value?filter=value&filter=quality")
    assert body == {"value": 1.234, "quality": "ATTR_VALID"}


def test_counter_changes_every_second(epics_bridge):
    first = get(epics_bridge, "/pvs/cp:counter/value")
    reply = poll("the counter changed",
                 lambda: (r := get(epics_bridge, "/pvs/cp:counter/value"))["value"]
                 != first["value"] and r, timeout=10)
    assert reply["value"] > first["value"]
    assert reply["timestamp"] > first["timestamp"]


def test_http_helper_reaches_the_bridge(epics_bridge):
    # The same answer through a plain HTTP call (no helper): the route is a normal GET.
    reply = http("GET", f"{epics_bridge.base}{V1}/pvs/cp:short/value")
    assert reply.status == 200 and strict_json(reply.body)["value"] == -7
