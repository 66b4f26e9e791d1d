"""The audit trail: one JSON line per write attempt, whole lines only, from several workers.

Refused writes are audited too, so a bridge with writes off shows it without writing anything:
two worker processes each append the lines of the PUTs they refuse, at the same time.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from tests.bridge import MainProcess, child_env, http, poll


def test_two_workers_append_whole_lines(control_system, tmp_path) -> None:
    audit = tmp_path / "audit.jsonl"
    main = MainProcess(["--workers", "2"], child_env(
        TANGO_HOST=control_system.tango_host, MTANGO_AUDIT_LOG=str(audit)), tmp_path / "b.log")
    try:
        main.wait_ready()
        device = (f"{main.base}/tango/rest/rc3/hosts/{control_system.tango_host.replace(':', '/')}"
                  "/devices/sys/tg_test/1")
        # A long value makes each line long (about 3 kB), as a spectrum written would.
        long_value = ",".join(str(i) for i in range(600))

        def put(i: int) -> tuple[int, str]:
            reply = http("PUT", f"{device}/attributes/double_spectrum/value?v={long_value}&n={i}")
            return reply.status, reply.headers.get("x-mtango-worker", "")

        # Batches of concurrent requests until both workers have answered some (an idle server
        # tends to hand every connection to one worker).
        answers: list[tuple[int, str]] = []
        with ThreadPoolExecutor(32) as pool:
            for _ in range(20):
                answers += pool.map(put, range(len(answers), len(answers) + 200))
                if len({worker for _, worker in answers}) == 2:
                    break
        assert {status for status, _ in answers} == {403}
        assert len({worker for _, worker in answers}) == 2, "both workers must have answered"
        total = len(answers)
        lines = poll("every line written", lambda: (
            t := audit.read_text().splitlines()) and len(t) >= total and t)
        assert len(lines) == total
        entries = [json.loads(line) for line in lines]  # a torn line would not parse
        assert {e["result"] for e in entries} == {"refused"}
        assert {e["status"] for e in entries} == {403}
        assert all(e["reason"].startswith("WritesOff") for e in entries)
        assert {e["target"]["attribute"] for e in entries} == {"double_spectrum"}
        assert {e["target"]["device"] for e in entries} == {"sys/tg_test/1"}
        assert all(e["user"] == "anonymous" and e["address"] == "127.0.0.1" for e in entries)
        assert all(e["protocol"] == "rc3" and e["action"] == "attribute" for e in entries)
    finally:
        main.stop()


def test_forwarded_headers_are_believed_only_from_configured_proxies(control_system,
                                                                     tmp_path) -> None:
    """Behind a proxy (``proxies_count: 1``) the audit names the client the proxy saw and links
    follow its scheme; without it, a client cannot write another address into the audit log."""
    from mtango.config import Config
    from tests.bridge import InProcessBridge

    forwarded = {"X-Forwarded-For": "198.51.100.7", "X-Forwarded-Proto": "https"}
    device = f"/tango/rest/rc3/hosts/{control_system.tango_host.replace(':', '/')}/devices/" \
             "sys/tg_test/1"
    seen = {}
    for count in (0, 1):
        audit = tmp_path / f"audit{count}.jsonl"
        bridge = InProcessBridge(Config(tango_host=control_system.tango_host,
                                        audit_log=str(audit), proxies_count=count)).start()
        try:
            reply = http("PUT", f"{bridge.base}{device}/attributes/long_scalar_w/value?v=5",
                         headers=forwarded)
            assert reply.status == 403  # writes off: refused, and audited
            line = poll("the audit line",
                        lambda log=audit: log.exists() and log.read_text())
            links = http("GET", f"{bridge.base}{device}", headers=forwarded).json()
            seen[count] = (json.loads(line.splitlines()[0])["address"],
                           links["attributes"].split("://")[0])
        finally:
            bridge.stop()
    assert seen == {0: ("127.0.0.1", "http"), 1: ("198.51.100.7", "https")}
