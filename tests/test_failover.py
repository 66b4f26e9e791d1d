"""``TANGO_HOST=h1:p1,h2:p2``: one Tango database reachable through either host (Tango's form).

Two PyDatabaseds share one sqlite file: one database, two hosts. The bridge shows it once, under
the first host; URLs may name either host; when the first host stops answering, the bridge goes on
through the second (PyTango's fail-over, which it only does for the TANGO_HOST of the process).
"""

from __future__ import annotations

from mtango.demo import DEMO_DEVICE, DEMO_SERVER
from mtango.demo.stack import start_database
from tests.bridge import MainProcess, child_env, poll

DSERVER = f"dserver/{DEMO_SERVER}"


def test_a_database_with_two_hosts(tmp_path) -> None:
    shared = str(tmp_path / "tango.sqlite")
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = start_database(tmp_path / "first", database=shared)
    second = start_database(tmp_path / "second", database=shared)
    main = None
    try:
        second.add_server(DEMO_SERVER, {"DemoTangoTest": [DEMO_DEVICE]})
        both = f"{first.tango_host},{second.tango_host}"
        main = MainProcess(["--workers", "1"], child_env(TANGO_HOST=both), tmp_path / "main.log")
        by_first = f"/tango/rest/rc3/hosts/{first.db_host}/{first.db_port}"
        by_second = f"/tango/rest/rc3/hosts/{second.db_host}/{second.db_port}"

        # One database, shown once, under the first host (in /hosts and in the banner).
        assert main.wait_ready().json() == {first.tango_host: f"{main.base}{by_first}"}
        poll("the banner", lambda: f"{main.base}{by_first}/devices" in main.log.read_text())
        assert f"(fail-over host: {second.tango_host})" in main.log.read_text()
        # Either spelling reaches it.
        for prefix in (by_first, by_second):
            assert main.get(f"{prefix}/devices/{DEMO_DEVICE}/state").json()["state"] == "ON"
        assert DEMO_DEVICE in [d["name"] for d in main.get(f"{by_first}/devices").json()]

        first.stop()  # the first host no longer answers
        names = poll("the device list through the second host", lambda: _names(main, by_first))
        assert DEMO_DEVICE in names and DSERVER in names
        # A device not asked for yet: imported through the second host.
        assert poll("a new device through the second host", lambda: main.get(
            f"{by_first}/devices/{DSERVER}/state").json()["state"] == "ON")
        assert main.get("/health/ready").status == 200
    finally:
        if main is not None:
            assert main.stop() == 0
        second.stop()
        first.stop()


def _names(main: MainProcess, prefix: str) -> list[str] | None:
    body = main.get(f"{prefix}/devices").json()
    return [d["name"] for d in body] if isinstance(body, list) else None
