"""rc3 entry points: API versions, rc3 root, hosts, database info, device list, range, filter.

Every expectation is taken from the session's real Tango database (``control_system``), never
from the bridge itself.
"""

from __future__ import annotations

import re

import pytest

from mtango.demo import DEMO_DEVICE
from tests.bridge import ROOT


def _db_devices(control_system, wildcard: str) -> list[str]:
    return list(control_system.database().command_inout("DbGetDeviceWideList", wildcard))


def _path(bridge, url: str) -> str:
    """An absolute URL the bridge emitted, as a path the test client can GET."""
    assert url.startswith(bridge.base + "/"), url
    return url[len(bridge.base):]


def test_api_versions(bridge):
    reply = bridge.get("/tango/rest")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert body == {"rc3": f"{bridge.base}/tango/rest/rc3", "sys": f"{bridge.base}/tango/rest/sys"}
    for url in body.values():
        assert bridge.get(_path(bridge, url)).status == 200


def test_readme_names_every_link_of_the_api_root(bridge):
    """The README's rc3 table says what ``/tango/rest`` answers: the same keys as the answer."""
    row = next(line for line in (ROOT / "README.md").read_text().splitlines()
               if line.startswith("| `/tango/rest` |"))
    assert set(re.findall(r'"(\w+)": url', row)) == set(bridge.get("/tango/rest").json()), row


def test_rc3_root(bridge):
    reply = bridge.get("/tango/rest/rc3")
    assert reply.status == 200
    assert reply.json() == {
        "hosts": f"{bridge.base}/tango/rest/rc3/hosts",
        "x-auth-method": "none",
    }


@pytest.mark.parametrize("suffix", ["", "/"])
def test_hosts_is_an_object_of_absolute_urls(bridge, control_system, host_path, suffix):
    """The Java server's shape; the JS client calls ``/hosts/`` with a trailing slash."""
    reply = bridge.get(f"/tango/rest/rc3/hosts{suffix}")
    assert reply.status == 200
    body = reply.json()
    assert body == {control_system.tango_host: f"{bridge.base}{host_path}"}
    # The JS client takes the first value as its endpoint: it must lead to the database.
    endpoint = next(iter(body.values()))
    assert bridge.get(_path(bridge, endpoint)).json()["port"] == control_system.db_port


@pytest.mark.parametrize("suffix", ["", "/"])
def test_database_info(bridge, control_system, host_path, suffix):
    reply = bridge.get(f"{host_path}{suffix}")
    assert reply.status == 200
    body = reply.json()
    assert set(body) == {"host", "port", "name", "info", "devices"}
    db = control_system.database()
    assert body["host"] == control_system.db_host
    assert body["port"] == control_system.db_port
    assert type(body["port"]) is int
    assert body["name"] == db.dev_name()
    assert body["info"] == list(db.command_inout("DbInfo"))  # its lines, no trailing ""
    assert len(body["info"]) > 3
    assert all(isinstance(line, str) for line in body["info"])
    assert body["devices"] == f"{bridge.base}{host_path}/devices"


def test_devices_match_the_database(bridge, control_system, host_path):
    reply = bridge.get(f"{host_path}/devices")
    assert reply.status == 200
    items = reply.json()
    expected = _db_devices(control_system, "*")
    assert [item["name"] for item in items] == expected
    assert DEMO_DEVICE in expected
    for item in items:
        assert set(item) == {"name", "href"}
        assert item["href"] == f"{bridge.base}{host_path}/devices/{item['name']}"


def test_device_href_leads_to_the_device(bridge, host_path):
    items = bridge.get(f"{host_path}/devices").json()
    demo = next(item for item in items if item["name"] == DEMO_DEVICE)
    reply = bridge.get(_path(bridge, demo["href"]))
    assert reply.status == 200
    assert reply.json()["name"] == DEMO_DEVICE


def test_devices_wildcard_domain(bridge, control_system, host_path):
    names = [item["name"] for item in bridge.get(f"{host_path}/devices?wildcard=sys/*").json()]
    assert names == _db_devices(control_system, "sys/*")
    assert DEMO_DEVICE in names
    assert all(name.startswith("sys/") for name in names)
    assert len(names) < len(_db_devices(control_system, "*"))


def test_devices_wildcard_in_the_middle(bridge, control_system, host_path):
    names = [item["name"] for item in bridge.get(f"{host_path}/devices?wildcard=*tg_test*").json()]
    assert names == [DEMO_DEVICE]
    assert names == _db_devices(control_system, "*tg_test*")


def test_devices_range_cuts_with_partial_content(bridge, control_system, host_path):
    everything = _db_devices(control_system, "*")
    assert len(everything) > 4  # so that range=0-2 cuts and its _next page is also partial
    reply = bridge.get(f"{host_path}/devices?range=0-2")
    assert reply.status == 206
    assert reply.headers["content-range"] == f"items 0-1/{len(everything)}"
    body = reply.json()
    assert len(body) == 3
    assert [item["name"] for item in body[:2]] == everything[:2]
    partial = body[-1]
    assert partial["name"] == "partial_content"
    assert partial["total"] == len(everything)
    assert partial["offset"] == 0
    assert partial["limit"] == 2
    links = partial["_links"]
    assert set(links) == {"_prev", "_next", "_first", "_last"}
    assert links["_prev"] is None
    assert links["_first"].endswith("range=0-2")

    following = bridge.get(_path(bridge, links["_next"]))
    assert following.status == 206
    page = following.json()
    assert [item["name"] for item in page[:-1]] == everything[2:4]
    assert page[-1]["name"] == "partial_content"
    assert page[-1]["offset"] == 2
    assert page[-1]["_links"]["_prev"] == links["_first"]


def test_devices_range_last_page(bridge, control_system, host_path):
    everything = _db_devices(control_system, "*")
    first = bridge.get(f"{host_path}/devices?range=0-2").json()[-1]
    reply = bridge.get(_path(bridge, first["_links"]["_last"]))
    assert reply.status == 206
    page = reply.json()
    start = (len(everything) - 1) // 2 * 2
    assert [item["name"] for item in page[:-1]] == everything[start:]
    assert page[-1]["_links"]["_next"] is None


def test_devices_range_covering_everything_is_a_plain_list(bridge, control_system, host_path):
    everything = _db_devices(control_system, "*")
    reply = bridge.get(f"{host_path}/devices?range=0-{len(everything) + 10}")
    assert reply.status == 200
    assert "content-range" not in reply.headers
    body = reply.json()
    assert [item["name"] for item in body] == everything
    assert all(item["name"] != "partial_content" for item in body)


def test_range_keeps_the_other_parameters(bridge, control_system, host_path):
    reply = bridge.get(f"{host_path}/devices?wildcard=sys/*&range=0-1")
    expected = _db_devices(control_system, "sys/*")
    assert len(expected) > 1
    assert reply.status == 206
    body = reply.json()
    assert [item["name"] for item in body[:-1]] == expected[:1]
    next_page = bridge.get(_path(bridge, body[-1]["_links"]["_next"])).json()
    assert [item["name"] for item in next_page[:-1]] == expected[1:2]


def test_filter_keeps_fields(bridge, control_system, host_path):
    items = bridge.get(f"{host_path}/devices?filter=name").json()
    assert items == [{"name": name} for name in _db_devices(control_system, "*")]


def test_filter_drops_fields(bridge, control_system, host_path):
    items = bridge.get(f"{host_path}/devices?filter=!href").json()
    assert items == [{"name": name} for name in _db_devices(control_system, "*")]


def test_filter_on_an_object(bridge, control_system, host_path):
    body = bridge.get(f"{host_path}?filter=name&filter=port").json()
    assert body == {"name": control_system.database().dev_name(), "port": control_system.db_port}
    body = bridge.get(f"{host_path}?filter=!info").json()
    assert set(body) == {"host", "port", "name", "devices"}


def test_filter_and_range_together(bridge, control_system, host_path):
    reply = bridge.get(f"{host_path}/devices?filter=name&range=0-2")
    assert reply.status == 206
    body = reply.json()
    assert body[:2] == [{"name": n} for n in _db_devices(control_system, "*")[:2]]
    assert body[-1]["name"] == "partial_content"


@pytest.mark.parametrize(
    "path",
    [
        "/tango/rest",
        "/tango/rest/rc3",
        "/tango/rest/rc3/hosts",
        "{host}",
        "{host}/devices",
        "{host}/devices?range=0-1",
        "{host}/devices/sys/tg_test/1/attributes/no_value/value",
        "/tango/rest/no_such_version",
    ],
)
def test_every_response_has_the_x_mtango_header(bridge, host_path, path):
    reply = bridge.get(path.format(host=host_path))
    assert reply.headers["x-mtango"].startswith("mtango-bridge ")


def test_demo_lists_only_devices_it_serves(tmp_path):
    """The stock entries pytango-db registers (TangoTest/test, TangoAccessControl/1) run nowhere
    in the demo: it lists only devices that answer, each with a real state."""
    from mtango.config import Config
    from mtango.demo import start_tango_demo
    from tests.bridge import InProcessBridge

    demo = start_tango_demo(tmp_path)
    running = InProcessBridge(Config(tango_host=demo.tango_host, tango_timeout_ms=2000)).start()
    try:
        prefix = f"/tango/rest/rc3/hosts/{demo.db_host}/{demo.db_port}"
        names = [d["name"] for d in running.get(f"{prefix}/devices").json()]
        assert DEMO_DEVICE in names and "sys/database/2" in names
        states = {n: running.get(f"{prefix}/devices/{n}/state").json()["state"] for n in names}
        assert "UNKNOWN" not in states.values(), states
    finally:
        running.stop()
        demo.stop()
