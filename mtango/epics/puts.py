"""Values to write: a JSON value (or a query string's text) -> what caproto puts (pure functions).

``put_value`` converts for the PV's *native* type, so the IOC never has to convert (and never
converts in ways a client did not mean: a value that does not fit is refused here, with a
``BadValue`` naming the PV and the reason, before anything is sent):

- DOUBLE, FLOAT: numbers, numeric text (``"NaN"`` and ``"Infinity"`` as reads write them),
  booleans; sent as float64 / float32 (a finite value beyond float32's range is refused);
- LONG, SHORT, CHAR: integers, integral floats (``3.0``), numeric text, booleans; int32 / int16
  / uint8, range-checked;
- ENUM: a label (exact match) or an index (number or text); sent as the index, which must be
  below the number of labels (16 states when the IOC gives none);
- STRING: text (a number as its text); UTF-8 of at most 39 bytes: a DBR_STRING is 40 bytes with
  its NUL, libca refuses 40 ("Invalid string") and EPICS base records keep 39 (measured);
- a long string (``NAME.FIELD$``, a CHAR array): text, sent as UTF-8 and its NUL, within the
  native count; a CHAR array (no ``$``) takes a list of numbers, or text as a long string.

Arrays: a JSON list, or text of comma-separated numbers (``1.5,2.5,4``, as the tangojs connector
sends), with at most the PV's native count of elements; a shorter list writes that many elements
(a waveform's NORD). A single value to an array writes one element; a one-element list to a
scalar writes its element. No NUL inside text (it would end the string on the IOC).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from caproto import ChannelType

from mtango.epics.convert import TYPE_NAMES, ChannelMeta, decode_text, enum_labels
from mtango.epics.errors import BadValue
from mtango.jsonenc import to_jsonable

MAX_STRING_BYTES = 39  # DBR_STRING: 40 bytes including the terminating NUL
MAX_ENUM_STATES = 16  # an mbbi/mbbo's states, when the IOC gives no labels
INTEGER_RANGES = {
    ChannelType.LONG: (-(2**31), 2**31 - 1),
    ChannelType.INT: (-(2**15), 2**15 - 1),
    ChannelType.CHAR: (0, 255),  # dbr_char_t is unsigned
}
DTYPES = {
    ChannelType.DOUBLE: np.float64,
    ChannelType.FLOAT: np.float32,
    ChannelType.LONG: np.int32,
    ChannelType.INT: np.int16,
    ChannelType.CHAR: np.uint8,
    ChannelType.ENUM: np.uint16,
}
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def put_value(meta: ChannelMeta, control_metadata: Any, raw: Any) -> tuple[Any, int]:
    """``(data, count)`` to put to the PV ``meta`` describes, from a JSON value or text.

    ``control_metadata`` is the PV's DBR_CTRL answer (enum labels when ``meta`` has none yet);
    ``None`` is fine for other types. Raises ``BadValue``.
    """
    kind = meta.native_type
    if meta.long_string and kind == ChannelType.CHAR:
        return _text_bytes(meta, raw, "long string")
    if kind == ChannelType.CHAR and meta.native_count > 1 and isinstance(raw, str):
        return _text_bytes(meta, raw, "char array")
    items = _items(meta, raw)
    if kind == ChannelType.STRING:
        return [_string(meta, item) for item in items], len(items)
    if kind == ChannelType.ENUM:
        labels = meta.labels or enum_labels(control_metadata)
        indexes = [_enum_index(meta, labels, item) for item in items]
        return np.asarray(indexes, dtype=np.uint16), len(indexes)
    if kind in (ChannelType.DOUBLE, ChannelType.FLOAT):
        floats = [_float(meta, item) for item in items]
        return np.asarray(floats, dtype=DTYPES[kind]), len(floats)
    if kind in INTEGER_RANGES:
        ints = [_integer(meta, item) for item in items]
        return np.asarray(ints, dtype=DTYPES[kind]), len(ints)
    raise BadValue(f"{meta.name}: the bridge cannot write PVs of type {kind.name}")


def sent_value(meta: ChannelMeta, data: Any) -> Any:
    """What ``put_value`` made of the value, as plain JSON (for the audit): a scalar for a
    scalar PV, a list for an array, text for strings; enums as their index."""
    if isinstance(data, bytes):
        return decode_text(data)
    if isinstance(data, list):  # DBR_STRING elements
        texts = [decode_text(item) for item in data]
        return texts[0] if meta.native_count == 1 and len(texts) == 1 else texts
    values = to_jsonable(np.asarray(data))
    return values[0] if meta.native_count == 1 and len(values) == 1 else values


# -- pieces --------------------------------------------------------------------------------------


def _type_name(meta: ChannelMeta) -> str:
    return TYPE_NAMES.get(meta.native_type, meta.native_type.name)


def _shown(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."


def _items(meta: ChannelMeta, raw: Any) -> list[Any]:
    """The elements of ``raw``, at most the PV's native count of them."""
    if isinstance(raw, (list, tuple)):
        items = list(raw)
    elif (isinstance(raw, str) and meta.native_count > 1
          and meta.native_type not in (ChannelType.STRING, ChannelType.ENUM)):
        text = raw.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        items = [part.strip() for part in text.split(",")] if text.strip() else []
    else:
        items = [raw]
    if not items:
        raise BadValue(f"{meta.name}: no value to write (an empty list)")
    if len(items) > meta.native_count:
        raise BadValue(
            f"{meta.name}: {len(items)} elements to write, but the PV holds at most "
            f"{meta.native_count}")
    return items


def _number(meta: ChannelMeta, item: Any) -> int | float:
    if isinstance(item, bool):
        return int(item)
    if isinstance(item, (int, float)):
        return item
    if isinstance(item, str):
        text = item.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            pass
    raise BadValue(f"{meta.name}: {_shown(item)} is not a number (the PV is a "
                   f"{_type_name(meta)})")


def _float(meta: ChannelMeta, item: Any) -> float:
    number = _number(meta, item)
    try:
        value = float(number)
    except OverflowError:
        raise BadValue(f"{meta.name}: {_shown(item)} is too large for a "
                       f"{_type_name(meta)}") from None
    if (meta.native_type == ChannelType.FLOAT and math.isfinite(value)
            and abs(value) > _FLOAT32_MAX):
        raise BadValue(f"{meta.name}: {_shown(item)} is too large for a FLOAT (at most "
                       f"{_FLOAT32_MAX:.6g})")
    return value


def _integer(meta: ChannelMeta, item: Any) -> int:
    number = _number(meta, item)
    if isinstance(number, float):
        if not (math.isfinite(number) and number.is_integer()):
            raise BadValue(f"{meta.name}: {_shown(item)} is not an integer (the PV is a "
                           f"{_type_name(meta)})")
        number = int(number)
    low, high = INTEGER_RANGES[meta.native_type]
    if not low <= number <= high:
        raise BadValue(f"{meta.name}: {_shown(item)} is out of range for a "
                       f"{_type_name(meta)} ({low} to {high})")
    return number


def _enum_index(meta: ChannelMeta, labels: tuple[str, ...], item: Any) -> int:
    if isinstance(item, str) and item in labels:
        return labels.index(item)
    try:
        number = _number(meta, item)
    except BadValue:
        raise BadValue(
            f"{meta.name}: {_shown(item)} is not one of its labels {list(labels)} nor an "
            "index") from None
    states = len(labels) or MAX_ENUM_STATES
    if isinstance(number, float):
        if not (math.isfinite(number) and number.is_integer()):
            raise BadValue(f"{meta.name}: {_shown(item)} is not an index (an integer)")
        number = int(number)
    if not 0 <= number < states:
        shown = f" {list(labels)}" if labels else ""
        raise BadValue(f"{meta.name}: index {number} is out of range: the PV has {states} "
                       f"states{shown} (0 to {states - 1})")
    return number


def _text(meta: ChannelMeta, item: Any) -> bytes:
    if isinstance(item, bool) or not isinstance(item, (str, int, float)):
        raise BadValue(f"{meta.name}: {_shown(item)} is not text (the PV holds strings)")
    text = item if isinstance(item, str) else str(item)
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadValue(f"{meta.name}: {_shown(item)} is not valid Unicode text") from None
    if b"\0" in encoded:
        raise BadValue(f"{meta.name}: text holding a NUL character cannot be written")
    return encoded


def _string(meta: ChannelMeta, item: Any) -> bytes:
    encoded = _text(meta, item)
    if len(encoded) > MAX_STRING_BYTES:
        raise BadValue(
            f"{meta.name}: {len(encoded)} bytes of UTF-8 text, but a DBR_STRING holds at most "
            f"{MAX_STRING_BYTES} (40 with the terminating NUL); write NAME.VAL$ for longer text"
            " where the record supports it")
    return encoded


def _text_bytes(meta: ChannelMeta, raw: Any, what: str) -> tuple[bytes, int]:
    if isinstance(raw, (list, tuple)) and len(raw) == 1:
        raw = raw[0]
    data = _text(meta, raw) + b"\0"
    if len(data) > meta.native_count:
        raise BadValue(
            f"{meta.name}: {len(data) - 1} bytes of UTF-8 text, but the {what} holds at most "
            f"{max(meta.native_count - 1, 0)} (and the terminating NUL)")
    return data, len(data)
