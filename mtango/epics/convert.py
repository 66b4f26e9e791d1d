"""caproto responses to the bridge's JSON shapes (pure functions, no I/O).

Field names follow pvws where it has one (``value``, ``text``, ``seconds``, ``nanos``, ``severity``,
``units``, ``precision``, ``labels`` as ``enum_strings``, ``b64dbl``...), plus what clients of the
rc3 API expect: ``name``, a millisecond ``timestamp`` and a Tango-style ``quality``. Values stay
numpy where they are arrays; ``mtango.jsonenc`` makes them JSON (NaN as ``"NaN"``).
"""

from __future__ import annotations

import base64
import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from caproto import AccessRights, AlarmSeverity, AlarmStatus, ChannelType

from mtango.jsonenc import to_jsonable

EPICS_EPOCH_OFFSET = 631152000  # seconds from 1970-01-01 to 1990-01-01, the EPICS epoch

TYPE_NAMES = {
    ChannelType.STRING: "STRING",
    ChannelType.INT: "SHORT",
    ChannelType.FLOAT: "FLOAT",
    ChannelType.ENUM: "ENUM",
    ChannelType.CHAR: "CHAR",
    ChannelType.LONG: "LONG",
    ChannelType.DOUBLE: "DOUBLE",
}
ELEMENT_BYTES = {
    ChannelType.STRING: 40,
    ChannelType.INT: 2,
    ChannelType.FLOAT: 4,
    ChannelType.ENUM: 2,
    ChannelType.CHAR: 1,
    ChannelType.LONG: 4,
    ChannelType.DOUBLE: 8,
}
# pvws's base64 array fields: little-endian element bytes.
B64_FIELDS = {
    ChannelType.DOUBLE: ("b64dbl", "<f8"),
    ChannelType.FLOAT: ("b64flt", "<f4"),
    ChannelType.LONG: ("b64int", "<i4"),
    ChannelType.INT: ("b64srt", "<i2"),
    ChannelType.CHAR: ("b64byt", "u1"),
}
SEVERITY_NAMES = {
    AlarmSeverity.NO_ALARM: "NO_ALARM",
    AlarmSeverity.MINOR_ALARM: "MINOR",
    AlarmSeverity.MAJOR_ALARM: "MAJOR",
    AlarmSeverity.INVALID_ALARM: "INVALID",
}
QUALITY = {
    AlarmSeverity.NO_ALARM: "ATTR_VALID",
    AlarmSeverity.MINOR_ALARM: "ATTR_WARNING",
    AlarmSeverity.MAJOR_ALARM: "ATTR_ALARM",
    AlarmSeverity.INVALID_ALARM: "ATTR_INVALID",
}


@dataclass
class Reading:
    """One DBR_TIME answer (a monitor update or a read), as received by the bridge.

    ``received`` is the bridge's monotonic clock at receipt: the age used against ``max_age``.
    ``bodies`` memoizes converted value objects per (count, encoding): many HTTP readers of one
    update convert it once.
    """

    data: Any
    metadata: Any
    count: int
    received: float
    bodies: dict[tuple[int, str], dict[str, Any]] = field(default_factory=dict)

    @property
    def stamp(self) -> tuple[int, int]:
        md = self.metadata
        return int(md.secondsSinceEpoch) + EPICS_EPOCH_OFFSET, int(md.nanoSeconds)


@dataclass(frozen=True, slots=True)
class ChannelMeta:
    """What a connected channel knows about its PV: native type and count, access, IOC, enum
    labels (once a DBR_CTRL answer gave them). A new one is made on each (re)connection."""

    name: str
    native_type: ChannelType
    native_count: int
    access: Any = None
    host: str | None = None
    long_string: bool = False
    labels: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PvReading:
    """What the channel pool answers: a reading with the metadata of its channel at that time."""

    meta: ChannelMeta
    reading: Reading


def value_body(answer: PvReading, count: int = 0, encoding: str = "json") -> dict[str, Any]:
    """The value object of a pool answer (``value_object`` with the channel's metadata)."""
    meta = answer.meta
    return value_object(meta.name, answer.reading, meta.native_type, meta.native_count,
                        long_string=meta.long_string, labels=meta.labels, count=count,
                        encoding=encoding)


def info_body(answer: PvReading) -> dict[str, Any]:
    """The info object of a pool answer holding a DBR_CTRL reading."""
    meta = answer.meta
    return info_object(meta.name, answer.reading.metadata, meta.native_type, meta.native_count,
                       access=meta.access, host=meta.host, long_string=meta.long_string)


def decode_text(raw: bytes) -> str:
    """IOC strings are bytes: UTF-8 when they decode as such, else Latin-1 (caproto's default)."""
    raw = raw.split(b"\0", 1)[0]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _severity(value: int) -> AlarmSeverity:
    try:
        return AlarmSeverity(value)
    except ValueError:
        return AlarmSeverity.INVALID_ALARM


def _status_name(value: int) -> str:
    try:
        return AlarmStatus(value).name
    except ValueError:
        return str(value)


@functools.lru_cache(maxsize=256)
def _alarm(severity_value: int, status_value: int) -> tuple[tuple[str, str], ...]:
    severity = _severity(severity_value)
    return (
        ("severity", SEVERITY_NAMES[severity]),
        ("status", _status_name(status_value)),
        ("quality", QUALITY[severity]),
    )


def alarm_fields(metadata: Any) -> dict[str, str]:
    """``severity``, ``status`` and the Tango ``quality`` the severity maps to."""
    return dict(_alarm(int(metadata.severity), int(metadata.status)))


def _elements(data: Any, count: int) -> Any:
    return data[:count] if count and len(data) > count else data


def value_fields(
    reading: Reading,
    native_type: ChannelType,
    native_count: int,
    *,
    long_string: bool = False,
    labels: tuple[str, ...] = (),
    count: int = 0,
    encoding: str = "json",
) -> dict[str, Any]:
    """``value`` (and ``text``, ``enum_strings`` or a ``b64...`` field) of one reading.

    Scalars (native count 1) are JSON scalars; arrays are lists, or base64 with ``encoding="b64"``.
    ``count`` trims arrays (0: everything the reading holds). The result is JSON-ready (NaN as
    ``"NaN"``), so a memoized body needs no further conversion per request.
    """
    data = _elements(reading.data, count)
    if long_string:
        raw = bytes(np.asarray(data, dtype=np.uint8)) if len(data) else b""
        text = decode_text(raw)
        return {"value": text, "text": text}
    if native_type == ChannelType.STRING:
        texts = [decode_text(bytes(v)) for v in data]
        if native_count == 1:
            text = texts[0] if texts else ""
            return {"value": text, "text": text}
        return {"value": texts}
    if native_type == ChannelType.ENUM:
        indexes = [int(v) for v in data]
        names = [labels[i] if 0 <= i < len(labels) else str(i) for i in indexes]
        if native_count == 1 and indexes:
            return {"value": indexes[0], "text": names[0], "enum_strings": list(labels)}
        return {"value": indexes, "text": names, "enum_strings": list(labels)}
    array = np.asarray(data)
    if native_count == 1 and array.size == 1:
        return {"value": to_jsonable(array[0].item())}
    if encoding == "b64" and native_type in B64_FIELDS:
        key, dtype = B64_FIELDS[native_type]
        return {key: base64.b64encode(array.astype(dtype, copy=False).tobytes()).decode("ascii")}
    return {"value": to_jsonable(array)}


def value_object(
    name: str,
    reading: Reading,
    native_type: ChannelType,
    native_count: int,
    *,
    long_string: bool = False,
    labels: tuple[str, ...] = (),
    count: int = 0,
    encoding: str = "json",
) -> dict[str, Any]:
    """The value object: name, value, type, counts, time (ms + seconds/nanos) and alarm state.

    ``count`` is how many elements the answer holds (``?count=N`` trims them; a variable-length
    array may hold fewer than its PV's maximum), ``native_count`` the PV's own element count.
    """
    seconds, nanos = reading.stamp
    body: dict[str, Any] = {
        "name": name,
        "connected": True,
        "type": "STRING" if long_string else TYPE_NAMES.get(native_type, native_type.name),
        "count": 1 if long_string else len(_elements(reading.data, count)),
        "native_count": native_count,
    }
    body.update(
        value_fields(
            reading,
            native_type,
            native_count,
            long_string=long_string,
            labels=labels,
            count=count,
            encoding=encoding,
        )
    )
    body.update(
        timestamp=seconds * 1000 + nanos // 1_000_000,
        seconds=seconds,
        nanos=nanos,
        **alarm_fields(reading.metadata),
    )
    return body


def enum_labels(metadata: Any) -> tuple[str, ...]:
    strings = getattr(metadata, "enum_strings", None) or ()
    return tuple(decode_text(s) if isinstance(s, bytes) else str(s) for s in strings)


def _number(value: Any) -> Any:
    if isinstance(value, bytes):  # DBR_CTRL_CHAR limits are single chars
        return value[0] if value else 0
    if isinstance(value, float) and not math.isfinite(value):
        return value  # jsonenc writes "NaN"/"Infinity": an IOC's "limit not set"
    return value


def _limits(metadata: Any, upper: str, lower: str) -> dict[str, Any] | None:
    if not hasattr(metadata, upper):
        return None
    return {"low": _number(getattr(metadata, lower)), "high": _number(getattr(metadata, upper))}


def access_name(rights: Any) -> str:
    if rights is None:
        return "UNKNOWN"
    rights = AccessRights(int(rights))
    read, write = bool(rights & AccessRights.READ), bool(rights & AccessRights.WRITE)
    return {(True, True): "READ_WRITE", (True, False): "READ", (False, True): "WRITE"}.get(
        (read, write), "NO_ACCESS"
    )


def info_object(
    name: str,
    control: Any,
    native_type: ChannelType,
    native_count: int,
    *,
    access: Any = None,
    host: str | None = None,
    long_string: bool = False,
) -> dict[str, Any]:
    """Control metadata of a PV from its DBR_CTRL answer: units, precision, limits, enum strings."""
    body: dict[str, Any] = {
        "name": name,
        "type": "STRING" if long_string else TYPE_NAMES.get(native_type, native_type.name),
        "native_type": TYPE_NAMES.get(native_type, native_type.name),
        "count": native_count,
        "access": access_name(access),
        "readonly": not (access is not None and bool(int(access) & AccessRights.WRITE)),
        "host": host,
    }
    if long_string:  # the char array's own limits and units say nothing about the text
        return body
    if hasattr(control, "units"):
        units = control.units
        body["units"] = decode_text(units) if isinstance(units, bytes) else str(units)
    if hasattr(control, "precision"):
        body["precision"] = int(control.precision)
    for key, upper, lower in (
        ("display", "upper_disp_limit", "lower_disp_limit"),
        ("alarm", "upper_alarm_limit", "lower_alarm_limit"),
        ("warning", "upper_warning_limit", "lower_warning_limit"),
        ("control", "upper_ctrl_limit", "lower_ctrl_limit"),
    ):
        limits = _limits(control, upper, lower)
        if limits is not None:
            body[key] = limits
    if native_type == ChannelType.ENUM:
        body["enum_strings"] = list(enum_labels(control))
    return body


METADATA_FIELDS = (
    "units", "precision", "display", "alarm", "warning", "control", "enum_strings", "access",
    "readonly", "host", "native_type",
)


def full_object(value: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """``GET pvs/{pv}``: the value object plus the metadata of ``info_object``."""
    body = dict(value)
    for key in METADATA_FIELDS:
        if key in info and key not in body:
            body[key] = info[key]
    return body
