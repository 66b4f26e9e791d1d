"""EPICS writes through the backend (``EpicsBackend.write``), checked with pyepics (libca), the
independent client: every native type round-trips on the caproto IOC and the softioc IOC (EPICS
base records); values the PV cannot hold, read-only PVs and unknown names are refused before
anything is sent; puts with completion wait for the record, plain puts do not; IOC refusals,
unconfirmed puts and lost connections are the error model's 502, 504 and 503.

The writes go to the IOCs' dedicated ``w:`` PVs (``mtango.demo.ioc``), which no other test reads.
"""

from __future__ import annotations

import asyncio
import math
import time
from concurrent.futures import Future
from typing import Any

import numpy as np
import pytest
from caproto import ChannelType

from mtango.demo.ioc import BUSY_SECONDS, ENUM_STRINGS
from mtango.epics import puts
from mtango.epics.backend import WriteFailed, WriteOutcome
from mtango.epics.convert import ChannelMeta
from mtango.epics.errors import BadValue, ServerError
from mtango.errors import ApiError
from tests.bridge import poll
from tests.conftest import EPICS_TIMEOUT_MS

V1 = "/epics/rest/v1"


def write(bridge, name: str, raw: Any, **options: Any) -> WriteOutcome:
    """``EpicsBackend.write`` on the bridge's own loop (where its channel pool lives)."""
    return bridge.run(bridge.app.ctx.epics.write(name, raw, **options))


def refused(bridge, name: str, raw: Any, **options: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        write(bridge, name, raw, **options)
    return caught.value


def caget(pyepics, name: str) -> Any:
    """The PV's value as libca reads it now (no monitor): text for strings and long strings,
    lists for arrays."""
    value = pyepics.caget(name, use_monitor=False, timeout=5)
    assert value is not None, f"pyepics could not read {name}"
    if name.endswith("$") or name.endswith(("char_waveform", "long_string")):
        return bytes(np.asarray(value, dtype=np.uint8)).split(b"\0")[0].decode()
    if isinstance(value, np.ndarray):
        return [v if isinstance(v, str) else v.item() for v in value]
    return value


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


LONG_TEXT = "Grüße aus dem Test, länger als vierzig Bytes: ✓ " * 2  # 104 bytes of UTF-8

# (PV, value written, what pyepics reads afterwards, the value object's "value").
ROUND_TRIPS = [
    ("cp:w:double", 12.25, 12.25, 12.25),
    ("cp:w:double", "-7.5", -7.5, -7.5),  # a query string's text
    ("cp:w:float", 1.5, 1.5, 1.5),
    ("cp:w:long", -123456, -123456, -123456),
    ("cp:w:long", 77.0, 77, 77),  # an integral float
    ("cp:w:short", -300, -300, -300),
    ("cp:w:char", 200, 200, 200),
    ("cp:w:enum", "Fault", 2, 2),  # by label
    ("cp:w:enum", 1, 1, 1),  # by index
    ("cp:w:string", "written by a test", "written by a test", "written by a test"),
    ("cp:w:string.VAL$", LONG_TEXT, LONG_TEXT, LONG_TEXT),
    ("cp:w:waveform", [1.5, 2.5, 3.5], [1.5, 2.5, 3.5], [1.5, 2.5, 3.5]),
    ("cp:w:short_waveform", [1, -2, 3], [1, -2, 3], [1, -2, 3]),
    ("cp:w:char_waveform", "char text", "char text", list(b"char text")),
    ("cp:w:string_array", ["x", "yy", "zzz"], ["x", "yy", "zzz"], ["x", "yy", "zzz"]),
    ("sf:w:ao", 2.5, 2.5, 2.5),
    ("sf:w:longout", 99999, 99999, 99999),
    ("sf:w:mbbo", "Two", 2, 2),
    ("sf:w:mbbo", 1, 1, 1),
    ("sf:w:stringout", "softioc text", "softioc text", "softioc text"),
    ("sf:w:stringout.VAL$", "é" * 19, "é" * 19, "é" * 19),  # 38 bytes and the NUL: full
    ("sf:w:waveform", "1,2,3", [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]),
    ("sf:w:wf_short", [7, -8], [7, -8], [7, -8]),
    ("sf:w:long_string", "long text", "long text", list(b"long text\0")),
]


@pytest.mark.parametrize(("name", "raw", "expected", "value"), ROUND_TRIPS)
def test_every_type_round_trips(epics_bridge, pyepics, name, raw, expected, value):
    outcome = write(epics_bridge, name, raw)
    assert caget(pyepics, name) == expected
    body = outcome.body
    assert body["name"] == name and body["connected"] is True
    assert body["value"] == value
    assert outcome.after == value
    assert outcome.confirmed is True
    assert body["cached"] is False  # read back from the IOC, not from the monitor
    if body["type"] == "ENUM":
        assert body["text"] == body["enum_strings"][value]


def test_the_answer_is_the_value_object_of_a_read(epics_bridge):
    """The same fields as ``GET pvs/{pv}/value``, with the same values once nothing changes."""
    name = "cp:w:enum"
    body = write(epics_bridge, name, "On").body
    read = epics_bridge.get(f"{V1}/pvs/{name}/value?fresh=1").json()
    assert set(body) == set(read)
    for key in ("name", "type", "count", "native_count", "value", "text", "enum_strings",
                "timestamp", "seconds", "nanos", "severity", "status", "quality"):
        assert body[key] == read[key], key
    assert body["text"] == "On" and body["enum_strings"] == list(ENUM_STRINGS)


def test_the_outcome_has_before_sent_and_after(epics_bridge, pyepics):
    write(epics_bridge, "cp:w:long", 1)
    outcome = write(epics_bridge, "cp:w:long", "2")
    assert (outcome.before, outcome.sent, outcome.after) == (1, 2, 2)
    outcome = write(epics_bridge, "cp:w:enum", "Off")
    outcome = write(epics_bridge, "cp:w:enum", "Fault")
    assert (outcome.before, outcome.sent, outcome.after) == (0, 2, 2)  # enums as indexes
    write(epics_bridge, "cp:w:waveform", [0.5])
    outcome = write(epics_bridge, "cp:w:waveform", "4,5")
    assert (outcome.before, outcome.sent, outcome.after) == ([0.5], [4.0, 5.0], [4.0, 5.0])
    write(epics_bridge, "sf:w:stringout.VAL$", "before")
    outcome = write(epics_bridge, "sf:w:stringout.VAL$", "after")
    assert (outcome.before, outcome.sent, outcome.after) == ("before", "after", "after")
    assert caget(pyepics, "sf:w:stringout") == "after"


# (PV, a value it cannot hold, words of the reason)
BAD_VALUES = [
    ("cp:w:double", "abc", "not a number"),
    ("cp:w:double", [1.0, 2.0], "at most 1"),
    ("cp:w:double", {"value": 1}, "not a number"),
    ("cp:w:double", None, "not a number"),
    ("cp:w:float", 1e39, "too large for a FLOAT"),
    ("cp:w:short", 40000, "out of range for a SHORT"),
    ("cp:w:short", 1.5, "not an integer"),
    ("cp:w:long", 2**31, "out of range for a LONG"),
    ("cp:w:char", -1, "out of range for a CHAR"),
    ("cp:w:enum", "Nope", "not one of its labels"),
    ("cp:w:enum", 3, "out of range"),
    ("cp:w:string", "x" * 40, "at most 39"),
    ("cp:w:string", "nul\0inside", "NUL"),
    ("cp:w:string", True, "not text"),
    ("cp:w:string.VAL$", "y" * 128, "at most 127"),
    ("cp:w:waveform", list(range(11)), "at most 10"),
    ("cp:w:waveform", [], "no value"),
    ("cp:w:waveform", [1, "two"], "not a number"),
    ("cp:w:short_waveform", [1, 40000], "out of range for a SHORT"),
    ("sf:w:mbbo", "Three", "not one of its labels"),
    ("sf:w:longout", "12.5", "not an integer"),
    ("sf:w:stringout.VAL$", "é" * 20, "at most 39"),
    ("sf:w:wf_short", "1,2,3,4,5,6", "at most 5"),
]


@pytest.mark.parametrize(("name", "raw", "words"), BAD_VALUES)
def test_a_value_the_pv_cannot_hold_is_refused_and_nothing_is_sent(
        epics_bridge, pyepics, name, raw, words):
    before = caget(pyepics, name)
    error = refused(epics_bridge, name, raw)
    assert type(error) is ApiError  # not a WriteFailed: no put went out
    assert error.status == 400
    entry = error.entries[0]
    assert entry.reason == "EPICS_BAD_VALUE"
    assert words in entry.description and name in entry.description
    assert entry.origin == f"epics:{name}"
    assert caget(pyepics, name) == before


@pytest.mark.parametrize("name", ["cp:w:readonly", "sf:w:readonly"])
def test_a_read_only_pv_is_refused_before_anything_is_sent(epics_bridge, pyepics, name):
    pv = pyepics.get_pv(name)
    assert pv.wait_for_connection(timeout=5) and pv.write_access is False  # libca agrees
    for wait in (True, False):
        error = refused(epics_bridge, name, 1.0, wait=wait)
        assert type(error) is ApiError  # nothing was sent: the IOC never saw a put
        assert error.status == 403
        assert error.entries[0].reason == "EPICS_NO_WRITE_ACCESS"
        assert "no write access" in error.entries[0].description
    assert caget(pyepics, name) == 42.0
    info = epics_bridge.get(f"{V1}/pvs/{name}/info").json()
    assert info["readonly"] is True and info["access"] == "READ"


def test_a_pv_that_never_connects_is_a_connect_timeout(epics_bridge):
    started = time.monotonic()
    error = refused(epics_bridge, "nobody:w:never", 1)
    assert type(error) is ApiError
    assert error.status == 504
    assert error.entries[0].reason == "EPICS_CONNECT_TIMEOUT"
    assert time.monotonic() - started < EPICS_TIMEOUT_MS / 1000 + 2


def test_a_bad_name_is_refused_before_any_search(epics_bridge):
    error = refused(epics_bridge, "has space", 1)
    assert error.status == 400 and error.entries[0].reason == "BadName"
    assert "has space" not in epics_bridge.app.ctx.epics.pool.channels


@pytest.mark.parametrize("name", ["cp:w:busy", "sf:w:busy"])
def test_a_put_with_completion_waits_for_the_record(epics_bridge, pyepics, name):
    """The IOC takes BUSY_SECONDS to process a put to ``w:busy``: a put with completion is
    answered after that, with the new value read back."""
    target = float(time.time_ns() % 1000)
    started = time.monotonic()
    outcome = write(epics_bridge, name, target)
    assert time.monotonic() - started >= BUSY_SECONDS
    assert outcome.confirmed is True and outcome.after == target
    assert caget(pyepics, name) == target


@pytest.mark.parametrize("name", ["cp:w:busy", "sf:w:busy"])
def test_a_plain_put_does_not_wait(epics_bridge, pyepics, name):
    target = float(time.time_ns() % 1000) + 1000
    # The channel connected first: its search and connection (0.1 s for sf: here, unloaded)
    # are no part of the put, and took much of BUSY_SECONDS when this test came first.
    assert epics_bridge.get(f"{V1}/pvs/{name}/value").status == 200
    started = time.monotonic()
    outcome = write(epics_bridge, name, target, wait=False)
    assert time.monotonic() - started < BUSY_SECONDS
    assert outcome.confirmed is False and outcome.sent == target
    assert outcome.body["name"] == name  # a value object, whether or not the put is done yet
    poll(f"{name} written", lambda: caget(pyepics, name) == target)


def test_a_plain_put_of_every_kind_arrives(epics_bridge, pyepics):
    for name, raw, expected in [("cp:w:double", 3.25, 3.25), ("sf:w:mbbo", "Zero", 0),
                                ("cp:w:string.VAL$", "plain " * 10, "plain " * 10)]:
        write(epics_bridge, name, raw, wait=False)
        poll(f"{name} written", lambda n=name, e=expected: caget(pyepics, n) == e)


def test_a_put_not_confirmed_in_time_is_a_write_timeout(epics_bridge, pyepics):
    """``w:stuck`` takes 5 s to process a put: not confirmed within the timeout, 504; the
    error still tells the audit what was sent."""
    before = caget(pyepics, "cp:w:stuck")
    started = time.monotonic()
    error = refused(epics_bridge, "cp:w:stuck", 5.5, timeout=0.5)
    elapsed = time.monotonic() - started
    assert isinstance(error, WriteFailed)
    assert error.status == 504 and error.entries[0].reason == "EPICS_WRITE_TIMEOUT"
    assert "did not confirm the put within 0.5 s" in error.entries[0].description
    assert (error.before, error.sent) == (before, 5.5)
    assert 0.5 <= elapsed < 2.0
    channel = epics_bridge.app.ctx.epics.pool.channels["cp:w:stuck"]
    assert not channel.puts  # nothing left waiting


def test_an_ioc_refusing_a_put_is_a_ca_error_at_once(epics_bridge, pyepics):
    """The caproto IOC refuses a value beyond ``w:double``'s control limits with a CA error
    message (caproto's client would drop it and wait: ``compat._answer_error_responses``)."""
    write(epics_bridge, "cp:w:double", 50.0)
    started = time.monotonic()
    error = refused(epics_bridge, "cp:w:double", 1000)
    assert time.monotonic() - started < EPICS_TIMEOUT_MS / 1000 / 2
    assert isinstance(error, WriteFailed)
    assert error.status == 502 and error.entries[0].reason == "EPICS_CA_ERROR"
    assert "ECA_PUTFAIL" in error.entries[0].description
    assert "Limits are set to -100.0 and 100.0" in error.entries[0].description
    assert (error.before, error.sent) == (50.0, 1000.0)
    assert caget(pyepics, "cp:w:double") == 50.0


def test_an_error_status_from_epics_base_is_a_server_error(epics_bridge, pyepics):
    """rsrv answers a put with completion it cannot do with an error status (here a label the
    mbbo does not have, sent as DBR_STRING past the bridge's conversion)."""
    backend = epics_bridge.app.ctx.epics
    write(epics_bridge, "sf:w:mbbo", "One")

    async def put_label() -> Any:
        return await backend.pool.put("sf:w:mbbo", [b"Seven"], 1, wait=True,
                                      deadline=time.monotonic() + 2, data_type=ChannelType.STRING)

    with pytest.raises(ServerError) as caught:
        epics_bridge.run(put_label())
    assert caught.value.status == "ECA_PUTFAIL"
    assert caget(pyepics, "sf:w:mbbo") == 1


# caproto's subscription thread may die when the IOC goes while a monitor is being set up; the
# bridge starts it again, pytest reports the thread's exception.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_put_whose_ioc_goes_away_is_disconnected(epics_bridge, restart_ioc):
    """The IOC stops while a put waits for its completion: 503 at once (not the timeout), and
    a write while it is away is refused as disconnected."""
    name = restart_ioc.pv("w:stuck")
    write(epics_bridge, name, 1.0, wait=False)  # connected
    pending: Future = asyncio.run_coroutine_threadsafe(
        epics_bridge.app.ctx.epics.write(name, 2.0, timeout=30), epics_bridge.loop)
    channel = epics_bridge.app.ctx.epics.pool.channels[name]
    poll("the put waiting for its completion", lambda: channel.puts)
    restart_ioc.stop()
    try:
        error = pending.exception(timeout=10)
        assert isinstance(error, WriteFailed)
        assert error.status == 503 and error.entries[0].reason == "EPICS_DISCONNECTED"
        assert "may or may not have been done" in error.entries[0].description
        assert error.sent == 2.0
        again = refused(epics_bridge, name, 3.0)
        assert type(again) is ApiError and again.status == 503
        assert again.entries[0].reason == "EPICS_DISCONNECTED"
    finally:
        restart_ioc.start()
    other = restart_ioc.pv("w:double")
    outcome = poll("a write after the IOC restarted", lambda: _try_write(epics_bridge, other))
    assert outcome.after == 4.0


def _try_write(bridge, name: str) -> WriteOutcome | None:
    try:
        return write(bridge, name, 4.0)
    except ApiError:
        return None


# -- the conversion alone (no IOC) ---------------------------------------------------------------


def meta(kind: ChannelType, count: int = 1, name: str = "x", labels: tuple[str, ...] = ()
         ) -> ChannelMeta:
    return ChannelMeta(name, kind, count, labels=labels, long_string=name.endswith("$"))


@pytest.mark.parametrize(("kind", "count", "raw", "sent"), [
    (ChannelType.DOUBLE, 1, True, 1.0),
    (ChannelType.DOUBLE, 1, "NaN", "NaN"),
    (ChannelType.DOUBLE, 1, "-Infinity", "-Infinity"),
    (ChannelType.DOUBLE, 1, [2], 2.0),
    (ChannelType.DOUBLE, 5, 2, [2.0]),  # a single value to an array: one element
    (ChannelType.DOUBLE, 5, "[1, 2]", [1.0, 2.0]),
    (ChannelType.FLOAT, 1, "inf", "Infinity"),
    (ChannelType.LONG, 1, "  -12 ", -12),
    (ChannelType.LONG, 1, 3.0, 3),
    (ChannelType.INT, 3, ["1", 2.0, False], [1, 2, 0]),
    (ChannelType.CHAR, 1, 255, 255),
    (ChannelType.CHAR, 8, "añ", "añ"),
    (ChannelType.ENUM, 1, 15, 15),  # no labels known: the 16 states of an mbbo
    (ChannelType.STRING, 1, 12.5, "12.5"),
    (ChannelType.STRING, 1, "é" * 19, "é" * 19),
])
def test_conversion(kind, count, raw, sent):
    data, n = puts.put_value(meta(kind, count), None, raw)
    assert n == len(data)
    assert same(puts.sent_value(meta(kind, count), data), sent)


def test_conversion_of_text_is_utf8_with_its_nul():
    data, count = puts.put_value(meta(ChannelType.CHAR, 10, "r.VAL$"), None, "añ")
    assert data == "añ".encode() + b"\0" and count == 4
    data, count = puts.put_value(meta(ChannelType.STRING, 2), None, ["añ", "b"])
    assert data == ["añ".encode(), b"b"] and count == 2


def test_conversion_of_enums_uses_the_control_labels():
    class Control:
        enum_strings = [b"Zero", b"One", b"Tw\xc3\xb6"]

    data, count = puts.put_value(meta(ChannelType.ENUM), Control(), "Twö")
    assert list(data) == [2] and data.dtype == np.uint16 and count == 1
    data, _ = puts.put_value(meta(ChannelType.ENUM, labels=("A", "1", "B")), None, "1")
    assert list(data) == [1]  # a label that looks like an index is the label
    with pytest.raises(BadValue, match="3 states"):
        puts.put_value(meta(ChannelType.ENUM), Control(), 3)
    with pytest.raises(BadValue, match="16 states"):
        puts.put_value(meta(ChannelType.ENUM), None, 16)


@pytest.mark.parametrize(("kind", "count", "raw"), [
    (ChannelType.LONG, 1, "nan"),
    (ChannelType.LONG, 1, float("inf")),
    (ChannelType.INT, 1, -32769),
    (ChannelType.DOUBLE, 1, 10**400),
    (ChannelType.DOUBLE, 1, [[1.0]]),
    (ChannelType.STRING, 1, "\ud800"),
    (ChannelType.STRING, 1, ["a", "b"]),
    (ChannelType.CHAR, 4, "four"),  # 4 bytes and the NUL
])
def test_conversion_refuses(kind, count, raw):
    with pytest.raises(BadValue):
        puts.put_value(meta(kind, count), None, raw)
