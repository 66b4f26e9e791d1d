"""The embedded demo control system: what ``main.py`` serves when no TANGO_HOST is given.

``start_tango_demo`` is also what the tests and benchmarks start, so the demo a newcomer sees and
the system the tests check are the same.
"""

from __future__ import annotations

from pathlib import Path

from mtango.demo.stack import ControlSystem, start_database

DEMO_SERVER = "DemoTangoTest/demo"
DEMO_DEVICE = "sys/tg_test/1"
#: A device of its own whose ``alarm_scalar`` is always of quality ATTR_ALARM (same server).
ALARM_DEVICE = "sys/alarm/1"
#: What the demo server serves, by device class.
DEMO_DEVICES = {"DemoTangoTest": [DEMO_DEVICE], "AlarmDevice": [ALARM_DEVICE]}

DEVICE_PROPERTIES = {
    DEMO_DEVICE: {
        "mythical_property": ["a value from the Tango database"],
        "list_property": ["first", "second", "third"],
    }
}
ATTRIBUTE_PROPERTIES = {
    DEMO_DEVICE: {
        "double_scalar": {"my_attribute_property": ["42"], "unit": ["mm"]},
        "long_scalar": {"min_value": ["-1000"], "max_value": ["1000"]},
        "double_spectrum_ro": {"unit": ["mm"]},
    }
}


def start_tango_demo(workdir: Path | None = None) -> ControlSystem:
    """A Tango database with ``sys/tg_test/1`` (a TangoTest look-alike), properties included,
    and ``sys/alarm/1`` (an attribute of quality ATTR_ALARM), both served by ``DEMO_SERVER``."""
    system = start_database(workdir)
    try:
        system.add_server(
            DEMO_SERVER,
            DEMO_DEVICES,
            device_properties=DEVICE_PROPERTIES,
            attribute_properties=ATTRIBUTE_PROPERTIES,
        )
    except Exception:
        system.stop()
        raise
    return system
