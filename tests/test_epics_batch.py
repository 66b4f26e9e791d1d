"""Many PVs in one request: HTTP 200 with one item per requested name, in order, values or
FAILURE items, never all-or-nothing; a 1000-PV read against the softioc IOC."""

from __future__ import annotations

import json
import urllib.request
from typing import Any
from urllib.parse import urlencode

import pytest

from mtango.config import Config
from tests.bridge import InProcessBridge

V1 = "/epics/rest/v1"


def post(bridge, path: str, body: Any, raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{bridge.base}{V1}{path}", data=data, method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def patient_bridge(soft_ioc) -> InProcessBridge:
    """Timeouts long enough for 1000 new channels on a loaded 2-core machine."""
    config = Config(
        epics_ca_addr_list=(soft_ioc.address,),
        epics_connect_timeout_ms=20000,
        epics_read_timeout_ms=20000,
    )
    running = InProcessBridge(config).start()
    yield running
    running.stop()


def test_a_thousand_pvs_in_one_request(patient_bridge, soft_ioc, pyepics):
    names = soft_ioc.bulk_names()
    assert len(names) == 1000
    status, items = post(patient_bridge, "/pvs/value", names)
    assert status == 200
    assert [item["name"] for item in items] == names
    assert [item.get("value") for item in items] == [float(i) for i in range(1000)]
    assert all(item["quality"] == "ATTR_VALID" for item in items)
    # The same PVs read directly, in one pyepics call.
    assert pyepics.caget_many(names[:50], timeout=5) == [item["value"] for item in items[:50]]
    # Again, now warm: the same answer (values served by the monitors or read again).
    status, again = post(patient_bridge, "/pvs/value", names)
    assert status == 200 and [i["value"] for i in again] == [i["value"] for i in items]
    counts = patient_bridge.get(f"{V1}/health").json()["channels"]
    assert counts["total"] == counts["connected"] == 1000


def test_errors_stay_inside_their_items(epics_bridge):
    names = ["cp:double", "cp:no_such_pv", "bad name", "sf:ai", "cp:double"]
    reply = epics_bridge.get(f"{V1}/pvs/value?" + urlencode([("pv", n) for n in names]))
    assert reply.status == 200
    items = reply.json()
    assert [i["name"] for i in items] == names
    assert items[0]["value"] == 1.234 and items[4] == items[0]
    missing = items[1]
    assert missing["quality"] == "FAILURE" and missing["connected"] is False
    assert missing["errors"][0]["reason"] == "EPICS_CONNECT_TIMEOUT"
    assert items[2]["errors"][0]["reason"] == "BadName"
    assert items[3]["value"] == 3.14159


def test_post_accepts_an_object_with_a_list(epics_bridge):
    status, items = post(epics_bridge, "/pvs/value", {"pvs": ["cp:long", "cp:short"]})
    assert status == 200 and [i["value"] for i in items] == [123456, -7]


def test_batch_options_apply_to_every_item(epics_bridge):
    status, items = post(
        epics_bridge, "/pvs/value?count=2&encoding=b64", ["sf:wf_short", "cp:double"]
    )
    assert status == 200
    assert "b64srt" in items[0] and items[1]["value"] == 1.234


def test_bad_batch_requests_are_400(epics_bridge):
    for body, raw in ((None, b"not json"), ("cp:double", None), ([1, 2], None), ({}, None)):
        status, answer = post(epics_bridge, "/pvs/value", body, raw)
        assert status == 400, body
        assert answer["quality"] == "FAILURE"
    assert epics_bridge.get(f"{V1}/pvs/value").status == 400  # no ?pv=
    status, answer = post(epics_bridge, "/pvs/value", [f"x{i}" for i in range(10001)])
    assert status == 400 and answer["errors"][0]["reason"] == "TooManyPVs"


def test_metadata_of_several_pvs(epics_bridge):
    reply = epics_bridge.get(f"{V1}/pvs/info?pv=cp:double&pv=cp:nothing_here&pv=sf:mbbi")
    assert reply.status == 200
    items = reply.json()
    assert items[0]["units"] == "mm"
    assert items[1]["errors"][0]["reason"] == "EPICS_CONNECT_TIMEOUT"
    assert items[2]["enum_strings"] == ["Zero", "One", "Two"]
