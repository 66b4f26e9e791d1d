"""A bug in a handler answers 500 with the FAILURE body, is logged, and the server carries on."""

from __future__ import annotations

import logging

import pytest

from mtango.config import Config
from tests.bridge import InProcessBridge


class Broken(RuntimeError):
    pass


@pytest.fixture
def broken_bridge(tango_host):
    bridge = InProcessBridge(Config(tango_host=tango_host))

    async def explode(request):
        raise Broken("a bug in a handler") from KeyError("the cause")

    bridge.app.add_route(explode, "/tango/rest/explode", name="explode")
    bridge.start()
    yield bridge
    bridge.stop()


def test_unexpected_exception_is_500_with_body_and_logged(broken_bridge, caplog) -> None:
    with caplog.at_level(logging.ERROR, logger="mtango"):
        reply = broken_bridge.get("/tango/rest/explode")
    assert reply.status == 500
    body = reply.json()
    assert body["quality"] == "FAILURE"
    assert [e["reason"] for e in body["errors"]] == ["Broken", "KeyError"]
    assert body["errors"][0]["description"] == "a bug in a handler"
    assert "test_unexpected.py" in body["errors"][0]["origin"]
    assert any(r.exc_info and r.exc_info[0] is Broken for r in caplog.records)
    # The same server keeps answering.
    assert broken_bridge.get("/tango/rest/rc3").status == 200
