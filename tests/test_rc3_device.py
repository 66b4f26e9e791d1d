"""rc3 device: database facts, state, device properties and pipes of sys/tg_test/1.

Expected values come from the real Tango database and a direct DeviceProxy of the device.
"""

from __future__ import annotations

from mtango.demo import DEMO_DEVICE, DEVICE_PROPERTIES

INFO_KEYS = {
    "last_exported", "last_unexported", "name", "ior", "version", "exported", "pid", "server",
    "hostname", "classname", "is_taco",
}


def test_device(bridge, host_path, device_path):
    reply = bridge.get(device_path)
    assert reply.status == 200
    body = reply.json()
    url = f"{bridge.base}{device_path}"
    assert body["name"] == DEMO_DEVICE
    assert body["state"] == f"{url}/state"
    assert body["attributes"] == f"{url}/attributes"
    assert body["commands"] == f"{url}/commands"
    assert body["pipes"] == f"{url}/pipes"
    assert body["properties"] == f"{url}/properties"
    assert body["_links"] == {"_parent": f"{bridge.base}{host_path}/devices", "_self": url}


def test_device_info_matches_the_database(bridge, control_system, device_path):
    info = bridge.get(device_path).json()["info"]
    assert set(info) == INFO_KEYS
    db = control_system.database().get_device_info(DEMO_DEVICE)
    assert info["name"] == db.name == DEMO_DEVICE
    assert info["ior"] == db.ior
    assert info["ior"].startswith("IOR:")
    assert info["version"] == str(db.version)
    assert info["exported"] is True
    assert bool(db.exported)
    assert info["pid"] == db.pid
    assert type(info["pid"]) is int and info["pid"] > 0
    assert info["server"] == db.ds_full_name == "DemoTangoTest/demo"
    assert info["hostname"] == db.host
    assert info["classname"] == db.class_name == "DemoTangoTest"
    assert info["is_taco"] is False
    assert info["last_exported"] == db.started_date
    assert info["last_exported"] != "?"
    assert info["last_unexported"] == (db.stopped_date or "?")


def test_device_state(bridge, proxy, device_path):
    reply = bridge.get(f"{device_path}/state")
    assert reply.status == 200
    body = reply.json()
    assert body["state"] == proxy.state().name
    assert body["status"] == proxy.status()
    url = f"{bridge.base}{device_path}"
    assert body["_links"] == {
        "_state": f"{url}/attributes/State",
        "_status": f"{url}/attributes/Status",
        "_parent": url,
        "_self": f"{url}/state",
    }


def test_device_properties_match_the_database(bridge, control_system, device_path):
    reply = bridge.get(f"{device_path}/properties")
    assert reply.status == 200
    items = reply.json()
    assert all(set(item) == {"name", "values"} for item in items)
    db = control_system.database()
    names = list(db.get_device_property_list(DEMO_DEVICE, "*"))
    expected = {n: list(v) for n, v in db.get_device_property(DEMO_DEVICE, names).items()}
    assert {item["name"]: item["values"] for item in items} == expected
    assert len(items) == len(names)
    for name, values in DEVICE_PROPERTIES[DEMO_DEVICE].items():
        assert {"name": name, "values": values} in items


def test_one_device_property(bridge, control_system, device_path):
    reply = bridge.get(f"{device_path}/properties/list_property")
    assert reply.status == 200
    db_values = control_system.database().get_device_property(DEMO_DEVICE, ["list_property"])
    assert reply.json() == {"name": "list_property", "values": list(db_values["list_property"])}
    assert reply.json()["values"] == ["first", "second", "third"]


def test_one_device_property_single_value(bridge, device_path):
    body = bridge.get(f"{device_path}/properties/mythical_property").json()
    assert body == {
        "name": "mythical_property",
        "values": DEVICE_PROPERTIES[DEMO_DEVICE]["mythical_property"],
    }


def test_pipes_list_is_empty(bridge, device_path):
    reply = bridge.get(f"{device_path}/pipes")
    assert reply.status == 200
    assert reply.json() == []


def test_pipe_read_is_a_clear_failure(bridge, device_path):
    reply = bridge.get(f"{device_path}/pipes/DevPipe")
    assert reply.status == 200  # rc3 mode: Tango-side failures are HTTP 200 with a FAILURE body
    body = reply.json()
    assert body["quality"] == "FAILURE"
    assert type(body["timestamp"]) is int
    assert body["errors"]
    error = body["errors"][0]
    assert set(error) == {"reason", "description", "severity", "origin"}
    assert "pipes are not supported" in error["description"]
    assert "DevPipe" in error["description"]
