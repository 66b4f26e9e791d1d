"""PyTango objects to the plain dicts of the rc3 API.

Pure functions, no I/O: each takes what PyTango returned and gives back the JSON shape the rc3
reference describes, with Tango's enum names as strings (``"DevDouble"``, ``"ATTR_VALID"``,
``"READ_WRITE"``) and timestamps in milliseconds. Values may still hold numpy arrays; the
serializer (``mtango.jsonenc``) turns them into JSON lists, NaN into ``"NaN"``.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import tango

from mtango.errors import ErrorEntry, entries_from_devfailed, failure_body

_MEMORIZED_NAMES = {
    tango.AttrMemorizedType.NONE: "NOT_MEMORIZED",
    tango.AttrMemorizedType.MEMORIZED: "MEMORIZED",
    tango.AttrMemorizedType.MEMORIZED_WRITE_INIT: "MEMORIZED_WRITE_INIT",
    tango.AttrMemorizedType.NOT_KNOWN: "NOT_KNOWN",
}


def type_name(data_type: Any) -> str:
    """``5`` or ``CmdArgType.DevDouble`` -> ``"DevDouble"``."""
    try:
        return tango.CmdArgType(int(data_type)).name
    except ValueError:
        return str(data_type)


def enum_name(value: Any) -> str:
    return getattr(value, "name", None) or str(value)


def time_ms(tv: Any) -> int:
    """A Tango TimeVal as integer milliseconds since the epoch (what the Java server sends)."""
    return int(tv.tv_sec) * 1000 + int(tv.tv_usec) // 1000


def attribute_value(
    da: tango.DeviceAttribute, enum_labels: Sequence[str] = (), name: str | None = None
) -> Any:
    """The JSON value of a read: scalar, list, ``{"data","width","height"}`` image, label, ..."""
    value = da.value
    if value is None:
        return None
    data_type = da.type
    if data_type == tango.CmdArgType.DevEnum:
        return _enum_labels(value, enum_labels)
    if data_type == tango.CmdArgType.DevEncoded:
        return encoded_value(value)
    if data_type == tango.CmdArgType.DevState:
        return _state_names(value)
    if da.data_format == tango.AttrDataFormat.IMAGE:
        return image_value(value, da.dim_x, da.dim_y)
    return value


def image_value(value: Any, width: int, height: int) -> dict[str, Any]:
    """Images as row-major flat data plus their dimensions (the shape rc3 clients settled on)."""
    if hasattr(value, "ravel"):
        data: Any = value.ravel()
    else:
        data = [v for row in value for v in row]
    return {"data": data, "width": int(width), "height": int(height)}


def encoded_value(value: Any) -> dict[str, str]:
    """DevEncoded as ``{"format": <Tango format string>, "data": <base64 of the bytes>}``."""
    fmt, data = value
    if isinstance(data, str):
        data = data.encode("latin-1")
    return {"format": str(fmt), "data": base64.b64encode(bytes(data)).decode("ascii")}


def _enum_labels(value: Any, labels: Sequence[str]) -> Any:
    def label(index: Any) -> Any:
        i = int(index)
        return labels[i] if 0 <= i < len(labels) else i

    if hasattr(value, "ndim") and value.ndim > 0 or isinstance(value, (list, tuple)):
        return [label(v) for v in value]
    return label(value)


def _state_names(value: Any) -> Any:
    if hasattr(value, "ndim") and value.ndim > 0 or isinstance(value, (list, tuple)):
        return [tango.DevState(int(v)).name for v in value]
    return tango.DevState(int(value)).name


def value_object(da: tango.DeviceAttribute, enum_labels: Sequence[str] = ()) -> dict[str, Any]:
    """``{"name","value","quality","timestamp"}``, or the FAILURE item for a failed read."""
    if da.has_failed:
        return failure_body(entries_from_err_stack(da.get_err_stack()), name=da.name)
    return {
        "name": da.name,
        "value": attribute_value(da, enum_labels),
        "quality": enum_name(da.quality),
        "timestamp": time_ms(da.time),
    }


def entries_from_err_stack(stack: Sequence[Any]) -> list[ErrorEntry]:
    return entries_from_devfailed(tango.DevFailed(*stack)) if stack else [
        ErrorEntry("API_AttributeFailed", "read failed without an error stack")
    ]


def history_item(name: str, item: Any, enum_labels: Sequence[str] = ()) -> dict[str, Any]:
    """One entry of attribute history: a value object, or a FAILURE object with its time."""
    if _failed(item):
        body = failure_body(entries_from_err_stack(item.get_err_stack()), name=name)
        body["timestamp"] = time_ms(item.time)
        return body
    obj = value_object(item, enum_labels)
    obj["name"] = name
    return obj


def _failed(item: Any) -> bool:
    """``has_failed``: a property of DeviceAttribute(History), a method of DeviceDataHistory."""
    flag = item.has_failed
    return bool(flag() if callable(flag) else flag)


def command_history_item(name: str, item: Any) -> dict[str, Any]:
    if _failed(item):
        body = failure_body(entries_from_err_stack(item.get_err_stack()), name=name)
        body["timestamp"] = time_ms(item.get_date())
        return body
    output = command_output(item.extract(), type_name(item.get_type()))
    return {"name": name, "output": output, "timestamp": time_ms(item.get_date())}


_STRUCT_KEYS = {"DevVarLongStringArray": "lvalue", "DevVarDoubleStringArray": "dvalue"}


def command_output(value: Any, data_type: str) -> Any:
    """A command's output (or argin) as rc3 answers it: ``{"lvalue"|"dvalue", "svalue"}`` for the
    two struct types, state names, DevEncoded as ``{format, data}``; numbers and arrays as they
    are (the serializer makes numpy arrays lists and NaN ``"NaN"``)."""
    if value is None:
        return None
    if data_type in _STRUCT_KEYS:
        numbers, strings = value
        return {_STRUCT_KEYS[data_type]: numbers, "svalue": list(strings)}
    if data_type in ("DevState", "DevVarStateArray"):
        return _state_names(value)
    if data_type == "DevEncoded":
        return encoded_value(value)
    return value


def attribute_info(info: Any) -> dict[str, Any]:
    """AttributeInfoEx with the Java API's field names and every enum as its name."""
    alarms = info.alarms
    events = info.events
    memorized = _MEMORIZED_NAMES.get(info.memorized, enum_name(info.memorized))
    return {
        "name": info.name,
        "writable": enum_name(info.writable),
        "data_format": enum_name(info.data_format),
        "data_type": type_name(info.data_type),
        "max_dim_x": int(info.max_dim_x),
        "max_dim_y": int(info.max_dim_y),
        "description": info.description,
        "label": info.label,
        "unit": info.unit,
        "standard_unit": info.standard_unit,
        "display_unit": info.display_unit,
        "format": info.format,
        "min_value": info.min_value,
        "max_value": info.max_value,
        "min_alarm": info.min_alarm,
        "max_alarm": info.max_alarm,
        "writable_attr_name": info.writable_attr_name,
        "level": enum_name(info.disp_level),
        "extensions": list(info.extensions),
        "alarms": {
            "min_alarm": alarms.min_alarm,
            "max_alarm": alarms.max_alarm,
            "min_warning": alarms.min_warning,
            "max_warning": alarms.max_warning,
            "delta_t": alarms.delta_t,
            "delta_val": alarms.delta_val,
            "extensions": list(alarms.extensions),
        },
        "events": {
            "ch_event": {
                "rel_change": events.ch_event.rel_change,
                "abs_change": events.ch_event.abs_change,
                "extensions": list(events.ch_event.extensions),
            },
            "per_event": {
                "period": events.per_event.period,
                "extensions": list(events.per_event.extensions),
            },
            "arch_event": {
                "rel_change": events.arch_event.archive_rel_change,
                "abs_change": events.arch_event.archive_abs_change,
                "period": events.arch_event.archive_period,
                "extensions": list(events.arch_event.extensions),
            },
        },
        "sys_extensions": list(info.sys_extensions),
        "isMemorized": memorized in ("MEMORIZED", "MEMORIZED_WRITE_INIT"),
        "isSetAtInit": memorized == "MEMORIZED_WRITE_INIT",
        "memorized": memorized,
        "root_attr_name": info.root_attr_name,
        "enum_label": list(info.enum_labels),
    }


def command_info(info: Any) -> dict[str, Any]:
    return {
        "cmd_name": info.cmd_name,
        "level": enum_name(info.disp_level),
        "cmd_tag": int(info.cmd_tag),
        "in_type": type_name(info.in_type),
        "out_type": type_name(info.out_type),
        "in_type_desc": info.in_type_desc,
        "out_type_desc": info.out_type_desc,
    }


def device_info(reply: Any) -> dict[str, Any]:
    """The database's ``DbGetDeviceInfo`` answer in the shape of the Java server's ``info``.

    The answer is ``([exported, pid], [name, ior, version, server, host, started, stopped,
    class])``; the class is missing from old databases.
    """
    (exported, pid, *_), strings = reply
    name, ior, version, server, host, started, stopped, *rest = list(strings) + [""] * 8
    return {
        "last_exported": started or "?",
        "last_unexported": stopped or "?",
        "name": name,
        "ior": ior,
        "version": str(version),
        "exported": bool(exported),
        "pid": int(pid),
        "server": server,
        "hostname": host,
        "classname": rest[0] if rest else "",
        "is_taco": False,
    }


def _take_values(items: list[str], at: int) -> tuple[list[str], int]:
    """``count, v1 .. vcount`` at ``at``; returns the values and the index after them."""
    count = int(items[at])
    return list(items[at + 1:at + 1 + count]), at + 1 + count


def device_properties(reply: Any) -> dict[str, list[str]]:
    """``DbGetDeviceProperty``: ``[device, n, name, count, values..., ...]``.

    A property without value is sent as count 0 followed by one filler string.
    """
    items = [str(v) for v in reply]
    found: dict[str, list[str]] = {}
    at = 2
    for _ in range(int(items[1])):
        name = items[at]
        values, at = _take_values(items, at + 1)
        if not values:
            at += 1  # the filler
        found[name] = values
    return found


def attribute_properties(reply: Any) -> dict[str, dict[str, list[str]]]:
    """``DbGetDeviceAttributeProperty2``: ``[device, n, attr, nprops, (prop, count, v...)...]``."""
    items = [str(v) for v in reply]
    found: dict[str, dict[str, list[str]]] = {}
    at = 2
    for _ in range(int(items[1])):
        attribute, nprops = items[at], int(items[at + 1])
        at += 2
        props: dict[str, list[str]] = {}
        for _ in range(nprops):
            props[items[at]], at = _take_values(items, at + 1)
        found[attribute] = props
    return found
