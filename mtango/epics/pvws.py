"""The pvws WebSocket protocol (ornl-epics/pvws) as pure functions: no I/O, no asyncio, no HTTP.

A WebSocket route and an EPICS subscription source use this module; it only turns client frames
into ``ClientMessage`` objects and caproto answers into the dicts to send (``json.dumps`` takes
them as they are: plain ``str``/``int``/``float``/``bool``/``None``/``list``/``dict``, no numpy).

What pvws does, and what we do (pvws sources: ``ws/WebSocket.java``, ``ws/Vtype2Json.java``,
``ws/WebSocketPV.java``, ``webapp/js/pvws.js``; the Channel Access decoding it relies on is
phoebus ``core-pv`` ``PV.java`` and ``pv-ca`` ``DBRHelper.java``/``JCA_PV.java``):

Client frames (``parse_message``)
    ``{"type": "subscribe"|"monitor", "pvs": [...]}`` (``monitor`` is epics2web's spelling; we
    report both as ``subscribe``), ``{"type": "clear", "pvs": [...]}``, ``{"type": "list"}``,
    ``{"type": "write", "pv": ..., "value": ...}`` (a JSON number is written as a double, anything
    else as text; we accept numbers and strings only), ``{"type": "ping"}`` (the server answers
    with a WebSocket ping frame), ``{"type": "echo", ...}`` (sent back as it came). pvws logs bad
    frames and says nothing; we raise ``PvwsProtocolError``, which the route sends as
    ``error_message(...)``.

Updates
    Every update is ``{"type": "update", "pv": name, ...}``. The first one for a PV
    (``full_update``) carries everything; later ones carry what changed (``changes``). pvws.js
    merges them into its cached object with ``Object.assign``.

    ``vtype`` is the phoebus VType class name of the CA native type: ``VDouble``, ``VFloat``,
    ``VInt`` (DBR LONG), ``VShort`` (DBR INT/SHORT), ``VByte`` (DBR CHAR), ``VEnum``, ``VString``,
    and the ``...Array`` forms when the channel's element count is not 1 (``JCA_PV.is_array``).
    CA has no 64-bit integers, so there is no ``VLong``.

    Numbers (scalar and array vtypes) get the display metadata: ``units``, ``description``,
    ``precision``, ``min``/``max`` (display limits), ``warn_low``/``warn_high``,
    ``alarm_low``/``alarm_high``. Limits are doubles; a non-finite limit (an unset softioc
    HIHI is NaN) is the string ``"NaN"``/``"Infinity"``/``"-Infinity"`` (Jackson's default
    ``WRITE_NAN_AS_STRINGS``). ``precision`` is the record's PREC for DOUBLE and FLOAT, 0 for
    the integer types (no PREC in their DBR_CTRL), and absent when PREC is negative (pvws then
    uses a non-decimal format and writes none). With no DBR_CTRL answer (``control_metadata``
    None) pvws uses ``Display.none()``: units ``""``, precision 3 (``new DecimalFormat()``), all
    limits ``"NaN"``; so do we. ``description`` is null from pvws over CA (core-pv does not
    read DESC); the caller may pass DESC. Enums get ``labels`` instead, strings get neither.

    ``value``: numbers; a non-finite DOUBLE/FLOAT (NaN and also +/-Infinity) is ``"NaN"``, as in
    pvws. Integers are JSON integers. Enums: ``value`` is the index and ``text`` the label.
    Strings: ``text``. Numeric arrays: base64 of the little-endian element bytes in ``b64dbl``
    (float64), ``b64flt`` (float32), ``b64int`` (int32), ``b64srt`` (int16) or ``b64byt``
    (uint8); pvws.js decodes them into ``value`` and deletes the b64 key.

    ``severity``: ``NONE``, ``MINOR``, ``MAJOR``, ``INVALID``, or ``UNDEFINED`` (any other CA
    severity, and a disconnected PV). ``readonly``: no write access (pvws also sets it when its
    global write switch is off). ``seconds``/``nanos``: the IOC time stamp in Unix epoch seconds
    (EPICS epoch + 631152000) and nanoseconds.

    Our additions: ``connected`` (``true`` in every full update, ``false`` in
    ``disconnected_update``); pvws has no such field (users complained that a disconnect was only
    visible as severity and a "NaN" value).

Where pvws is poor and we differ (documented, pvws clients still read what they expect):
    * String arrays (``VStringArray``) and enum arrays: pvws has no case for them and sends
      ``text`` = Java ``toString()`` of the whole VType, without vtype or severity. We send
      ``vtype``, ``severity``, ``value`` = the list (strings, or enum indexes) and ``text`` =
      the elements as Java prints a list (``[one, two, three]``), so a text widget shows the
      same kind of text.
    * Long strings (``NAME.VAL$``, a CHAR array): pvws today sends them as ``VByteArray`` /
      ``b64byt`` (its ``handleLongString`` is no longer called). We send ``vtype: "VString"``
      and ``text`` (decoded up to the first NUL, UTF-8 else Latin-1), no display metadata.
    * An enum index outside its labels: pvws falls back to a ``VShort``; we keep ``VEnum`` and
      ``text`` = the index as a string (as the REST side does).

Disconnects
    pvws (core-pv) turns a disconnect into a ``VDouble`` NaN with severity ``UNDEFINED``, so a
    client gets ``{"severity": "UNDEFINED", "value": "NaN", "seconds", "nanos"}`` (time "now");
    a PV that never connects gets only ``{"readonly": true}`` (its first access-rights event).
    ``disconnected_update`` sends both sets: ``connected: false``, ``severity: "UNDEFINED"``,
    ``value: "NaN"``, ``readonly: true``, and ``seconds``/``nanos`` when a time is given.

How the route uses this module, per client and PV (``state`` = what the client holds)::

    first = full_update(...)                    # first reading: send it all
    send(first); state = first
    delta = changes(state, full_update(...))    # every later reading or access change
    if delta: send(delta); state = merge(state, delta)
    gone = disconnected_update(name, stamp)     # disconnect, or connect timeout
    send(gone); state = merge(state, gone)      # metadata stays, as in pvws
    # on reconnect: changes(state, full_update(...)) carries connected, value, severity...

``changes`` makes ``merge(state, delta)`` equal the new full update, with two documented
exceptions: a key the new state no longer has is sent as ``null`` (JSON clients treat it as
absent: ``value: null`` after a PV went from "NaN" back to being a string), and a base64 key
is never sent as ``null`` (pvws.js would try to decode it). A b64 key can only go stale when the
array's element type changes or the PV stops being an array, and then ``vtype`` changes in the
same delta: the b64 key that the current ``vtype`` names is the one that holds the value
(``B64_KEY_OF_VTYPE``); for pvws.js clients no stale key remains at all, as pvws.js replaces
``value`` with each decoded array and deletes the b64 key.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np
from caproto import ChannelType
from caproto import native_type as _caproto_native_type

from mtango.epics.convert import B64_FIELDS, EPICS_EPOCH_OFFSET, decode_text, enum_labels
from mtango.jsonenc import clean_float

__all__ = [
    "B64_KEYS",
    "B64_KEY_OF_VTYPE",
    "ClientMessage",
    "DISPLAY_KEYS",
    "MESSAGE_TYPES",
    "PvwsProtocolError",
    "changes",
    "disconnected_update",
    "error_message",
    "full_update",
    "list_message",
    "merge",
    "parse_message",
    "severity_name",
    "vtype_name",
]

MESSAGE_TYPES = ("subscribe", "clear", "list", "write", "ping", "echo")
"""The client message types ``parse_message`` returns (``monitor`` comes back as ``subscribe``)."""

DISPLAY_KEYS = (
    "units", "description", "precision", "min", "max", "warn_low", "warn_high", "alarm_low",
    "alarm_high",
)
"""Display metadata keys of a numeric PV's full update, in pvws's order."""

B64_KEYS = frozenset(key for key, _ in B64_FIELDS.values())
"""``b64dbl``, ``b64flt``, ``b64int``, ``b64srt``, ``b64byt``."""

# CA native type -> (scalar vtype, array vtype), as phoebus DBRHelper.decodeValue maps them.
_VTYPES: dict[ChannelType, tuple[str, str]] = {
    ChannelType.DOUBLE: ("VDouble", "VDoubleArray"),
    ChannelType.FLOAT: ("VFloat", "VFloatArray"),
    ChannelType.LONG: ("VInt", "VIntArray"),
    ChannelType.INT: ("VShort", "VShortArray"),
    ChannelType.CHAR: ("VByte", "VByteArray"),
    ChannelType.ENUM: ("VEnum", "VEnumArray"),
    ChannelType.STRING: ("VString", "VStringArray"),
}

B64_KEY_OF_VTYPE: dict[str, str] = {
    _VTYPES[native][1]: key for native, (key, _) in B64_FIELDS.items()
}
"""Array vtype -> the base64 key holding its value (``VDoubleArray`` -> ``b64dbl``...)."""

_VALUE_KEYS = frozenset({"value", "text"}) | B64_KEYS
_SEVERITIES = ("NONE", "MINOR", "MAJOR", "INVALID")
_FLOATING = (ChannelType.DOUBLE, ChannelType.FLOAT)
_LIMITS = (
    ("min", "lower_disp_limit"),
    ("max", "upper_disp_limit"),
    ("warn_low", "lower_warning_limit"),
    ("warn_high", "upper_warning_limit"),
    ("alarm_low", "lower_alarm_limit"),
    ("alarm_high", "upper_alarm_limit"),
)
_UNKNOWN_PRECISION = 3  # pvws's Display.none(): java.text.DecimalFormat() shows 3 decimals
_SHOWN = 200  # characters of a bad frame quoted in an error message (pvws quotes 200 too)


# -- client messages ---------------------------------------------------------------------------


class PvwsProtocolError(ValueError):
    """A client frame that is not a valid pvws message; ``message`` is the text for the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ClientMessage:
    """One valid client frame.

    ``type``: one of ``MESSAGE_TYPES``. ``pvs``: the names of a ``subscribe`` or ``clear``, in
    the order given, each once. ``pv`` and ``value``: a ``write``'s PV and value (a float for a
    JSON number, as pvws writes numbers as doubles; otherwise the string). ``raw``: the whole
    decoded JSON object (for ``echo``, whose frame goes back as received).
    """

    type: str
    pvs: tuple[str, ...] = ()
    pv: str | None = None
    value: float | str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def _shorten(text: str) -> str:
    return text if len(text) <= _SHOWN else text[:_SHOWN] + " ..."


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _names(body: Mapping[str, Any], shown: str, max_pvs: int) -> tuple[str, ...]:
    if "pvs" not in body:
        raise PvwsProtocolError(f"Missing 'pvs' in {shown}")
    pvs = body["pvs"]
    if not isinstance(pvs, list):
        raise PvwsProtocolError(f"'pvs' must be a list of PV names in {shown}")
    if len(pvs) > max_pvs:
        raise PvwsProtocolError(f"{len(pvs)} PVs in one message; at most {max_pvs}")
    for name in pvs:
        if not isinstance(name, str) or not name:
            raise PvwsProtocolError(
                f"PV names must be non-empty strings, got {_shorten(json.dumps(name))}"
            )
    return tuple(dict.fromkeys(pvs))


def _write_value(body: Mapping[str, Any], shown: str) -> float | str:
    if "value" not in body:
        raise PvwsProtocolError(f"Missing 'value' in {shown}")
    value = body["value"]
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
        if not math.isfinite(number):
            raise PvwsProtocolError(f"'value' must be a finite number in {shown}")
        return number
    raise PvwsProtocolError(f"'value' must be a number or a string in {shown}")


def parse_message(text: str | bytes, max_pvs: int) -> ClientMessage:
    """Validate one client frame (text, or UTF-8 bytes) and return it as a ``ClientMessage``.

    Raises ``PvwsProtocolError`` for: text that is not UTF-8 or not strict JSON (no bare
    ``NaN``), JSON that is not an object, a missing or non-string ``type``, an unknown type, a
    ``subscribe``/``monitor``/``clear`` without a ``pvs`` list, with more than ``max_pvs`` names
    or with a name that is not a non-empty string, a ``write`` without a non-empty string ``pv``
    or without a ``value`` that is a string or a finite number. Keys a type does not use are
    ignored, as pvws ignores them.
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise PvwsProtocolError("Message is not UTF-8 text") from None
    shown = _shorten(text)
    try:
        body = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise PvwsProtocolError(f"Message is not valid JSON: {shown}") from None
    if not isinstance(body, dict):
        raise PvwsProtocolError(f"Message must be a JSON object: {shown}")
    if "type" not in body:
        raise PvwsProtocolError(f"Missing 'type' in {shown}")
    kind = body["type"]
    if not isinstance(kind, str):
        raise PvwsProtocolError(f"'type' must be a string in {shown}")
    if kind in ("subscribe", "monitor"):
        return ClientMessage("subscribe", pvs=_names(body, shown, max_pvs), raw=body)
    if kind == "clear":
        return ClientMessage("clear", pvs=_names(body, shown, max_pvs), raw=body)
    if kind == "write":
        pv = body.get("pv")
        if pv is None:
            raise PvwsProtocolError(f"Missing 'pv' in {shown}")
        if not isinstance(pv, str) or not pv:
            raise PvwsProtocolError(f"'pv' must be a non-empty string in {shown}")
        return ClientMessage("write", pv=pv, value=_write_value(body, shown), raw=body)
    if kind in ("list", "ping", "echo"):
        return ClientMessage(kind, raw=body)
    raise PvwsProtocolError(f"Unknown message type: {shown}")


def error_message(text: str) -> dict[str, Any]:
    """``{"type": "error", "message": text}``: pvws's answer to a failed write (and ours to a bad
    frame)."""
    return {"type": "error", "message": str(text)}


def list_message(pvs: Iterable[str]) -> dict[str, Any]:
    """``{"type": "list", "pvs": [...]}``: the answer to ``list``, the client's subscribed PVs."""
    return {"type": "list", "pvs": [str(name) for name in pvs]}


# -- updates -----------------------------------------------------------------------------------


def severity_name(severity: Any) -> str:
    """pvws's name of a CA alarm severity (0-3: NONE, MINOR, MAJOR, INVALID; else UNDEFINED)."""
    try:
        index = int(severity)
    except (TypeError, ValueError):
        return "UNDEFINED"
    return _SEVERITIES[index] if 0 <= index < len(_SEVERITIES) else "UNDEFINED"


def _native(native_type: ChannelType | int) -> ChannelType:
    """The plain native type, also when given a DBR_TIME_/CTRL_ type."""
    kind = ChannelType(_caproto_native_type(ChannelType(native_type)))
    if kind not in _VTYPES:
        raise ValueError(f"no pvws vtype for CA type {kind!r}")
    return kind


def _is_array(data: Any, count: int | None) -> bool:
    return (count if count is not None else len(data)) != 1


def vtype_name(
    native_type: ChannelType | int,
    count: int | None,
    *,
    long_string: bool = False,
    elements: int = 1,
) -> str:
    """The ``vtype`` pvws reports: scalar or ``...Array`` by the channel's element ``count``
    (``elements``, the length of the data, when ``count`` is None); ``VString`` for a long
    string."""
    if long_string:
        return "VString"
    scalar, array = _VTYPES[_native(native_type)]
    return array if (count if count is not None else elements) != 1 else scalar


def _limit(value: Any) -> float | str:
    if isinstance(value, (bytes, bytearray)):  # DBR_CTRL_CHAR limits come as one byte
        value = value[0] if value else 0
    return clean_float(float(value))


def _text(value: Any) -> str:
    return decode_text(bytes(value)) if isinstance(value, (bytes, bytearray)) else str(value)


def _display(native: ChannelType, control: Any, description: str | None) -> dict[str, Any]:
    if control is None:
        body: dict[str, Any] = {
            "units": "", "description": description, "precision": _UNKNOWN_PRECISION,
        }
        body.update((key, "NaN") for key, _ in _LIMITS)
        return body
    body = {"units": _text(getattr(control, "units", b"")), "description": description}
    if native in _FLOATING:
        precision = int(getattr(control, "precision", 0))
        if precision >= 0:
            body["precision"] = precision
    else:
        body["precision"] = 0
    for key, attribute in _LIMITS:
        body[key] = _limit(getattr(control, attribute, math.nan))
    return body


def _java_list(items: Iterable[str]) -> str:
    return "[" + ", ".join(items) + "]"


def _b64(native: ChannelType, data: Any) -> dict[str, str]:
    key, dtype = B64_FIELDS[native]
    raw = np.asarray(data).astype(dtype, copy=False).tobytes()
    return {key: base64.b64encode(raw).decode("ascii")}


def _number(native: ChannelType, element: Any) -> int | float | str:
    if native in _FLOATING:
        number = float(element)
        return number if math.isfinite(number) else "NaN"
    return int(element)


def _value_fields(
    native: ChannelType, data: Any, array: bool, labels: tuple[str, ...], long_string: bool
) -> dict[str, Any]:
    if long_string:
        return {"text": decode_text(np.asarray(data, dtype=np.uint8).tobytes())}
    if native == ChannelType.STRING:
        texts = [_text(v) for v in data]
        if array:
            return {"value": texts, "text": _java_list(texts)}
        return {"text": texts[0] if texts else ""}
    if native == ChannelType.ENUM:
        indexes = [int(v) for v in data]
        names = [labels[i] if 0 <= i < len(labels) else str(i) for i in indexes]
        if array:
            return {"value": indexes, "text": _java_list(names)}
        if not indexes:
            return {"value": None, "text": ""}
        return {"value": indexes[0], "text": names[0]}
    if array:
        return _b64(native, data)
    elements = np.asarray(data).ravel()
    return {"value": _number(native, elements[0]) if elements.size else None}


def _stamp(time_metadata: Any) -> tuple[int, int]:
    seconds = int(time_metadata.secondsSinceEpoch) + EPICS_EPOCH_OFFSET
    return seconds, int(time_metadata.nanoSeconds)


def full_update(
    name: str,
    native_type: ChannelType | int,
    data: Any,
    time_metadata: Any,
    control_metadata: Any,
    *,
    labels: Iterable[str] | None = None,
    writable: bool,
    description: str | None = None,
    count: int | None = None,
    long_string: bool = False,
) -> dict[str, Any]:
    """The complete update for PV ``name`` (what a client gets first, and the state to diff).

    ``native_type``: the channel's CA native type (``pv.channel.native_data_type``; a DBR_TIME_ or
    DBR_CTRL_ type is reduced to it). ``data``/``time_metadata``: a DBR_TIME read or monitor
    update (``response.data``, ``response.metadata``, or a ``convert.Reading``'s ``data`` and
    ``metadata``). ``control_metadata``: a DBR_CTRL read's ``metadata``, or None while unknown
    (then pvws's ``Display.none()`` defaults, see the module doc). ``labels``: enum labels; None
    takes them from ``control_metadata``. ``writable``: the channel has write access (``readonly``
    is its negation). ``description``: the record's DESC, or None (pvws over CA sends null).
    ``count``: the channel's native element count, which makes the PV a scalar (1) or an array
    (anything else, as pvws decides); None decides by the length of ``data``. ``long_string``:
    the name is ``NAME.FIELD$``, a CHAR array sent as ``text``.

    Keys, in order: ``type``, ``pv``, ``vtype``, the ``DISPLAY_KEYS`` (numbers only) or
    ``labels`` (enums only), ``severity``, ``readonly``, ``connected`` (true), ``value`` and/or
    ``text`` or one ``b64...`` key, ``seconds``, ``nanos``.
    """
    native = _native(native_type)
    array = _is_array(data, count) and not long_string
    body: dict[str, Any] = {
        "type": "update",
        "pv": name,
        "vtype": vtype_name(native, count, long_string=long_string, elements=len(data)),
    }
    choices: tuple[str, ...] = ()
    if long_string or native == ChannelType.STRING:
        pass
    elif native == ChannelType.ENUM:
        if labels is not None:
            choices = tuple(str(label) for label in labels)
        elif control_metadata is not None:
            choices = enum_labels(control_metadata)
        body["labels"] = list(choices)
    else:
        body.update(_display(native, control_metadata, description))
    body["severity"] = severity_name(time_metadata.severity)
    body["readonly"] = not writable
    body["connected"] = True
    body.update(_value_fields(native, data, array, choices, long_string))
    body["seconds"], body["nanos"] = _stamp(time_metadata)
    return body


def disconnected_update(name: str, stamp: tuple[int, int] | None = None) -> dict[str, Any]:
    """What a client gets when PV ``name`` disconnects or never connects.

    ``connected: false`` (ours) and what pvws sends in those cases: ``severity: "UNDEFINED"``
    and ``value: "NaN"`` (a disconnect), ``readonly: true`` (a PV not connected yet).
    ``stamp``: (Unix seconds, nanoseconds) of the disconnect, sent as ``seconds``/``nanos`` (pvws
    stamps it "now"); None leaves the client's last time stamp as it was.
    """
    body: dict[str, Any] = {
        "type": "update",
        "pv": name,
        "connected": False,
        "severity": "UNDEFINED",
        "readonly": True,
        "value": "NaN",
    }
    if stamp is not None:
        body["seconds"], body["nanos"] = int(stamp[0]), int(stamp[1])
    return body


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def changes(previous: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any] | None:
    """The delta update that brings a client holding ``previous`` to ``current``; None if none.

    ``previous`` is everything the client was sent for this PV merged in order (``merge``),
    ``current`` a new ``full_update``. The delta has ``type``, ``pv`` and each key whose value
    differs or is new: usually ``value``/``text``/the b64 key, ``seconds``, ``nanos``, and
    ``severity``, ``readonly``, ``connected`` or metadata when those changed. When any of
    ``value``, ``text`` or a b64 key differs, all of those ``current`` has are sent (pvws.js
    rebuilds ``value`` from the b64 key in the same message). A key ``previous``
    has (not None) and ``current`` lacks is sent as None (JSON null), except the b64 keys, which
    are never null (pvws.js would decode them): a b64 key left over from an earlier vtype is
    not the value; ``B64_KEY_OF_VTYPE[vtype]`` names the one that is.
    """
    delta: dict[str, Any] = {"type": "update", "pv": current["pv"]}
    for key, value in current.items():
        if key in ("type", "pv"):
            continue
        if key not in previous or not _same(previous[key], value):
            delta[key] = value
    for key, value in previous.items():
        if key in ("type", "pv") or key in current or key in B64_KEYS or value is None:
            continue
        delta[key] = None
    if not _VALUE_KEYS.isdisjoint(delta):
        # pvws.js rebuilds ``value`` from the b64 key of the same message: whenever anything
        # about the value moves, the whole current value goes along.
        delta.update((key, current[key]) for key in _VALUE_KEYS.intersection(current))
    return delta if len(delta) > 2 else None


def merge(state: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` with ``update``'s keys laid over it: what pvws.js's ``Object.assign`` gives a
    client (before its b64 decoding); the route keeps this per client and PV for ``changes``."""
    merged = dict(state)
    merged.update(update)
    return merged
