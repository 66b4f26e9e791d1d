"""The pvws protocol module (``mtango.epics.pvws``) on real reads of the demo IOCs.

Every update here is built from what caproto's threading client reads directly from the caproto
and softioc IOCs (DBR_TIME and DBR_CTRL answers), and checked against those reads: the fields of
the first update, vtypes, base64 arrays decoded with numpy, enums, NaN, strings, alarm severity,
deltas of a changing counter and their merge, disconnects. Client frames are checked without an
IOC: each valid type, and each kind of bad input.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest
from caproto import AccessRights
from caproto.threading.client import Context, SharedBroadcaster

from mtango.epics.pvws import (
    B64_KEY_OF_VTYPE,
    B64_KEYS,
    DISPLAY_KEYS,
    ClientMessage,
    PvwsProtocolError,
    changes,
    disconnected_update,
    error_message,
    full_update,
    list_message,
    merge,
    parse_message,
)
from tests.bridge import poll

TIMEOUT = 5.0
_READ = object()  # Direct.update: use the DBR_CTRL answer that was read
EPICS_EPOCH_OFFSET = 631152000


class _IocOnly(SharedBroadcaster):
    """caproto's search broadcaster, sending to the test IOCs' addresses and nowhere else (the
    stock one reads ``EPICS_CA_ADDR_LIST`` from the environment, which conftest empties)."""

    def __init__(self, addresses: list[tuple[str, int]]) -> None:
        self._addresses = addresses
        super().__init__()

    def send(self, *commands: Any) -> None:
        payload = self.broadcaster.send(*commands)
        if self.udp_sock is not None:
            for address in self._addresses:
                self.udp_sock.sendto(payload, address)


@pytest.fixture(scope="module")
def context(caproto_ioc, soft_ioc):
    broadcaster = _IocOnly([("127.0.0.1", caproto_ioc.port), ("127.0.0.1", soft_ioc.port)])
    ctx = Context(broadcaster, timeout=TIMEOUT)
    yield ctx
    ctx.disconnect()
    broadcaster.disconnect()


class Direct:
    """One PV read directly: its DBR_TIME and DBR_CTRL answers and its channel facts."""

    def __init__(self, context: Context, name: str) -> None:
        (self.pv,) = context.get_pvs(name, timeout=TIMEOUT)
        self.pv.wait_for_connection(timeout=TIMEOUT)
        self.name = name
        self.time = self.pv.read(data_type="time", timeout=TIMEOUT)
        self.control = self.pv.read(data_type="control", timeout=TIMEOUT)

    def reread(self) -> None:
        self.time = self.pv.read(data_type="time", timeout=TIMEOUT)

    @property
    def writable(self) -> bool:
        return bool(self.pv.channel.access_rights & AccessRights.WRITE)

    def update(self, control: Any = _READ, **overrides: Any) -> dict[str, Any]:
        """``full_update`` of the last reads; ``control=None`` as if DBR_CTRL were unknown."""
        kwargs: dict[str, Any] = dict(
            writable=self.writable,
            count=self.pv.channel.native_data_count,
            long_string=self.name.endswith("$"),
        )
        kwargs.update(overrides)
        body = full_update(
            self.name,
            self.pv.channel.native_data_type,
            self.time.data,
            self.time.metadata,
            self.control.metadata if control is _READ else control,
            **kwargs,
        )
        assert_plain_json(body)
        return body


def assert_plain_json(body: dict[str, Any]) -> None:
    """Standard json writes it without NaN/Infinity literals and reads the same dict back."""
    text = json.dumps(body, allow_nan=False)
    assert json.loads(text) == body


def read(context: Context, name: str) -> Direct:
    return Direct(context, name)


def stamp_matches(body: dict[str, Any], metadata: Any) -> None:
    assert isinstance(body["seconds"], int) and isinstance(body["nanos"], int)
    assert 0 <= body["nanos"] < 1_000_000_000
    # caproto's own Unix-time view of the stamp, independent of the module's arithmetic
    assert abs(body["seconds"] + body["nanos"] / 1e9 - metadata.timestamp) < 1e-5
    assert body["seconds"] == int(metadata.secondsSinceEpoch) + EPICS_EPOCH_OFFSET


# -- the first update -----------------------------------------------------------------------------


def test_first_update_of_a_double_carries_every_field(context):
    direct = read(context, "cp:double")
    body = direct.update(description="a demo double")
    assert list(body) == [
        "type", "pv", "vtype", "units", "description", "precision", "min", "max", "warn_low",
        "warn_high", "alarm_low", "alarm_high", "severity", "readonly", "connected", "value",
        "seconds", "nanos",
    ]
    assert body == {
        "type": "update",
        "pv": "cp:double",
        "vtype": "VDouble",
        "units": "mm",
        "description": "a demo double",
        "precision": 3,
        "min": -10.0,
        "max": 10.0,
        "warn_low": -5.0,
        "warn_high": 5.0,
        "alarm_low": -9.0,
        "alarm_high": 9.0,
        "severity": "NONE",
        "readonly": False,
        "connected": True,
        "value": float(direct.time.data[0]),
        "seconds": body["seconds"],
        "nanos": body["nanos"],
    }
    assert body["value"] == 1.234
    stamp_matches(body, direct.time.metadata)


def test_first_update_without_control_metadata_uses_pvws_defaults(context):
    body = read(context, "cp:double").update(control=None)
    assert {key: body[key] for key in DISPLAY_KEYS} == {
        "units": "", "description": None, "precision": 3, "min": "NaN", "max": "NaN",
        "warn_low": "NaN", "warn_high": "NaN", "alarm_low": "NaN", "alarm_high": "NaN",
    }
    assert body["value"] == 1.234


def test_read_only_channel_says_readonly(context):
    body = read(context, "cp:double").update(writable=False)
    assert body["readonly"] is True


VTYPES = [
    ("cp:double", "VDouble"),
    ("cp:float", "VFloat"),
    ("cp:long", "VInt"),
    ("cp:short", "VShort"),
    ("cp:char", "VByte"),
    ("cp:enum", "VEnum"),
    ("cp:string", "VString"),
    ("cp:string.VAL$", "VString"),
    ("cp:waveform", "VDoubleArray"),
    ("cp:int_waveform", "VIntArray"),
    ("cp:string_array", "VStringArray"),
    ("cp:counter", "VInt"),
    ("sf:ai", "VDouble"),
    ("sf:ao", "VDouble"),
    ("sf:longin", "VInt"),
    ("sf:waveform", "VDoubleArray"),
    ("sf:wf_float", "VFloatArray"),
    ("sf:wf_short", "VShortArray"),
    ("sf:wf_long", "VIntArray"),
    ("sf:wf_char", "VByteArray"),
    ("sf:mbbi", "VEnum"),
    ("sf:stringin", "VString"),
    ("sf:stringin.VAL$", "VString"),
]


@pytest.mark.parametrize(("name", "vtype"), VTYPES)
def test_vtype_and_the_fields_that_go_with_it(context, name, vtype):
    direct = read(context, name)
    body = direct.update()
    assert body["vtype"] == vtype
    assert body["type"] == "update" and body["pv"] == name and body["connected"] is True
    assert body["severity"] == "NONE"
    assert body["readonly"] is False
    stamp_matches(body, direct.time.metadata)
    numeric = vtype not in ("VEnum", "VString", "VStringArray")
    assert all((key in body) == numeric for key in DISPLAY_KEYS if key != "precision")
    assert ("labels" in body) == (vtype == "VEnum")
    b64 = B64_KEYS.intersection(body)
    if vtype in B64_KEY_OF_VTYPE:
        assert b64 == {B64_KEY_OF_VTYPE[vtype]} and "value" not in body and "text" not in body
    else:
        assert not b64
    if vtype in ("VInt", "VShort", "VByte"):
        assert body["precision"] == 0
        assert body["value"] == int(direct.time.data[0]) and isinstance(body["value"], int)


def test_float_scalar_value_and_precision(context):
    direct = read(context, "cp:float")
    body = direct.update()
    assert body["value"] == 2.5 and body["precision"] == 2 and body["units"] == "V"


def test_unset_softioc_limits_are_nan_strings(context):
    body = read(context, "sf:ao").update()
    assert body["min"] == -10.0 and body["max"] == 10.0 and body["precision"] == 3
    for key in ("warn_low", "warn_high", "alarm_low", "alarm_high"):
        assert body[key] == "NaN"


# -- arrays ---------------------------------------------------------------------------------------

ARRAYS = [
    ("cp:waveform", "b64dbl", "<f8"),
    ("cp:int_waveform", "b64int", "<i4"),
    ("sf:waveform", "b64dbl", "<f8"),
    ("sf:wf_float", "b64flt", "<f4"),
    ("sf:wf_short", "b64srt", "<i2"),
    ("sf:wf_long", "b64int", "<i4"),
    ("sf:wf_char", "b64byt", "u1"),
]


@pytest.mark.parametrize(("name", "key", "dtype"), ARRAYS)
def test_base64_array_decodes_to_the_direct_read(context, name, key, dtype):
    direct = read(context, name)
    body = direct.update()
    decoded = np.frombuffer(base64.b64decode(body[key]), dtype=dtype)
    expected = np.asarray(direct.time.data)
    assert len(decoded) == len(expected) == direct.time.data_count
    assert decoded.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(decoded, expected)


# -- enums, NaN, strings, alarms ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "labels"),
    [("cp:enum", ["Off", "On", "Fault"]), ("sf:mbbi", ["Zero", "One", "Two"])],
)
def test_enum_index_label_and_labels(context, name, labels):
    direct = read(context, name)
    body = direct.update()
    index = int(direct.time.data[0])
    assert body["value"] == index == 1
    assert body["text"] == labels[index]
    assert body["labels"] == labels
    given = direct.update(labels=("a", "b", "c"))
    assert given["labels"] == ["a", "b", "c"] and given["text"] == "b"


def test_nan_is_the_string_nan(context):
    direct = read(context, "cp:nan")
    assert np.isnan(direct.time.data[0])
    body = direct.update()
    assert body["value"] == "NaN"
    assert '"value": "NaN"' in json.dumps(body, allow_nan=False)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("cp:string", "hello from the demo IOC"),
        ("cp:string.VAL$", "hello from the demo IOC"),
        ("sf:stringin", "softioc string"),
        ("sf:stringin.VAL$", "softioc string"),
    ],
)
def test_string_and_long_string_are_text(context, name, text):
    body = read(context, name).update()
    assert body["text"] == text
    assert "value" not in body and not B64_KEYS.intersection(body)


def test_long_string_decodes_the_char_array(context):
    direct = read(context, "cp:string.VAL$")
    raw = np.asarray(direct.time.data, dtype=np.uint8).tobytes()
    assert direct.update()["text"] == raw.split(b"\0")[0].decode()


def test_string_array(context):
    body = read(context, "cp:string_array").update()
    assert body["value"] == ["one", "two", "three"]
    assert body["text"] == "[one, two, three]"


@pytest.mark.parametrize("name", ["cp:alarm", "sf:ai_alarm"])
def test_major_alarm(context, name):
    direct = read(context, name)
    assert int(direct.time.metadata.severity) == 2
    assert direct.update()["severity"] == "MAJOR"


# -- deltas ---------------------------------------------------------------------------------------


def counter_updates(context, how_many: int) -> list[dict[str, Any]]:
    """Full updates of cp:counter (it counts every second), each with a new value."""
    direct = read(context, "cp:counter")
    updates = [direct.update()]

    def changed() -> dict[str, Any] | None:
        direct.reread()
        body = direct.update()
        return body if body["value"] != updates[-1]["value"] else None

    while len(updates) < how_many:
        # The IOC counts in an asyncio loop of its own process: 5 s for a 1 s step left little
        # room on a loaded machine, and poll returns as soon as it changed.
        updates.append(poll("cp:counter to change", changed, timeout=30, interval=0.2))
    return updates


def test_counter_change_sends_value_and_time_only(context):
    first, second = counter_updates(context, 2)
    delta = changes(first, second)
    assert delta is not None
    assert set(delta) == {"type", "pv", "value", "seconds", "nanos"}
    assert delta["type"] == "update" and delta["pv"] == "cp:counter"
    assert delta["value"] == second["value"] != first["value"]
    assert (delta["seconds"], delta["nanos"]) == (second["seconds"], second["nanos"])


def test_identical_states_give_no_delta(context):
    direct = read(context, "cp:double")
    first = direct.update()
    direct.reread()  # the same value and time stamp again: a static PV
    assert changes(first, direct.update()) is None
    assert changes(first, first) is None


def test_merging_the_deltas_rebuilds_the_full_state(context):
    updates = counter_updates(context, 3)
    state = dict(updates[0])
    for current in updates[1:]:
        delta = changes(state, current)
        assert delta is not None
        state.update(json.loads(json.dumps(delta, allow_nan=False)))  # as a client gets it
        assert state == current
    assert merge(updates[0], changes(updates[0], updates[-1]) or {}) == updates[-1]


def test_severity_and_access_changes_are_sent(context):
    direct = read(context, "cp:double")
    before = direct.update()
    alarm = read(context, "cp:alarm").update()
    # the same PV seen with the other PV's alarm and value, and losing write access
    after = dict(before, severity=alarm["severity"], value=alarm["value"], readonly=True)
    delta = changes(before, after)
    assert delta == {
        "type": "update", "pv": "cp:double", "severity": "MAJOR", "value": 9.5, "readonly": True,
    }


def test_metadata_change_is_sent(context):
    direct = read(context, "cp:double")
    before = direct.update()
    after = direct.update(description="renamed")
    assert changes(before, after) == {"type": "update", "pv": "cp:double", "description": "renamed"}


# -- disconnects ----------------------------------------------------------------------------------


def test_disconnected_update():
    assert disconnected_update("cp:gone") == {
        "type": "update",
        "pv": "cp:gone",
        "connected": False,
        "severity": "UNDEFINED",
        "readonly": True,
        "value": "NaN",
    }
    stamped = disconnected_update("cp:gone", (1_700_000_000, 5))
    assert (stamped["seconds"], stamped["nanos"]) == (1_700_000_000, 5)
    assert_plain_json(stamped)


def test_reconnect_after_disconnect_restores_the_value(context):
    direct = read(context, "cp:double")
    full = direct.update()
    state = merge(full, disconnected_update("cp:double", (full["seconds"] + 1, 0)))
    assert state["units"] == "mm" and state["connected"] is False  # metadata kept, as pvws
    delta = changes(state, full)
    assert delta == {
        "type": "update", "pv": "cp:double", "connected": True, "severity": "NONE",
        "readonly": False, "value": 1.234, "seconds": full["seconds"], "nanos": full["nanos"],
    }
    assert merge(state, delta) == full


def test_reconnect_of_a_string_clears_the_disconnect_value(context):
    full = read(context, "cp:string").update()
    state = merge(full, disconnected_update("cp:string"))
    delta = changes(state, full)
    assert delta is not None
    assert delta["value"] is None and delta["text"] == "hello from the demo IOC"
    merged = merge(state, delta)
    assert merged.pop("value") is None and merged == full


def test_reconnect_of_an_array_resends_the_array(context):
    full = read(context, "cp:waveform").update()
    state = merge(full, disconnected_update("cp:waveform"))
    delta = changes(state, full)
    assert delta is not None
    # pvws.js rebuilds value from the b64 key of the same message, so it must come along
    assert delta["b64dbl"] == full["b64dbl"] and delta["value"] is None
    merged = merge(state, delta)
    assert merged.pop("value") is None and merged == full


# -- client frames --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ({"type": "subscribe", "pvs": ["a", "b"]}, ClientMessage("subscribe", pvs=("a", "b"))),
        ({"type": "monitor", "pvs": ["a"]}, ClientMessage("subscribe", pvs=("a",))),
        ({"type": "subscribe", "pvs": ["a", "b", "a"]}, ClientMessage("subscribe", ("a", "b"))),
        ({"type": "subscribe", "pvs": []}, ClientMessage("subscribe")),
        ({"type": "clear", "pvs": ["a"]}, ClientMessage("clear", pvs=("a",))),
        ({"type": "list"}, ClientMessage("list")),
        ({"type": "write", "pv": "a", "value": 3}, ClientMessage("write", pv="a", value=3.0)),
        ({"type": "write", "pv": "a", "value": -1.5}, ClientMessage("write", pv="a", value=-1.5)),
        ({"type": "write", "pv": "a", "value": "On"}, ClientMessage("write", pv="a", value="On")),
        ({"type": "ping"}, ClientMessage("ping")),
        ({"type": "echo", "body": [1, {"x": None}]}, ClientMessage("echo")),
    ],
)
def test_valid_frames(frame, expected):
    text = json.dumps(frame)
    for given in (text, text.encode()):
        message = parse_message(given, max_pvs=10)
        assert message == expected
        assert message.raw == frame
    if frame["type"] == "write":
        assert type(parse_message(text, 10).value) is type(expected.value)


def test_thousand_names_in_one_subscribe():
    names = [f"sf:bulk:{i:04d}" for i in range(1000)]
    message = parse_message(json.dumps({"type": "subscribe", "pvs": names}), max_pvs=1000)
    assert message.pvs == tuple(names)
    with pytest.raises(PvwsProtocolError, match="1000 PVs in one message; at most 999"):
        parse_message(json.dumps({"type": "subscribe", "pvs": names}), max_pvs=999)
    with pytest.raises(PvwsProtocolError, match="1001 PVs"):
        parse_message(json.dumps({"type": "clear", "pvs": [*names, "x"]}), max_pvs=1000)


@pytest.mark.parametrize(
    ("frame", "complaint"),
    [
        ("", "not valid JSON"),
        ("{type: subscribe}", "not valid JSON"),
        ('{"type": "write", "pv": "a", "value": NaN}', "not valid JSON"),
        ("[" * 100_000, "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        ('["subscribe"]', "must be a JSON object"),
        ('"list"', "must be a JSON object"),
        ("{}", "Missing 'type'"),
        ('{"pvs": ["a"]}', "Missing 'type'"),
        ('{"type": 1}', "'type' must be a string"),
        ('{"type": null}', "'type' must be a string"),
        ('{"type": "unsubscribe", "pvs": ["a"]}', "Unknown message type"),
        ('{"type": "Subscribe", "pvs": ["a"]}', "Unknown message type"),
        ('{"type": "subscribe"}', "Missing 'pvs'"),
        ('{"type": "clear"}', "Missing 'pvs'"),
        ('{"type": "subscribe", "pvs": "a"}', "'pvs' must be a list"),
        ('{"type": "subscribe", "pvs": {"a": 1}}', "'pvs' must be a list"),
        ('{"type": "subscribe", "pvs": ["a", 1]}', "non-empty strings, got 1"),
        ('{"type": "monitor", "pvs": [null]}', "non-empty strings, got null"),
        ('{"type": "clear", "pvs": [["a"]]}', "non-empty strings"),
        ('{"type": "subscribe", "pvs": [""]}', "non-empty strings"),
        ('{"type": "write", "value": 1}', "Missing 'pv'"),
        ('{"type": "write", "pv": 5, "value": 1}', "'pv' must be a non-empty string"),
        ('{"type": "write", "pv": "", "value": 1}', "'pv' must be a non-empty string"),
        ('{"type": "write", "pv": "a"}', "Missing 'value'"),
        ('{"type": "write", "pv": "a", "value": true}', "number or a string"),
        ('{"type": "write", "pv": "a", "value": null}', "number or a string"),
        ('{"type": "write", "pv": "a", "value": [1, 2]}', "number or a string"),
        ('{"type": "write", "pv": "a", "value": 1e999}', "finite number"),
    ],
)
def test_bad_frames(frame, complaint):
    with pytest.raises(PvwsProtocolError, match=complaint) as caught:
        parse_message(frame, max_pvs=10)
    assert caught.value.message == str(caught.value)
    assert len(caught.value.message) < 300  # long frames are quoted shortened
    assert error_message(caught.value.message) == {"type": "error", "message": caught.value.message}


def test_list_message():
    assert list_message(["b", "a"]) == {"type": "list", "pvs": ["b", "a"]}
    assert list_message(iter(())) == {"type": "list", "pvs": []}
