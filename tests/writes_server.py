"""The device server of ``tests/test_tango_writes.py``: the demo device plus what writes need.

``WritesTest`` is a ``DemoTangoTest`` (every attribute and command of ``sys/tg_test/1``) with
writable images, a writable DevEncoded, a write-only attribute, more writable spectra and an
attribute whose write always fails. It runs in a server of its own (``WritesTest/<instance>``), so
the write tests change no value that other tests read from the demo device.

Run as ``python -m tests.writes_server <instance> -ORBendPoint giop:tcp:127.0.0.1:0``.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import tango
from tango import AttrWriteType
from tango.server import attribute, run

from mtango.demo.tangotest import IMAGE_MAX, SPECTRUM_MAX, DemoTangoTest, _memory_attr

SERVER_NAME = "WritesTest"


class WritesTest(DemoTangoTest):
    """The demo device, plus writable images, DevEncoded, spectra and a write-only attribute."""

    double_image_rw = _memory_attr(
        "double_image_rw", (("DevDouble",),), True, max_dim_x=IMAGE_MAX, max_dim_y=IMAGE_MAX
    )
    long_image_rw = _memory_attr(
        "long_image_rw", (("DevLong",),), True, max_dim_x=IMAGE_MAX, max_dim_y=IMAGE_MAX
    )
    long_spectrum_rw = _memory_attr("long_spectrum_rw", ("DevLong",), True, max_dim_x=4)
    boolean_spectrum_rw = _memory_attr(
        "boolean_spectrum_rw", ("DevBoolean",), True, max_dim_x=SPECTRUM_MAX
    )
    uchar_spectrum_rw = _memory_attr(
        "uchar_spectrum_rw", ("DevUChar",), True, max_dim_x=SPECTRUM_MAX
    )
    encoded_rw = _memory_attr("encoded_rw", "DevEncoded", True)
    long_write_only = attribute(dtype="DevLong", access=AttrWriteType.WRITE)
    refuses_writes = attribute(dtype="DevDouble", access=AttrWriteType.READ_WRITE)

    def init_device(self) -> None:
        super().init_device()
        self._values["double_image_rw"] = np.zeros((2, 3), dtype=np.float64)
        self._values["long_image_rw"] = np.zeros((2, 2), dtype=np.int32)
        self._values["long_spectrum_rw"] = [1, 2]
        self._values["boolean_spectrum_rw"] = [False]
        self._values["uchar_spectrum_rw"] = [0]
        self._values["encoded_rw"] = ("none", b"")
        self._long_write_only = 0

    def write_long_write_only(self, value: int) -> None:
        self._long_write_only = value

    def read_refuses_writes(self) -> float:
        return 0.0

    def write_refuses_writes(self, value: float) -> None:
        tango.Except.throw_exception(
            "WritesRefused", "refuses_writes refuses every write (by design, for tests)",
            "WritesTest.write_refuses_writes")


def main(args: list[str] | None = None) -> Any:
    return run((WritesTest,), args=args or [SERVER_NAME, *sys.argv[1:]])


if __name__ == "__main__":
    main()
