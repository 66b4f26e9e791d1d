"""The demo's values that change by themselves, seen by a plain PyTango client through events.

``polled_counter`` is polled by Tango (change events from polling), ``pushed_counter`` is pushed by
the device's own thread (change and archive events, no polling) and ``sys/alarm/1`` has an
attribute always of quality ATTR_ALARM. These are what the bridge's live values are built on.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import tango

from mtango.demo import ALARM_DEVICE, DEMO_DEVICE, DEMO_SERVER
from mtango.demo.stack import ControlSystem
from tests.bridge import poll

LIVE_SERVER = "DemoTangoTest/live"
LIVE_DEVICE = "test/live/1"
FAST_DEVICE = "test/live/fast"  # pushes every 50 µs


class Events:
    """A subscription's callback: keeps every event it is given (from Tango's threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[tango.EventData] = []

    def __call__(self, event: tango.EventData) -> None:
        with self._lock:
            self._events.append(event)

    def all(self) -> list[tango.EventData]:
        with self._lock:
            return list(self._events)

    def values(self) -> list[tango.EventData]:
        """The events with a value; failing here on any error event."""
        events = self.all()
        errors = [e.errors[0].reason for e in events if e.err]
        assert not errors, f"error events: {errors}"
        return events


@contextmanager
def subscribed(proxy: tango.DeviceProxy, attribute: str, kind: tango.EventType) -> Iterator[Events]:
    events = Events()
    subscription = proxy.subscribe_event(attribute, kind, events)
    try:
        yield events
    finally:
        proxy.unsubscribe_event(subscription)


def assert_rising(events: list[tango.EventData], count: int = 3) -> None:
    """At least ``count`` events whose values and timestamps only go up."""
    assert len(events) >= count
    values = [e.attr_value.value for e in events]
    stamps = [e.attr_value.time.totime() for e in events]
    assert values == sorted(values) and len(set(values)) == len(values), values
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), stamps
    assert all(e.attr_value.quality == tango.AttrQuality.ATTR_VALID for e in events)


@pytest.fixture(scope="module")
def live_server(control_system: ControlSystem) -> Iterator[ControlSystem]:
    """Demo devices of this module only: their Init resets nothing other tests rely on."""
    control_system.add_server(
        LIVE_SERVER,
        {"DemoTangoTest": [LIVE_DEVICE, FAST_DEVICE]},
        device_properties={FAST_DEVICE: {"pushed_counter_period_ms": ["0.05"]}},
    )
    yield control_system
    control_system.stop_server(LIVE_SERVER)
    control_system.database().delete_server(LIVE_SERVER)


@pytest.fixture(scope="module")
def live_device(live_server: ControlSystem) -> tango.DeviceProxy:
    return tango.DeviceProxy(live_server.trl(LIVE_DEVICE))


@pytest.fixture(scope="module")
def fast_device(live_server: ControlSystem) -> tango.DeviceProxy:
    return tango.DeviceProxy(live_server.trl(FAST_DEVICE))


@pytest.mark.parametrize("attribute", ["polled_counter", "pushed_counter"])
def test_change_events_count_up(proxy, attribute):
    with subscribed(proxy, attribute, tango.EventType.CHANGE_EVENT) as events:
        poll(f"3 change events of {attribute}", lambda: len(events.values()) >= 3)
        assert_rising(events.values())


def test_pushed_counter_has_archive_events(proxy):
    with subscribed(proxy, "pushed_counter", tango.EventType.ARCHIVE_EVENT) as events:
        poll("3 archive events of pushed_counter", lambda: len(events.values()) >= 3)
        assert_rising(events.values())


def test_how_the_counters_are_configured(proxy):
    assert proxy.get_attribute_poll_period("polled_counter") == 100
    assert proxy.get_attribute_config("polled_counter").events.ch_event.abs_change == "1"
    assert proxy.get_attribute_poll_period("pushed_counter") == 0  # events come from the code only
    for name in ("polled_counter", "pushed_counter"):
        config = proxy.get_attribute_config(name)
        assert config.data_type == tango.CmdArgType.DevLong
        assert config.writable == tango.AttrWriteType.READ


def test_polled_counter_moves_between_reads(proxy):
    first = proxy.read_attribute("polled_counter").value
    poll("polled_counter to move", lambda: proxy.read_attribute("polled_counter").value > first)


def since_restart(events: list[tango.EventData]) -> list[tango.EventData]:
    """The events after the last time the count did not go up (an Init), none if it never did."""
    values = [e.attr_value.value for e in events]
    drops = [i for i in range(1, len(values)) if values[i] <= values[i - 1]]
    return events[drops[-1]:] if drops else []


def test_pushing_starts_again_after_init(live_device):
    """Init stops the pushing thread and starts a new one, counting from 1 again: one thread
    (two would interleave their counts, and the count would keep going down)."""
    with subscribed(live_device, "pushed_counter", tango.EventType.CHANGE_EVENT) as events:
        poll("a count past 3 before Init",
             lambda: any(e.attr_value.value > 3 for e in events.values()))
        for _ in range(3):
            live_device.command_inout("Init")
        # The events poll saw: asked again, they may already be those of a later Init, still on
        # their way when poll looked (counted from 1 again, only one of them yet).
        after = poll("3 events since the last Init", lambda: (
            lambda got: got if len(got) >= 3 else None)(since_restart(events.values())))
        assert [e.attr_value.value for e in after[:3]] == [1, 2, 3]
        assert_rising(after)
    assert live_device.state() == tango.DevState.ON


def test_init_does_not_wait_for_a_push(fast_device):
    """Init (delete_device) stops the pushing thread while a push may be waiting for the device's
    monitor, which Init holds. Unless delete_device lets go of the monitor while it waits for the
    thread, the two waited for each other until the push gave up (3.2 s) and the client's Init
    timed out (3 s): with a push every 50 µs, within the first few hundred Inits."""
    for _ in range(1000):
        fast_device.command_inout("Init")  # a DevFailed API_DeviceTimedOut when they deadlock
    first = fast_device.read_attribute("pushed_counter").value
    poll("pushes after the last Init",
         lambda: fast_device.read_attribute("pushed_counter").value > first)


def test_alarm_scalar_is_in_alarm(control_system):
    alarm = tango.DeviceProxy(control_system.trl(ALARM_DEVICE))
    read = alarm.read_attribute("alarm_scalar")
    assert read.quality == tango.AttrQuality.ATTR_ALARM
    assert isinstance(read.value, float)
    assert alarm.state() == tango.DevState.ALARM
    assert alarm.get_attribute_poll_period("alarm_scalar") == 1000
    with subscribed(alarm, "alarm_scalar", tango.EventType.CHANGE_EVENT) as events:
        poll("2 change events of alarm_scalar", lambda: len(events.values()) >= 2)
        assert all(e.attr_value.quality == tango.AttrQuality.ATTR_ALARM for e in events.values())
    # The main demo device is not affected.
    assert tango.DeviceProxy(control_system.trl(DEMO_DEVICE)).state() == tango.DevState.ON


def test_the_demo_server_serves_the_alarm_device(control_system):
    info = control_system.database().get_device_info(ALARM_DEVICE)
    assert (info.class_name, info.ds_full_name) == ("AlarmDevice", DEMO_SERVER)
    assert info.exported
