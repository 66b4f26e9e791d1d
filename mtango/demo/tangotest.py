"""A pure-Python stand-in for the TangoTest device server.

The bridge's embedded demo and its integration tests need a device that
looks like the well-known ``sys/tg_test/1`` (same attribute and command
names, echo commands, scalars/spectra/images of every common type) but the
C++ TangoTest binary is not available everywhere.  This module provides that
device as a PyTango high-level server so the demo and tests only need
``pytango``.  It also exposes a few deliberately awkward attributes (NaN,
infinities, a read that always fails, DevEncoded, unsigned 64-bit values)
so the bridge's JSON encoding and error paths get exercised.

Some values change by themselves, for clients of Tango events: ``polled_counter``
(Tango polls it and sends change events) and ``pushed_counter`` (the device pushes change and
archive events from its own thread).

``SlowDevice`` lives in the same server so tests can prove that one slow
device does not hold up requests to other devices. ``AlarmDevice`` (also in it)
has an attribute whose quality is always ATTR_ALARM, on a device of its own so
that no other device's state is affected.

Run it as::

    python -m mtango.demo.tangotest <instance> -ORBendPoint giop:tcp:127.0.0.1:0

which serves the devices registered in the database under the server
``DemoTangoTest/<instance>`` (class ``DemoTangoTest``, e.g. sys/tg_test/1,
class ``SlowDevice`` and class ``AlarmDevice``, e.g. sys/alarm/1).
"""

from __future__ import annotations

import enum
import math
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import tango
from tango import AttrQuality, AttrWriteType, DevState
from tango.server import Device, attribute, command, device_property, run

#: Executable part of the Tango server name ("DemoTangoTest/<instance>").
SERVER_NAME = "DemoTangoTest"

READ = AttrWriteType.READ
READ_WRITE = AttrWriteType.READ_WRITE

SPECTRUM_MAX = 256
IMAGE_MAX = 64

#: ``polled_counter`` grows by one every tenth of a second; Tango polls it that often.
POLLED_COUNTER_RATE = 10
POLLED_COUNTER_POLLING_MS = 100
#: ``pushed_counter`` is pushed every PUSH_PERIOD seconds by the device's own thread (unless the
#: device property ``pushed_counter_period_ms`` says otherwise).
PUSH_PERIOD = 0.1
PUSHED_SPECTRUM_SIZE = 1000
# Large values (bench/large_values_bench.py): a 1,000,000-element spectrum and a 1000x1000 image.
BIG_SPECTRUM_SIZE = 1_000_000
BIG_IMAGE_SIDE = 1000
#: ``alarm_scalar`` is polled every second.
ALARM_POLLING_MS = 1000


class DemoEnum(enum.IntEnum):
    """Labels of ``enum_scalar``; an IntEnum makes PyTango register DevEnum."""

    Zero = 0
    One = 1
    Two = 2
    Three = 3


# Writable scalars that simply remember the last written value: name -> default.
_RW_SCALARS: dict[str, Any] = {
    "double_scalar_w": 1.5,
    "float_scalar": 2.5,
    "long_scalar": 42,
    "long_scalar_w": 43,
    "long_scalar_rww": 44,
    "long64_scalar": 2**40 + 1,
    "ulong_scalar": 2**32 - 2,
    "ulong64_scalar": 2**64 - 2,
    "short_scalar": 7,
    "ushort_scalar": 65000,
    "uchar_scalar": 200,
    "boolean_scalar": True,
    "string_scalar": "Hello Tango!",
    "enum_scalar": DemoEnum.One,
    "ampli": 1.0,
}

# Spectrum defaults (read-only unless listed in _RW_SPECTRA): name -> values.
_SPECTRA: dict[str, list[Any]] = {
    "double_spectrum": [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5],
    "double_spectrum_ro": [1.25, 2.25, 3.25, 4.25],
    "float_spectrum": [1.5, 2.5, 3.5],
    "long_spectrum": [1, -2, 3, -4, 5],
    "long64_spectrum": [2**40, -(2**40), 3],
    "short_spectrum": [1, 2, -3],
    "ushort_spectrum": [1, 2, 65535],
    "ulong_spectrum": [1, 2, 2**32 - 1],
    "uchar_spectrum": [0, 1, 127, 255],
    "boolean_spectrum": [True, False, True],
    "string_spectrum": ["Hello", "Tango", "!"],
}
_RW_SPECTRA = frozenset({"double_spectrum", "string_spectrum"})

_IMAGE_W, _IMAGE_H = 5, 3


def _image(dtype: type) -> np.ndarray:
    """Return a 5 wide x 3 high image whose pixel (row, col) is row*10+col."""
    rows = np.arange(_IMAGE_H).reshape(-1, 1) * 10
    cols = np.arange(_IMAGE_W).reshape(1, -1)
    return (rows + cols).astype(dtype)


def _encoded_images() -> dict[str, tango.EncodedAttribute]:
    """The DevEncoded images, made by Tango's own encoders from the 5x3 picture: GRAY16 levels
    (row*10+col)*1000+300, RGB24 with red col*60, green row*100 and blue 200, and that RGB as
    JPEG_RGB."""
    grey = _image(np.uint16) * 1000 + 300
    rgb = np.empty((_IMAGE_H, _IMAGE_W, 3), dtype=np.uint8)
    rgb[..., 0] = np.arange(_IMAGE_W) * 60
    rgb[..., 1] = (np.arange(_IMAGE_H) * 100).reshape(-1, 1)
    rgb[..., 2] = 200
    encoded = {name: tango.EncodedAttribute() for name in ("gray16", "rgb24", "jpeg")}
    encoded["gray16"].encode_gray16(grey)
    encoded["rgb24"].encode_rgb24(rgb)
    encoded["jpeg"].encode_jpeg_rgb24(rgb, 100.0)
    return encoded


def _big_values() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The large attributes' values: full-precision doubles, the same on every Init."""
    spectrum = np.random.default_rng(0).normal(size=BIG_SPECTRUM_SIZE)
    with_nan = spectrum.copy()
    with_nan[::1000] = np.nan
    with_nan[1] = np.inf
    with_nan[2] = -np.inf
    image = np.random.default_rng(1).normal(size=(BIG_IMAGE_SIDE, BIG_IMAGE_SIDE))
    return spectrum, with_nan, image


def _memory_attr(name: str, dtype: Any, writable: bool, **kwargs: Any) -> attribute:
    """Build an attribute whose read returns the value stored in ``self._values``.

    Generating these keeps the ~30 plain "remember what was written"
    attributes declarative instead of 60 near-identical methods.
    """

    def fget(self: DemoTangoTest) -> Any:
        return self._values[name]

    fget.__name__ = f"read_{name}"
    extra: dict[str, Any] = {}
    if writable:

        def fset(self: DemoTangoTest, value: Any) -> None:
            self._values[name] = value

        fset.__name__ = f"write_{name}"
        extra["fset"] = fset
    return attribute(
        fget=fget,
        dtype=dtype,
        access=READ_WRITE if writable else READ,
        **extra,
        **kwargs,
    )


class DemoTangoTest(Device):
    """TangoTest look-alike: typed attributes that remember writes, echo commands."""

    mythical_property = device_property(dtype=str, default_value="not set")
    pushed_counter_period_ms = device_property(
        dtype=float,
        default_value=PUSH_PERIOD * 1000,
        doc="How often pushed_counter is pushed (the tests push faster).",
    )

    # --- scalars -----------------------------------------------------------
    double_scalar = attribute(
        dtype="DevDouble",
        access=READ_WRITE,
        polling_period=1000,
        doc="Set point plus ampli*sin(t): moves slowly so polling/history show changes.",
    )
    double_scalar_w = _memory_attr("double_scalar_w", "DevDouble", True)
    float_scalar = _memory_attr("float_scalar", "DevFloat", True)
    long_scalar = _memory_attr("long_scalar", "DevLong", True)
    long_scalar_w = _memory_attr("long_scalar_w", "DevLong", True)
    long_scalar_rww = _memory_attr("long_scalar_rww", "DevLong", True)
    long64_scalar = _memory_attr("long64_scalar", "DevLong64", True)
    ulong_scalar = _memory_attr("ulong_scalar", "DevULong", True)
    ulong64_scalar = _memory_attr("ulong64_scalar", "DevULong64", True)
    short_scalar = _memory_attr("short_scalar", "DevShort", True)
    short_scalar_ro = _memory_attr("short_scalar_ro", "DevShort", False)
    ushort_scalar = _memory_attr("ushort_scalar", "DevUShort", True)
    uchar_scalar = _memory_attr("uchar_scalar", "DevUChar", True)
    boolean_scalar = _memory_attr("boolean_scalar", "DevBoolean", True)
    string_scalar = _memory_attr("string_scalar", "DevString", True)
    enum_scalar = _memory_attr("enum_scalar", DemoEnum, True)
    enum_scalar_ro = _memory_attr("enum_scalar_ro", DemoEnum, False)
    ampli = _memory_attr("ampli", "DevDouble", True)

    # --- deliberately awkward values ---------------------------------------
    no_value = attribute(
        dtype="DevDouble", access=READ, doc="Always fails, to exercise error reporting."
    )
    nan_scalar = attribute(
        dtype="DevDouble", access=READ, doc="Always NaN, to exercise JSON encoding."
    )
    inf_spectrum = attribute(
        dtype=("DevDouble",),
        max_dim_x=4,
        access=READ,
        doc="[1, inf, -inf, nan], to exercise JSON encoding.",
    )
    encoded_scalar = attribute(
        dtype="DevEncoded", access=READ, doc="A DevEncoded value ('utf8', bytes)."
    )
    encoded_gray16 = attribute(
        dtype="DevEncoded", access=READ, doc="A 5x3 GRAY16 image (Tango's raw encoding)."
    )
    encoded_rgb24 = attribute(
        dtype="DevEncoded", access=READ, doc="A 5x3 RGB24 image (Tango's raw encoding)."
    )
    encoded_jpeg = attribute(
        dtype="DevEncoded", access=READ, doc="The encoded_rgb24 image as JPEG_RGB."
    )

    # --- values that change by themselves (for event clients) ----------------
    polled_counter = attribute(
        dtype="DevLong",
        access=READ,
        polling_period=POLLED_COUNTER_POLLING_MS,
        abs_change="1",
        doc="Tenths of a second since Init: Tango polls it every 100 ms and sends change events.",
    )
    pushed_counter = attribute(
        dtype="DevLong",
        access=READ,
        doc="Counts up every 100 ms; the device pushes change and archive events (not polled).",
    )
    pushed_spectrum = attribute(
        dtype=("DevDouble",),
        max_dim_x=PUSHED_SPECTRUM_SIZE,
        access=READ,
        doc="1000 doubles, the first one pushed_counter's value, pushed with it: a large value "
        "changing at 10 Hz (slow-client tests and benchmarks).",
    )

    # --- spectra -----------------------------------------------------------
    double_spectrum = _memory_attr("double_spectrum", ("DevDouble",), True, max_dim_x=SPECTRUM_MAX)
    double_spectrum_ro = _memory_attr(
        "double_spectrum_ro", ("DevDouble",), False, max_dim_x=SPECTRUM_MAX
    )
    float_spectrum = _memory_attr("float_spectrum", ("DevFloat",), False, max_dim_x=SPECTRUM_MAX)
    long_spectrum = _memory_attr("long_spectrum", ("DevLong",), False, max_dim_x=SPECTRUM_MAX)
    long64_spectrum = _memory_attr("long64_spectrum", ("DevLong64",), False, max_dim_x=SPECTRUM_MAX)
    short_spectrum = _memory_attr("short_spectrum", ("DevShort",), False, max_dim_x=SPECTRUM_MAX)
    ushort_spectrum = _memory_attr("ushort_spectrum", ("DevUShort",), False, max_dim_x=SPECTRUM_MAX)
    ulong_spectrum = _memory_attr("ulong_spectrum", ("DevULong",), False, max_dim_x=SPECTRUM_MAX)
    uchar_spectrum = _memory_attr("uchar_spectrum", ("DevUChar",), False, max_dim_x=SPECTRUM_MAX)
    boolean_spectrum = _memory_attr(
        "boolean_spectrum", ("DevBoolean",), False, max_dim_x=SPECTRUM_MAX
    )
    string_spectrum = _memory_attr("string_spectrum", ("DevString",), True, max_dim_x=SPECTRUM_MAX)

    # --- images ------------------------------------------------------------
    double_image = _memory_attr(
        "double_image", (("DevDouble",),), False, max_dim_x=IMAGE_MAX, max_dim_y=IMAGE_MAX
    )
    long_image = _memory_attr(
        "long_image", (("DevLong",),), False, max_dim_x=IMAGE_MAX, max_dim_y=IMAGE_MAX
    )
    uchar_image = _memory_attr(
        "uchar_image", (("DevUChar",),), False, max_dim_x=IMAGE_MAX, max_dim_y=IMAGE_MAX
    )

    # --- large values (read-only, computed once per Init) -------------------
    big_spectrum = attribute(
        dtype=("DevDouble",), access=READ, max_dim_x=BIG_SPECTRUM_SIZE,
        doc="1,000,000 doubles (normal noise, seed 0): the large-value benchmark's spectrum.",
    )
    big_nan_spectrum = attribute(
        dtype=("DevDouble",), access=READ, max_dim_x=BIG_SPECTRUM_SIZE,
        doc="big_spectrum with every 1000th element NaN and two infinities.",
    )
    big_image = attribute(
        dtype=(("DevDouble",),), access=READ, max_dim_x=BIG_IMAGE_SIDE, max_dim_y=BIG_IMAGE_SIDE,
        doc="1000x1000 doubles (normal noise, seed 1): the large-value benchmark's image.",
    )

    def init_device(self) -> None:
        """Reset every value to its default so each Init gives a known state."""
        super().init_device()
        self._counter = 0
        self._t0 = time.monotonic()
        self._double_setpoint = 0.0
        self._values: dict[str, Any] = dict(_RW_SCALARS)
        self._values["short_scalar_ro"] = -12
        self._values["enum_scalar_ro"] = DemoEnum.Two
        for name, default in _SPECTRA.items():
            self._values[name] = list(default)
        self._values["double_image"] = _image(np.float64)
        self._values["long_image"] = _image(np.int32)
        self._values["uchar_image"] = _image(np.uint8)
        self._big_spectrum, self._big_nan_spectrum, self._big_image = _big_values()
        self._encoded = _encoded_images()
        self._seed_write_values()
        self._stop_pushing()  # Init calls delete_device first; this is only a safety net
        self._pushed = 0
        self.set_change_event("pushed_counter", True, False)
        self.set_archive_event("pushed_counter", True, False)
        self._spectrum = np.linspace(0.0, 1.0, PUSHED_SPECTRUM_SIZE)
        self.set_change_event("pushed_spectrum", True, False)
        self._pusher: _Pusher | None = _Pusher(self, self.pushed_counter_period_ms / 1000)
        self.set_state(DevState.ON)
        self.set_status("The device is in ON state.")

    def delete_device(self) -> None:
        """Stop the pushing thread (before Init starts a new one, or the server exits)."""
        self._stop_pushing()
        super().delete_device()

    def _stop_pushing(self) -> None:
        """Stop the pusher and wait for it, the device's monitor released meanwhile.

        Init (and the server's exit) call delete_device holding the device's monitor, and a push
        takes that monitor too: a push under way when Init came would wait for the monitor while
        delete_device waited for the push to end, until the push gave up 3.2 s later (the client's
        Init timed out first). Released, the push completes and the thread ends at once.
        """
        pusher = getattr(self, "_pusher", None)
        if pusher is not None:
            self._pusher = None
            with tango.AutoTangoAllowThreads(self):
                pusher.stop()

    def push_counter(self) -> None:
        """One tick of ``pushed_counter``: count, then push change and archive events."""
        self._pushed += 1
        stamp = time.time()
        self.push_change_event("pushed_counter", self._pushed, stamp, AttrQuality.ATTR_VALID)
        self.push_archive_event("pushed_counter", self._pushed, stamp, AttrQuality.ATTR_VALID)
        self._spectrum[0] = self._pushed
        self.push_change_event("pushed_spectrum", self._spectrum, stamp, AttrQuality.ATTR_VALID)

    def _seed_write_values(self) -> None:
        """Make the set point (w_value) of writable attributes match the defaults.

        Without this a client reading before any write sees no set point.
        """
        multi = self.get_device_attr()
        seeds: dict[str, Any] = {"double_scalar": self._double_setpoint}
        seeds.update({n: self._values[n] for n in _RW_SCALARS})
        seeds.update({n: self._values[n] for n in _RW_SPECTRA})
        for name, value in seeds.items():
            if isinstance(value, enum.IntEnum):
                value = int(value)
            multi.get_w_attr_by_name(name).set_write_value(value)

    # --- special attribute handlers ----------------------------------------
    def read_double_scalar(self) -> float:
        """Set point plus a slow (60 s period) sine so the value moves under polling."""
        phase = 2.0 * math.pi * (time.monotonic() - self._t0) / 60.0
        return self._double_setpoint + self._values["ampli"] * math.sin(phase)

    def write_double_scalar(self, value: float) -> None:
        """Move the centre of the sine."""
        self._double_setpoint = value

    def read_no_value(self) -> float:
        """Always fail, so clients can test how errors are reported."""
        tango.Except.throw_exception(
            "DemoNoValue",
            "no_value never has a value (by design, for tests)",
            "DemoTangoTest.read_no_value",
        )
        return 0.0  # not reached

    def read_nan_scalar(self) -> float:
        """Return NaN, which plain JSON cannot represent."""
        return float("nan")

    def read_inf_spectrum(self) -> list[float]:
        """Return non-finite values, which plain JSON cannot represent."""
        return [1.0, math.inf, -math.inf, math.nan]

    def read_encoded_scalar(self) -> tuple[str, bytes]:
        """Return a DevEncoded (format, data) pair."""
        return ("utf8", b"Hello encoded")

    def read_encoded_gray16(self) -> tango.EncodedAttribute:
        return self._encoded["gray16"]

    def read_encoded_rgb24(self) -> tango.EncodedAttribute:
        return self._encoded["rgb24"]

    def read_encoded_jpeg(self) -> tango.EncodedAttribute:
        return self._encoded["jpeg"]

    def read_polled_counter(self) -> int:
        """Tenths of a second since Init: a new value on every read 100 ms apart."""
        return int((time.monotonic() - self._t0) * POLLED_COUNTER_RATE)

    def read_pushed_counter(self) -> int:
        """The value last pushed."""
        return self._pushed

    def read_pushed_spectrum(self) -> np.ndarray:
        """The spectrum last pushed."""
        return self._spectrum

    def read_big_spectrum(self) -> np.ndarray:
        return self._big_spectrum

    def read_big_nan_spectrum(self) -> np.ndarray:
        return self._big_nan_spectrum

    def read_big_image(self) -> np.ndarray:
        return self._big_image

    # --- commands ------------------------------------------------------------
    @command
    def DevVoid(self) -> None:
        """Do nothing; the simplest possible command."""

    @command(dtype_in="DevBoolean", dtype_out="DevBoolean")
    def DevBoolean(self, argin: bool) -> bool:
        """Echo argin."""
        return argin

    @command(dtype_in="DevShort", dtype_out="DevShort")
    def DevShort(self, argin: int) -> int:
        """Echo argin."""
        return argin

    @command(dtype_in="DevUShort", dtype_out="DevUShort")
    def DevUShort(self, argin: int) -> int:
        """Echo argin."""
        return argin

    @command(dtype_in="DevLong", dtype_out="DevLong")
    def DevLong(self, argin: int) -> int:
        """Echo argin."""
        return argin

    @command(dtype_in="DevULong", dtype_out="DevULong")
    def DevULong(self, argin: int) -> int:
        """Echo argin."""
        return argin

    @command(dtype_in="DevLong64", dtype_out="DevLong64")
    def DevLong64(self, argin: int) -> int:
        """Echo argin."""
        return argin

    @command(dtype_in="DevULong64", dtype_out="DevULong64")
    def DevULong64(self, argin: int) -> int:
        """Echo argin."""
        return argin

    @command(dtype_in="DevFloat", dtype_out="DevFloat")
    def DevFloat(self, argin: float) -> float:
        """Echo argin."""
        return argin

    @command(dtype_in="DevDouble", dtype_out="DevDouble")
    def DevDouble(self, argin: float) -> float:
        """Echo argin."""
        return argin

    @command(dtype_in="DevString", dtype_out="DevString")
    def DevString(self, argin: str) -> str:
        """Echo argin."""
        return argin

    @command(dtype_in="DevVarCharArray", dtype_out="DevVarCharArray")
    def DevVarCharArray(self, argin: Sequence[int]) -> Sequence[int]:
        """Echo argin."""
        return argin

    @command(dtype_in="DevVarShortArray", dtype_out="DevVarShortArray")
    def DevVarShortArray(self, argin: Sequence[int]) -> Sequence[int]:
        """Echo argin."""
        return argin

    @command(dtype_in="DevVarLongArray", dtype_out="DevVarLongArray")
    def DevVarLongArray(self, argin: Sequence[int]) -> Sequence[int]:
        """Echo argin."""
        return argin

    @command(dtype_in="DevVarLong64Array", dtype_out="DevVarLong64Array")
    def DevVarLong64Array(self, argin: Sequence[int]) -> Sequence[int]:
        """Echo argin."""
        return argin

    @command(dtype_in="DevVarULongArray", dtype_out="DevVarULongArray")
    def DevVarULongArray(self, argin: Sequence[int]) -> Sequence[int]:
        """Echo argin."""
        return argin

    @command(dtype_in="DevVarFloatArray", dtype_out="DevVarFloatArray")
    def DevVarFloatArray(self, argin: Sequence[float]) -> Sequence[float]:
        """Echo argin."""
        return argin

    @command(dtype_in="DevVarDoubleArray", dtype_out="DevVarDoubleArray")
    def DevVarDoubleArray(self, argin: Sequence[float]) -> Sequence[float]:
        """Echo argin."""
        return argin

    @command(dtype_in="DevVarStringArray", dtype_out="DevVarStringArray")
    def DevVarStringArray(self, argin: Sequence[str]) -> Sequence[str]:
        """Echo argin."""
        return argin

    @command(dtype_in="DevVarLongStringArray", dtype_out="DevVarLongStringArray")
    def DevVarLongStringArray(
        self, argin: tuple[Sequence[int], Sequence[str]]
    ) -> tuple[Sequence[int], Sequence[str]]:
        """Echo the (longs, strings) pair."""
        return argin

    @command(dtype_in="DevVarDoubleStringArray", dtype_out="DevVarDoubleStringArray")
    def DevVarDoubleStringArray(
        self, argin: tuple[Sequence[float], Sequence[str]]
    ) -> tuple[Sequence[float], Sequence[str]]:
        """Echo the (doubles, strings) pair."""
        return argin

    @command
    def SwitchStates(self) -> None:
        """Toggle ON <-> FAULT so clients can test state changes."""
        new_state = DevState.FAULT if self.get_state() == DevState.ON else DevState.ON
        self.set_state(new_state)
        self.set_status(f"The device is in {new_state} state.")

    @command(dtype_out="DevLong", polling_period=1000)
    def GetCounter(self) -> int:
        """Return a counter bumped on every call; polled so command_history has data."""
        self._counter += 1
        return self._counter


class SlowDevice(Device):
    """Device with a deliberately slow read, to prove it does not block others."""

    slow_scalar = attribute(dtype="DevDouble", access=READ, doc="Takes 3 s to read.")
    fast_scalar = attribute(dtype="DevDouble", access=READ, doc="Returns immediately.")

    def init_device(self) -> None:
        """Start in ON state."""
        super().init_device()
        self.set_state(DevState.ON)

    def read_slow_scalar(self) -> float:
        """Sleep 3 s, then return 1.0."""
        time.sleep(3.0)
        return 1.0

    def read_fast_scalar(self) -> float:
        """Return 2.0 immediately."""
        return 2.0


class AlarmDevice(Device):
    """Device whose ``alarm_scalar`` is always read with quality ATTR_ALARM."""

    alarm_scalar = attribute(
        dtype="DevDouble",
        access=READ,
        polling_period=ALARM_POLLING_MS,
        abs_change="0.5",
        doc="100 plus the seconds since Init, always with quality ATTR_ALARM; polled every "
        "second, change events.",
    )

    def init_device(self) -> None:
        """Start in ALARM state (Tango's own state would turn ALARM at the first polled read)."""
        super().init_device()
        self._t0 = time.monotonic()
        self.set_state(DevState.ALARM)
        self.set_status("The device is in ALARM state: alarm_scalar is always in alarm.")

    def read_alarm_scalar(self) -> tuple[float, float, AttrQuality]:
        """A value too high and rising, reported with quality ATTR_ALARM."""
        return 100.0 + (time.monotonic() - self._t0), time.time(), AttrQuality.ATTR_ALARM


class _Pusher:
    """The thread behind ``pushed_counter``: calls ``device.push_counter()`` every ``period``.

    It never takes the server down: a failed push is logged and the next tick tries again.
    ``stop`` ends it and waits for it; after ``stop`` returns it touches the device no more.
    """

    def __init__(self, device: DemoTangoTest, period: float) -> None:
        self._device, self._period = device, period
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"push {device.get_name()}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        with tango.EnsureOmniThread():
            while not self._stop.wait(self._period):
                try:
                    self._device.push_counter()
                except Exception as exc:  # noqa: BLE001 - a failed push must not end the thread
                    if not self._stop.is_set():
                        print(f"pushed_counter: push failed: {exc!r}", file=sys.stderr)

    def stop(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()


def main(args: list[str] | None = None) -> Any:
    """Run the device classes in one server process.

    ``args`` is a full argv as PyTango expects (``[exec_name, instance,
    *options]``).  When omitted, ``sys.argv`` is used with the executable name
    replaced by ``SERVER_NAME``: under ``python -m`` argv[0] would be
    ``.../tangotest.py`` and Tango would look for ``tangotest/<instance>``
    instead of the registered ``DemoTangoTest/<instance>``.
    """
    if args is None:
        args = [SERVER_NAME, *sys.argv[1:]]
    return run((DemoTangoTest, SlowDevice, AlarmDevice), args=args)


if __name__ == "__main__":
    main()
