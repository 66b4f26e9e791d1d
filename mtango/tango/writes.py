"""What clients send to write, as the values PyTango writes: pure conversions, no I/O.

Each function takes what the HTTP layer received (query strings, a JSON value, a raw body) and the
target's description as ``TangoBackend`` gives it (``attribute_info``, ``command_info``), and
returns the value to hand to PyTango, converted to the exact Tango type. A value that cannot be
converted raises ``bad_request`` (400) before anything is written; a read-only attribute raises
``not_writable`` (405). Range checks are done here, not left to PyTango (which raises
``OverflowError``/``TypeError``, or silently truncates a string at a NUL).

Rules:

- Query strings (``?v=...``, ``?attr=value``) are text: numbers in decimal (``42``, ``-1.5e3``,
  ``NaN``, ``Infinity``; ``+`` may arrive as a space, as un-encoded URLs give it), booleans
  ``true``/``false``/``1``/``0``, enums by label or index, strings verbatim. A spectrum is the
  repeated parameter (``v=1&v=2``), or one parameter holding a JSON array (``v=[1,2]``) or
  comma-separated values (``v=1,2``: ``String(array)`` of the tangojs connector). An image is one
  parameter holding a JSON array of rows.
- JSON bodies: numbers, booleans, strings (a string holding a number is accepted for numeric
  types, ``"NaN"`` included, as reads send non-finite floats), arrays, arrays of rows or
  ``{"data", "width", "height"}`` for images (the read shape), ``{"format", "data"}`` (base64)
  for DevEncoded; ``{"value": X}`` is taken as ``X``.
- Command bodies: JSON, or the tangojs connector's un-quoted ``String(value)`` when the body is
  not JSON (``hello tangojs``; ``1.5,2.5,4`` for arrays); a DevString command takes a body that is
  not a JSON string verbatim (``42`` is ``"42"``). With ``Content-Type: application/json`` the body
  must be JSON. The v1 body ``{"host", "device", "name", "input"}`` gives ``input``.
- Strings go to Tango as Latin-1 C strings: characters beyond Latin-1 and NUL are refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import tango

from mtango.errors import ApiError, ErrorEntry, bad_request
from mtango.jsonenc import to_jsonable
from mtango.tango import convert

# Element types of numbers, by Tango type name.
_INTEGERS: dict[str, type[np.integer[Any]]] = {
    "DevShort": np.int16,
    "DevUShort": np.uint16,
    "DevLong": np.int32,
    "DevULong": np.uint32,
    "DevLong64": np.int64,
    "DevULong64": np.uint64,
    "DevUChar": np.uint8,
}
_FLOATS: dict[str, type[np.floating[Any]]] = {"DevFloat": np.float32, "DevDouble": np.float64}
_STRINGS = frozenset({"DevString", "ConstDevString"})
_SCALARS = frozenset({*_INTEGERS, *_FLOATS, *_STRINGS, "DevBoolean", "DevEnum", "DevState"})

# Command array types and the scalar type of their elements.
_ARRAYS = {
    "DevVarCharArray": "DevUChar",
    "DevVarShortArray": "DevShort",
    "DevVarUShortArray": "DevUShort",
    "DevVarLongArray": "DevLong",
    "DevVarULongArray": "DevULong",
    "DevVarLong64Array": "DevLong64",
    "DevVarULong64Array": "DevULong64",
    "DevVarFloatArray": "DevFloat",
    "DevVarDoubleArray": "DevDouble",
    "DevVarBooleanArray": "DevBoolean",
    "DevVarStringArray": "DevString",
    "DevVarStateArray": "DevState",
}
# The two struct types: name of their number list, its element type.
_STRUCTS = {"DevVarLongStringArray": ("lvalue", "DevLong"),
            "DevVarDoubleStringArray": ("dvalue", "DevDouble")}

_WRITABLE = frozenset({"WRITE", "READ_WRITE"})

_INT_TEXT = re.compile(r"[+-]?\d+")
_FLOAT_TEXT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_UNENCODED_PLUS = re.compile(r"(?<=[0-9.][eE]) (?=\d)")  # "1e+5" sent un-encoded reads "1e 5"
_NON_FINITE = {"nan": math.nan, "+nan": math.nan, "-nan": math.nan,
               "inf": math.inf, "+inf": math.inf, "-inf": -math.inf,
               "infinity": math.inf, "+infinity": math.inf, "-infinity": -math.inf}
_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})


class _Bad(ValueError):
    """A value that cannot be converted; ``reason`` becomes the error's reason."""

    def __init__(self, message: str, reason: str = "BadValue") -> None:
        super().__init__(message)
        self.reason = reason


# -- attributes ------------------------------------------------------------------------------------


def not_writable(info: dict[str, Any]) -> ApiError:
    """405 for a PUT on the value of an attribute that cannot be written.

    405 (Method Not Allowed), not 400: the request is well formed and the attribute exists, but
    its value resource only supports GET (``Allow: GET``, RFC 9110). It is the
    bridge's own refusal, made from the attribute's configuration before any device call, so its
    status is the same in the rc3 and rc4 modes; the reason is Tango's own (the one the device
    would give), so clients that look at reasons recognise it.
    """
    name, writable = info.get("name", "?"), info.get("writable", "?")
    description = f"Attribute {name} is not writable (writable: {writable})"
    partner = info.get("writable_attr_name") or ""
    if writable == "READ_WITH_WRITE" and partner.lower() not in ("", "none", name.lower()):
        description += f"; its set point is written through attribute {partner}"
    return ApiError(ErrorEntry("API_AttrNotWritable", description, "ERR", "writes.attribute_value"),
                    status=405, headers={"Allow": "GET"})


def attribute_value(info: dict[str, Any], raw: list[str] | Any, *, from_json: bool) -> Any:
    """The value to write to the attribute ``info`` describes (``TangoBackend.attribute_info``).

    ``raw``: the query's ``v`` values (a list of strings) when ``from_json`` is false, else the
    decoded JSON body. Scalars come back as Python values (enums as their index), spectra as
    numpy arrays of the attribute's type (lists of strings for strings), images as 2-D arrays,
    DevEncoded as ``(format, bytes)``.
    """
    name = str(info.get("name", "attribute"))
    if info.get("writable") not in _WRITABLE:
        raise not_writable(info)
    data_type, data_format = str(info.get("data_type")), str(info.get("data_format"))
    labels = list(info.get("enum_label") or []) if data_type == "DevEnum" else []
    try:
        if data_type == "DevEncoded":
            if data_format != "SCALAR":
                raise _Bad(f"writing {data_format} DevEncoded attributes is not supported")
            return _encoded(_single_json(raw, from_json, "a JSON object {format, data}"))
        if data_type not in _SCALARS:
            raise _Bad(f"writing {data_type} attributes is not supported", "UnsupportedType")
        if from_json:
            raw = _unwrap(raw)
        if data_format == "SCALAR":
            if from_json:
                return _element(data_type, raw, text=False, labels=labels)
            return _element(data_type, _one_text(raw), text=True, labels=labels)
        if data_format == "SPECTRUM":
            items, text = _spectrum_items(data_type, raw, from_json)
            limit = int(info.get("max_dim_x") or 0)
            if limit and len(items) > limit:
                raise _Bad(f"{len(items)} values given, at most {limit} allowed", "BadShape")
            return _array(data_type, items, text=text, labels=labels)
        if data_format == "IMAGE":
            value = _single_json(raw, from_json, "a JSON array of rows")
            return _image(data_type, value, labels, int(info.get("max_dim_x") or 0),
                          int(info.get("max_dim_y") or 0))
        raise _Bad(f"writing {data_format} attributes is not supported", "UnsupportedType")
    except _Bad as exc:
        raise bad_request(f"Cannot write attribute {name}: {exc}", exc.reason,
                          "writes.attribute_value") from None


def sent_value(info: dict[str, Any], value: Any) -> Any:
    """A converted attribute value as plain JSON, in the shape reads answer it (enum labels,
    state names, images as ``{"data", "width", "height"}``, DevEncoded as ``{format, data}``):
    the audit compares it with the values read before and after."""
    data_type = info.get("data_type")
    if data_type == "DevEncoded":
        return convert.encoded_value(value)
    if data_type == "DevEnum":
        labels = list(info.get("enum_label") or [])
        value = _label_of(value, labels)
    elif info.get("data_format") == "IMAGE" and isinstance(value, np.ndarray) and value.ndim == 2:
        value = convert.image_value(value, value.shape[1], value.shape[0])
    return to_jsonable(value)


def _label_of(value: Any, labels: Sequence[str]) -> Any:
    if isinstance(value, np.ndarray):
        return [_label_of(v, labels) for v in value.tolist()]
    return labels[int(value)] if 0 <= int(value) < len(labels) else int(value)


def _unwrap(value: Any) -> Any:
    """``{"value": X}`` is ``X`` (clients that send a value object back)."""
    if isinstance(value, dict) and "value" in value:
        return value["value"]
    return value


def _one_text(raw: Any) -> str:
    values = _texts(raw)
    if not values:
        raise _Bad("no value given (?v=...)", "MissingValue")
    if len(values) > 1:
        raise _Bad(f"{len(values)} values given where one is expected", "BadShape")
    return values[0]


def _texts(raw: Any) -> list[str]:
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, (list, tuple)) and all(isinstance(v, str) for v in raw):
        return list(raw)
    raise _Bad("query values must be strings")


def _single_json(raw: Any, from_json: bool, what: str) -> Any:
    """One JSON value: the body, or the one query value parsed as JSON."""
    if from_json:
        return raw
    text = _one_text(raw)
    try:
        return json.loads(text)
    except ValueError:
        raise _Bad(f"expected {what} in JSON, got {_show(text)}") from None


def _spectrum_items(data_type: str, raw: Any, from_json: bool) -> tuple[list[Any], bool]:
    """The elements of a spectrum, and whether they are text (query) or JSON values."""
    if from_json:
        if isinstance(raw, list):
            return raw, False
        if isinstance(raw, dict) or raw is None:
            raise _Bad("expected a JSON array")
        if isinstance(raw, str) and data_type not in _STRINGS:
            return _split(raw), True
        return [raw], False
    values = _texts(raw)
    if not values:
        raise _Bad("no value given (?v=...)", "MissingValue")
    if len(values) > 1:
        return values, True
    text = values[0]
    if text.strip().startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            return parsed, False
        if data_type not in _STRINGS:
            raise _Bad(f"{_show(text)} is not a JSON array")
    return _split(text), True


def _split(text: str) -> list[str]:
    """``String(array)`` of JavaScript: comma-separated; the empty string is the empty array."""
    return [] if text == "" else text.split(",")


def _array(data_type: str, items: Sequence[Any], *, text: bool,
           labels: Sequence[str] = ()) -> Any:
    if not text:
        fast = _numbers_at_once(data_type, items)
        if fast is not None:
            return fast
    values = []
    for i, item in enumerate(items):
        try:
            values.append(_element(data_type, item, text=text, labels=labels))
        except _Bad as exc:
            raise _Bad(f"element {i}: {exc}", exc.reason) from None
    return _as_array(data_type, values)


def _numbers_at_once(data_type: str, items: Sequence[Any]) -> Any:
    """JSON numbers of a numeric type converted in C, not one by one (a 5 MB image would hold the
    event loop for a second): ``None`` when any item needs the careful path (which then also
    finds the element to name in the error)."""
    if data_type in _FLOATS:
        if not all(type(v) is float or type(v) is int for v in items):
            return None
        array = np.array(items, dtype=np.float64)
        if data_type == "DevFloat":
            finite = array[np.isfinite(array)]
            if finite.size and np.abs(finite).max() > np.finfo(np.float32).max:
                return None
        return array.astype(_FLOATS[data_type])
    if data_type in _INTEGERS:
        if not all(type(v) is int for v in items):
            return None
        info = np.iinfo(_INTEGERS[data_type])
        if items and not (int(info.min) <= min(items) and max(items) <= int(info.max)):
            return None
        return np.array(items, dtype=_INTEGERS[data_type])
    return None


def _as_array(data_type: str, values: list[Any]) -> Any:
    if data_type in _STRINGS or data_type == "DevState":
        return values
    return np.array(values, dtype=_dtype(data_type))


def _dtype(data_type: str) -> Any:
    if data_type == "DevBoolean":
        return np.bool_
    if data_type == "DevEnum":
        return np.int16
    return _INTEGERS.get(data_type) or _FLOATS[data_type]


def _image(data_type: str, value: Any, labels: Sequence[str], max_x: int, max_y: int) -> Any:
    value = _unwrap(value)
    if isinstance(value, dict):
        rows = _image_rows(value)
    elif isinstance(value, list) and value and all(isinstance(r, list) for r in value):
        rows = value
    else:
        raise _Bad("an image is a JSON array of rows (arrays of equal length), or "
                    '{"data": [...], "width": w, "height": h}', "BadShape")
    width = len(rows[0])
    for i, row in enumerate(rows):
        if len(row) != width:
            raise _Bad(f"row {i} has {len(row)} values, row 0 has {width}: an image is "
                       "rectangular", "BadShape")
    if width == 0:
        raise _Bad("an image needs at least one column", "BadShape")
    if max_x and width > max_x or max_y and len(rows) > max_y:
        raise _Bad(f"a {width} x {len(rows)} image (width x height) is larger than the "
                   f"attribute's {max_x} x {max_y}", "BadShape")
    fast = _numbers_at_once(data_type, [v for row in rows for v in row])
    if fast is not None:
        return fast.reshape(len(rows), width)
    converted = []
    for y, row in enumerate(rows):
        for x, item in enumerate(row):
            try:
                converted.append(_element(data_type, item, text=False, labels=labels))
            except _Bad as exc:
                raise _Bad(f"row {y}, column {x}: {exc}", exc.reason) from None
    if data_type in _STRINGS or data_type == "DevState":
        return [converted[y * width:(y + 1) * width] for y in range(len(rows))]
    return np.array(converted, dtype=_dtype(data_type)).reshape(len(rows), width)


def _image_rows(value: dict[str, Any]) -> list[list[Any]]:
    data, width, height = value.get("data"), value.get("width"), value.get("height")
    if not isinstance(data, list) or not _count(width) or not _count(height):
        raise _Bad('an image object is {"data": [...], "width": w, "height": h} with w, h > 0',
                   "BadShape")
    assert isinstance(width, int) and isinstance(height, int)
    if len(data) != width * height:
        raise _Bad(f"{len(data)} values given for a {width} x {height} image", "BadShape")
    return [data[y * width:(y + 1) * width] for y in range(height)]


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _encoded(value: Any) -> tuple[str, bytes]:
    """DevEncoded: ``{"format": "...", "data": "<base64>"}``, the shape reads answer."""
    if not isinstance(value, dict) or not isinstance(value.get("format"), str) \
            or not isinstance(value.get("data"), str):
        raise _Bad('DevEncoded is written as {"format": "<text>", "data": "<base64>"}')
    try:
        data = base64.b64decode(value["data"], validate=True)
    except (binascii.Error, ValueError):
        raise _Bad("the data of a DevEncoded value is not base64") from None
    return _tango_string(value["format"]), data


# -- scalars -----------------------------------------------------------------------------------


def _element(data_type: str, value: Any, *, text: bool, labels: Sequence[str] = ()) -> Any:
    """One value of ``data_type``: from text (``text``) or from a JSON value."""
    if data_type in _STRINGS:
        return _string(value, text)
    if data_type == "DevBoolean":
        return _boolean(value, text)
    if data_type == "DevEnum":
        return _enum(value, text, labels)
    if data_type == "DevState":
        return _state(value, text)
    if data_type in _INTEGERS:
        return _integer(data_type, value, text)
    if data_type in _FLOATS:
        return _float(data_type, value, text)
    raise _Bad(f"{data_type} values are not supported", "UnsupportedType")


def _string(value: Any, text: bool) -> str:
    if text or isinstance(value, str):
        return _tango_string(str(value))
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)
    raise _Bad(f"expected a string, got {_show(value)}")


def _tango_string(value: str) -> str:
    if "\x00" in value:
        raise _Bad("a Tango string cannot hold a NUL character")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise _Bad(f"{value[exc.start:exc.end]!r} is not a Latin-1 character: Tango strings "
                   "are Latin-1") from None
    return value


def _boolean(value: Any, text: bool) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not text and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise _Bad(f"expected true, false, 1 or 0, got {_show(value)}")


def _number(value: Any, text: bool) -> int | float:
    """A number from text or JSON; booleans are not numbers here."""
    if isinstance(value, str):
        word = _UNENCODED_PLUS.sub("+", value.strip())
        if _INT_TEXT.fullmatch(word):
            return int(word)
        if _FLOAT_TEXT.fullmatch(word):
            return float(word)
        if word.lower() in _NON_FINITE:
            return _NON_FINITE[word.lower()]
        raise _Bad(f"{_show(value)} is not a number")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not text:
        return value
    raise _Bad(f"expected a number, got {_show(value)}")


def _integer(data_type: str, value: Any, text: bool) -> int:
    number = _number(value, text)
    if isinstance(number, float):
        if not math.isfinite(number) or not number.is_integer():
            raise _Bad(f"{_show(value)} is not an integer")
        number = int(number)
    info = np.iinfo(_INTEGERS[data_type])
    if not int(info.min) <= number <= int(info.max):
        raise _Bad(f"{number} is out of the range of {data_type} ({info.min} to {info.max})",
                   "ValueOutOfRange")
    return number


def _float(data_type: str, value: Any, text: bool) -> float:
    number = float(_number(value, text))
    if data_type == "DevFloat" and math.isfinite(number):
        limit = float(np.finfo(np.float32).max)
        if abs(number) > limit:
            raise _Bad(f"{number} is out of the range of DevFloat (+-{limit:.7g})",
                       "ValueOutOfRange")
    return number


def _enum(value: Any, text: bool, labels: Sequence[str]) -> int:
    """A label (exact, else the one label equal ignoring case) or an index into the labels."""
    if isinstance(value, str):
        if value in labels:
            return list(labels).index(value)
        folded = [i for i, label in enumerate(labels) if label.lower() == value.strip().lower()]
        if len(folded) == 1:
            return folded[0]
    try:
        index = _integer("DevShort", value, text)
    except _Bad:
        raise _Bad(f"{_show(value)} is none of the labels {list(labels)} nor an index") from None
    if not 0 <= index < len(labels):
        raise _Bad(f"index {index} is out of the labels {list(labels)}", "ValueOutOfRange")
    return index


def _state(value: Any, text: bool) -> tango.DevState:
    members = tango.DevState.__members__
    if isinstance(value, str) and value.strip().upper() in members:
        return members[value.strip().upper()]
    try:
        index = _integer("DevShort", value, text)
        return tango.DevState(index)
    except (_Bad, ValueError):
        raise _Bad(f"{_show(value)} is not a DevState ({', '.join(members)})") from None


def _show(value: Any, limit: int = 60) -> str:
    shown = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return shown if len(shown) <= limit else shown[:limit] + "..."


# -- commands --------------------------------------------------------------------------------------


def command_argin(info: dict[str, Any], body: bytes, content_type: str | None) -> Any:
    """The argin for the command ``info`` describes (``TangoBackend.command_info``), from the
    request body: JSON, the tangojs connector's un-quoted ``String(value)``, or the v1 body
    ``{"host", "device", "name", "input"}``. ``None`` for DevVoid."""
    name, in_type = str(info.get("cmd_name", "command")), str(info.get("in_type"))
    try:
        return _argin(in_type, body, content_type)
    except _Bad as exc:
        raise bad_request(f"Cannot run command {name} ({in_type} argument): {exc}", exc.reason,
                          "writes.command_argin") from None


def _argin(in_type: str, body: bytes, content_type: str | None) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _Bad("the body is not UTF-8 text", "BadBody") from None
    declared_json = _is_json_type(content_type)
    parsed: Any = None
    is_json = False
    if text.strip():
        try:
            parsed, is_json = json.loads(text), True
        except ValueError:
            if declared_json:
                raise _Bad("the body is not JSON, as its Content-Type says", "BadBody") from None
    if is_json and _is_v1(parsed):
        return _json_argin(in_type, parsed.get("input"), None)
    if in_type == "DevVoid":
        if text.strip() and not (is_json and parsed in (None, "")):
            raise _Bad("the command takes no argument: send an empty body")
        return None
    if is_json:
        return _json_argin(in_type, parsed, text)
    return _text_argin(in_type, text)


def _is_json_type(content_type: str | None) -> bool:
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    return mime == "application/json" or mime.endswith("+json")


def _is_v1(value: Any) -> bool:
    """The body of the v1 API's clients: ``{"host", "device", "name", "input"}``."""
    return isinstance(value, dict) and "input" in value \
        and set(value) <= {"host", "device", "name", "input"}


def _json_argin(in_type: str, value: Any, text: str | None) -> Any:
    """From a JSON value; ``text`` is the body it came from (``None`` for v1's ``input``)."""
    if in_type == "DevVoid":
        if value not in (None, ""):
            raise _Bad("the command takes no argument")
        return None
    if value is None:
        raise _Bad("no argument given", "MissingValue")
    if in_type in _STRINGS:
        if isinstance(value, str) or text is None:
            return _string(value, text=False)
        return _tango_string(text)  # 42, true, [1]: the un-quoted text as it came
    if in_type in _SCALARS:
        return _element(in_type, value, text=False)
    if in_type in _ARRAYS:
        element = _ARRAYS[in_type]
        if isinstance(value, list):
            return _array(element, value, text=False)
        if isinstance(value, dict):
            raise _Bad("expected a JSON array")
        if isinstance(value, str) and element not in _STRINGS:
            return _array(element, _split(value), text=True)
        return _array(element, [value], text=False)
    if in_type in _STRUCTS:
        return _struct(in_type, value)
    if in_type == "DevEncoded":
        return _encoded(value)
    raise _Bad(f"{in_type} arguments are not supported", "UnsupportedType")


def _text_argin(in_type: str, text: str) -> Any:
    """From the tangojs connector's ``String(value)``: text that is not JSON."""
    if in_type in _STRINGS:
        return _tango_string(text)
    if not text.strip():
        if in_type in _ARRAYS:
            return _as_array(_ARRAYS[in_type], [])
        raise _Bad("no argument given (the body is empty)", "MissingValue")
    if in_type in _SCALARS:
        return _element(in_type, text, text=True)
    if in_type in _ARRAYS:
        return _array(_ARRAYS[in_type], _split(text), text=True)
    if in_type in _STRUCTS:
        numbers, _ = _STRUCTS[in_type]
        raise _Bad(f'{in_type} is sent as JSON: {{"{numbers}": [...], "svalue": [...]}}')
    raise _Bad(f"{in_type} arguments are sent as JSON")


def _struct(in_type: str, value: Any) -> list[Any]:
    """``{"lvalue": [...], "svalue": [...]}`` (or ``dvalue``), or ``[[numbers], [strings]]``."""
    numbers_key, element = _STRUCTS[in_type]
    if isinstance(value, dict) and set(value) <= {numbers_key, "svalue"} and value:
        numbers, strings = value.get(numbers_key, []), value.get("svalue", [])
    elif isinstance(value, list) and len(value) == 2:
        numbers, strings = value
    else:
        raise _Bad(f'expected {{"{numbers_key}": [...], "svalue": [...]}}')
    if not isinstance(numbers, list) or not isinstance(strings, list):
        raise _Bad(f'"{numbers_key}" and "svalue" are JSON arrays')
    try:
        converted_numbers = _array(element, numbers, text=False)
    except _Bad as exc:
        raise _Bad(f"{numbers_key}: {exc}", exc.reason) from None
    try:
        converted_strings = _array("DevString", strings, text=False)
    except _Bad as exc:
        raise _Bad(f"svalue: {exc}", exc.reason) from None
    return [converted_numbers, converted_strings]


def sent_argin(info: dict[str, Any], argin: Any) -> Any:
    """A converted argin as plain JSON, in the shape command outputs are answered."""
    return to_jsonable(convert.command_output(argin, str(info.get("in_type"))))


# -- properties --------------------------------------------------------------------------------


def property_values(raw: list[str] | Any) -> list[str]:
    """Values of a database property: the repeated ``value`` parameter (``?value=a&value=b``), or
    a JSON array of strings (a body, or one query value holding one). Empty lists are refused
    (deleting is a DELETE); values are Latin-1 text without NUL, as Tango stores them."""
    try:
        if isinstance(raw, str):
            raw = [raw]
        if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], str) \
                and raw[0].strip().startswith("["):
            try:
                parsed = json.loads(raw[0])
            except ValueError:
                parsed = None
            if isinstance(parsed, list):
                raw = parsed
        if not isinstance(raw, list):
            raise _Bad("property values are a list of strings")
        if not raw:
            raise _Bad("no value given (?value=...); to remove a property, DELETE it",
                       "MissingValue")
        return [_string(v, text=False) for v in raw]
    except _Bad as exc:
        raise bad_request(f"Cannot set property: {exc}", exc.reason,
                          "writes.property_values") from None


def check_property(name: str, values: Sequence[str]) -> list[str]:
    """A property about to be stored: a name, at least one value, Tango strings only (values are
    taken as they are: ``property_values`` is where query values are read)."""
    try:
        if not isinstance(name, str) or not name.strip():
            raise _Bad("a property needs a name", "MissingValue")
        _tango_string(name)
        if isinstance(values, str) or not isinstance(values, Sequence):
            raise _Bad("property values are a list of strings")
        if not values:
            raise _Bad("no value given; to remove a property, DELETE it", "MissingValue")
        return [_string(v, text=False) for v in values]
    except _Bad as exc:
        raise bad_request(f"Cannot set property {name!r}: {exc}", exc.reason,
                          "writes.check_property") from None


# -- attribute configuration -----------------------------------------------------------------------

# Settable fields of ``attribute_info``'s dict: dotted path in the dict -> attribute path in
# PyTango's AttributeInfoEx. Top-level ``min_alarm``/``max_alarm`` are the same settings as
# ``alarms.min_alarm``/``alarms.max_alarm`` (Tango keeps both).
_CONFIG_FIELDS: dict[str, tuple[str, ...]] = {
    "description": ("description",),
    "label": ("label",),
    "unit": ("unit",),
    "standard_unit": ("standard_unit",),
    "display_unit": ("display_unit",),
    "format": ("format",),
    "min_value": ("min_value",),
    "max_value": ("max_value",),
    "extensions": ("extensions",),
    "alarms.min_alarm": ("alarms", "min_alarm"),
    "alarms.max_alarm": ("alarms", "max_alarm"),
    "alarms.min_warning": ("alarms", "min_warning"),
    "alarms.max_warning": ("alarms", "max_warning"),
    "alarms.delta_t": ("alarms", "delta_t"),
    "alarms.delta_val": ("alarms", "delta_val"),
    "alarms.extensions": ("alarms", "extensions"),
    "events.ch_event.rel_change": ("events", "ch_event", "rel_change"),
    "events.ch_event.abs_change": ("events", "ch_event", "abs_change"),
    "events.ch_event.extensions": ("events", "ch_event", "extensions"),
    "events.per_event.period": ("events", "per_event", "period"),
    "events.per_event.extensions": ("events", "per_event", "extensions"),
    "events.arch_event.rel_change": ("events", "arch_event", "archive_rel_change"),
    "events.arch_event.abs_change": ("events", "arch_event", "archive_abs_change"),
    "events.arch_event.period": ("events", "arch_event", "archive_period"),
    "events.arch_event.extensions": ("events", "arch_event", "extensions"),
    "enum_label": ("enum_labels",),
}
_ALIASES = {"min_alarm": "alarms.min_alarm", "max_alarm": "alarms.max_alarm"}
_LISTS = frozenset({"extensions", "alarms.extensions", "events.ch_event.extensions",
                    "events.per_event.extensions", "events.arch_event.extensions", "enum_label"})
# Fields Tango fixes in the device server's code: accepted only unchanged (a client may PUT back
# the whole object it read, with one field changed).
_FIXED = frozenset({"name", "writable", "data_format", "data_type", "max_dim_x", "max_dim_y",
                    "writable_attr_name", "level", "sys_extensions", "isMemorized",
                    "isSetAtInit", "memorized", "root_attr_name"})


def attribute_config_changes(current: dict[str, Any], body: Any) -> dict[str, Any]:
    """The settings of ``body`` (``PUT .../attributes/{attr}/info``) that differ from
    ``current`` (``attribute_info``'s dict), as ``{dotted path: new value}``.

    ``body`` has the shape of the info object, any subset of it: ``{"label": "Speed",
    "alarms": {"max_alarm": "100"}}``. Values are strings (numbers are taken as their JSON text,
    ``null`` and ``""`` give Tango's default back); ``extensions``, ``enum_label`` are lists of
    strings. Fields Tango does not let clients change are accepted only with their current value;
    unknown fields are refused.
    """
    try:
        if not isinstance(body, dict):
            raise _Bad("the body is a JSON object with the fields of the attribute's info")
        given = _flatten(body, "")
        changes: dict[str, Any] = {}
        for path, value in given.items():
            target = _ALIASES.get(path, path)
            if path in _FIXED:
                if value != current.get(path) and not (
                        path == "name" and str(value).lower() == str(current["name"]).lower()):
                    raise _Bad(f"{path} cannot be changed (it is fixed by the device server)",
                               "NotChangeable")
                continue
            if target not in _CONFIG_FIELDS:
                raise _Bad(f"unknown field {path!r}", "UnknownField")
            new = _config_value(path, value, target in _LISTS)
            if new == config_field(current, target):
                continue
            if target in changes and changes[target] != new:
                raise _Bad(f"{path} and {target} are the same setting, given two values")
            changes[target] = new
        if "enum_label" in changes and current.get("data_type") != "DevEnum":
            raise _Bad("enum_label is set for DevEnum attributes only", "NotChangeable")
        return changes
    except _Bad as exc:
        raise bad_request(f"Cannot set the info of attribute {current.get('name')}: {exc}",
                          exc.reason, "writes.attribute_config_changes") from None


def _flatten(body: dict[str, Any], prefix: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in body.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            if not value:
                continue
            flat.update(_flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def config_field(info: dict[str, Any], path: str) -> Any:
    """The value at a dotted path of an info dict (``"alarms.max_alarm"``), ``None`` if absent."""
    value: Any = info
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _config_value(path: str, value: Any, is_list: bool) -> Any:
    if is_list:
        if not isinstance(value, list):
            raise _Bad(f"{path} is a list of strings")
        return [_config_text(f"{path}[{i}]", v) for i, v in enumerate(value)]
    return _config_text(path, value)


def _config_text(path: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return _tango_string(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return json.dumps(value)
    raise _Bad(f"{path} is a string, got {_show(value)}")


def apply_attribute_config(config: Any, changes: dict[str, Any]) -> Any:
    """Set ``changes`` (``attribute_config_changes``) on PyTango's ``AttributeInfoEx``; returns
    it. Top-level ``min_alarm``/``max_alarm`` follow ``alarms``, as Tango keeps both."""
    for path, value in changes.items():
        *parents, last = _CONFIG_FIELDS[path]
        holder = config
        for part in parents:
            holder = getattr(holder, part)
        setattr(holder, last, value)
        if path in ("alarms.min_alarm", "alarms.max_alarm"):
            setattr(config, last, value)
    return config
