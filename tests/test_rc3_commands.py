"""rc3 commands of sys/tg_test/1: list, one command, command history (polled and not)."""

from __future__ import annotations

import pytest
import tango

from tests.bridge import poll

INFO_KEYS = {"cmd_name", "level", "cmd_tag", "in_type", "out_type", "in_type_desc", "out_type_desc"}


def expected_info(info: tango.CommandInfo) -> dict:
    return {
        "cmd_name": info.cmd_name,
        "level": info.disp_level.name,
        "cmd_tag": info.cmd_tag,
        "in_type": tango.CmdArgType(int(info.in_type)).name,
        "out_type": tango.CmdArgType(int(info.out_type)).name,
        "in_type_desc": info.in_type_desc,
        "out_type_desc": info.out_type_desc,
    }


def ms(tv) -> int:
    return int(tv.tv_sec) * 1000 + int(tv.tv_usec) // 1000


def test_commands_list(bridge, proxy, device_path):
    reply = bridge.get(f"{device_path}/commands")
    assert reply.status == 200
    items = reply.json()
    assert [item["name"] for item in items] == list(proxy.get_command_list())
    dev = f"{bridge.base}{device_path}"
    by_name = {info.cmd_name: info for info in proxy.command_list_query()}
    for item in items:
        url = f"{dev}/commands/{item['name']}"
        assert set(item) == {"name", "info", "history", "_links"}
        assert set(item["info"]) == INFO_KEYS
        assert item["info"] == expected_info(by_name[item["name"]])
        assert item["history"] == f"{url}/history"
        assert item["_links"] == {"_parent": dev, "_self": url}


def test_command_type_names(bridge, device_path):
    infos = {item["name"]: item["info"] for item in bridge.get(f"{device_path}/commands").json()}
    assert (infos["DevString"]["in_type"], infos["DevString"]["out_type"]) == (
        "DevString", "DevString"
    )
    assert (infos["DevVoid"]["in_type"], infos["DevVoid"]["out_type"]) == ("DevVoid", "DevVoid")
    assert infos["DevVarDoubleStringArray"]["in_type"] == "DevVarDoubleStringArray"
    assert infos["DevULong64"]["out_type"] == "DevULong64"
    assert (infos["State"]["out_type"], infos["Status"]["out_type"]) == ("DevState", "DevString")
    assert infos["GetCounter"]["out_type"] == "DevLong"
    assert all(info["level"] in ("OPERATOR", "EXPERT") for info in infos.values())


@pytest.mark.parametrize("name", ["DevString", "DevVoid", "GetCounter", "DevVarLongStringArray",
                                  "Init"])
def test_one_command(bridge, proxy, device_path, name):
    reply = bridge.get(f"{device_path}/commands/{name}")
    assert reply.status == 200
    body = reply.json()
    url = f"{bridge.base}{device_path}/commands/{name}"
    assert body == {
        "name": name,
        "info": expected_info(proxy.command_query(name)),
        "history": f"{url}/history",
        "_links": {"_parent": f"{bridge.base}{device_path}", "_self": url},
    }


def test_history_of_a_polled_command(bridge, proxy, device_path):
    poll("GetCounter polled", lambda: proxy.command_history("GetCounter", 10), timeout=20)
    def history() -> set[tuple[int, int]]:
        return {(ms(h.get_date()), h.extract()) for h in proxy.command_history("GetCounter", 10)
                if not h.has_failed()}
    known = history()  # before and after the bridge's read: the polling buffer slides
    reply = bridge.get(f"{device_path}/commands/GetCounter/history")
    assert reply.status == 200
    items = reply.json()
    assert isinstance(items, list) and items
    known |= history()
    for item in items:
        assert set(item) == {"name", "output", "timestamp"}
        assert item["name"] == "GetCounter"
        assert type(item["output"]) is int and item["output"] >= 1
        assert type(item["timestamp"]) is int
        assert (item["timestamp"], item["output"]) in known  # same buffer, timestamps in ms


def test_history_depth_of_a_polled_command(bridge, proxy, device_path):
    poll("GetCounter polled twice",
         lambda: len(proxy.command_history("GetCounter", 10)) >= 2, timeout=20)
    items = bridge.get(f"{device_path}/commands/GetCounter/history?depth=1").json()
    assert len(items) == 1
    assert items[0]["name"] == "GetCounter"


def test_history_of_a_command_that_is_not_polled(bridge, device_path):
    reply = bridge.get(f"{device_path}/commands/DevVoid/history")
    assert reply.status == 200  # rc3 mode
    body = reply.json()
    assert isinstance(body, dict)
    assert body["quality"] == "FAILURE"
    assert type(body["timestamp"]) is int
    assert body["errors"][0]["reason"] == "API_CmdNotPolled"
    assert "not polled" in body["errors"][0]["description"]
