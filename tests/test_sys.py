"""The /sys API, /metrics and /health: figures for the whole server, across worker processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mtango import __version__
from mtango.api.sys import redact
from tests.bridge import MainProcess, child_env, poll

SYS = "/tango/rest/sys"


def test_sys_root_links_and_version(bridge) -> None:
    body = bridge.get(SYS).json()
    assert body["version"] == f"mtango-bridge {__version__}"
    assert body["stats"] == f"{bridge.base}{SYS}/stats"
    assert sorted(body["cache"]) == ["attributes", "devices", "pvs"]
    for url in [body["stats"], body["config"], *body["active"]]:
        assert bridge.get(url.removeprefix(bridge.base)).status == 200


def test_config_is_the_effective_configuration(bridge, tango_host) -> None:
    body = bridge.get(f"{SYS}/config").json()
    assert body["tango_host"] == tango_host
    assert body["app_base"] == "/tango/rest"
    assert body["error_status"] == "rc3"
    assert body["version"] == __version__
    # The allow-list in force, not the empty default that stands for "only TANGO_HOST".
    assert body["tango_hosts"] == [tango_host]


def test_redaction_hides_secret_values_only() -> None:
    settings = {"password": "x", "api_token": "t", "port": 8000, "nested": {"secret": "s"},
                "auth_token": ""}
    assert redact(settings) == {"password": "***", "api_token": "***", "port": 8000,
                                "nested": {"secret": "***"}, "auth_token": ""}


def test_stats_count_requests_and_responses(bridge, device_path) -> None:
    before = bridge.get(f"{SYS}/stats").json()
    for _ in range(3):
        assert bridge.get(f"{device_path}/state").status == 200
    assert bridge.get("/tango/rest/nothing/here").status == 404
    after = bridge.get(f"{SYS}/stats").json()
    assert after["requests"] >= before["requests"] + 5  # 3 + 404 + the first stats call
    assert after["responses"]["404"] >= before["responses"].get("404", 0) + 1
    endpoint = "/tango/rest/rc3/hosts/<host>/<port>/devices/<domain>/<family>/<member>/state"
    counted = after["endpoints"][endpoint]
    assert counted["count"] >= before["endpoints"].get(endpoint, {"count": 0})["count"] + 3
    assert counted["latency"]["p50_ms"] > 0
    assert counted["latency"]["p50_ms"] <= counted["latency"]["p99_ms"]
    assert after["uptime"] >= 0 and after["running_since"].endswith("Z")
    assert after["resource"]["rss_bytes"] > 10_000_000
    assert after["proxies"]["devices"] >= 1
    assert after["upstream"]["calls"]["tango"] >= 3
    assert list(after["workers"]) == ["main"]


def test_cache_and_clean(bridge, device_path) -> None:
    assert bridge.get(f"{device_path}/attributes/long_scalar/info").status == 200
    info = bridge.get(f"{SYS}/cache/attributes").json()
    assert set(info) == {"hits", "misses", "currsize", "maxsize"}
    assert info["currsize"] >= 1 and info["maxsize"] == bridge.config.attribute_cache_size
    assert info == bridge.tango.attributes.info()
    reply = bridge.get(f"{SYS}/clean/attributes")
    assert reply.status == 204 and reply.body == b""
    assert bridge.get(f"{SYS}/cache/attributes").json()["currsize"] == 0
    assert len(bridge.tango.attributes) == 0
    # The device cache was left alone.
    assert bridge.get(f"{SYS}/cache/devices").json()["currsize"] >= 1


def test_unknown_cache_is_404_with_the_error_body(bridge) -> None:
    reply = bridge.get(f"{SYS}/cache/teapots")
    assert reply.status == 404
    assert reply.json()["errors"][0]["reason"] == "UnknownCache"


def test_metrics_are_prometheus_text(bridge, device_path) -> None:
    bridge.get(f"{device_path}/state")
    reply = bridge.get("/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain")
    text = reply.body.decode()
    for name in ("mtango_http_requests_total", "mtango_http_request_duration_seconds_bucket",
                 "mtango_cache_hits_total", "mtango_upstream_calls_total",
                 "mtango_epics_channels", "mtango_epics_subscriptions"):
        assert name in text, name
    assert 'status="200"' in text


def test_health(bridge) -> None:
    assert bridge.get("/health/live").json() == {"status": "live"}
    reply = bridge.get("/health/ready")
    assert reply.status == 200
    assert reply.json()["checks"]["tango"] == "ok"


def test_ready_is_503_when_the_database_is_unreachable(tmp_path) -> None:
    from mtango.config import Config
    from tests.bridge import InProcessBridge, free_port

    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    running = InProcessBridge(Config(tango_host=dead, tango_timeout_ms=500)).start()
    try:
        reply = running.get("/health/ready")
        assert reply.status == 503
        body = reply.json()
        assert body["quality"] == "FAILURE" and body["checks"]["tango"] == "failed"
        assert running.get("/health/live").status == 200
    finally:
        running.stop()


@pytest.fixture(scope="module")
def two_workers(control_system, tmp_path_factory):
    log = tmp_path_factory.mktemp("sys") / "main.log"
    process = MainProcess(["--workers", "2"], child_env(TANGO_HOST=control_system.tango_host), log)
    try:
        process.wait_ready()
        # Both workers are up when both report a start time.
        poll("both workers in /sys/stats",
             lambda: len(process.get(f"{SYS}/stats").json()["workers"]) >= 2, timeout=60)
        yield process
    finally:
        assert process.stop() == 0


def test_figures_are_for_all_workers(two_workers, host_path) -> None:
    """Requests land on either worker; every worker's /sys/stats shows the same whole."""
    state = f"{host_path}/devices/sys/tg_test/1/state"
    def stats_once_both_served() -> dict | None:
        for _ in range(10):
            assert two_workers.get(state).status == 200
        stats = two_workers.get(f"{SYS}/stats").json()
        # /sys/stats requests count too, so a worker may have served requests but no state read:
        # wait until each has a device proxy of its own (CI saw one worker with none).
        workers = stats["workers"].values()
        return stats if all(f["requests"] and f["proxies"]["devices"] for f in workers) else None

    stats = poll("both workers read the device", stats_once_both_served, timeout=60, interval=0)
    served = {w: figures["requests"] for w, figures in stats["workers"].items()}
    assert len(served) == 2
    assert sum(served.values()) == stats["requests"]
    assert sum(f["proxies"]["devices"] for f in stats["workers"].values()) == \
        stats["proxies"]["devices"]
    # Every worker has its own device proxy, and the total says so.
    assert stats["proxies"]["devices"] == 2


def test_clean_empties_every_worker(two_workers, host_path) -> None:
    info = f"{host_path}/devices/sys/tg_test/1/attributes/double_scalar/info"
    def both_caches_filled() -> bool:
        two_workers.get(info)
        per_worker = two_workers.get(f"{SYS}/stats").json()["workers"]
        return all(f["proxies"]["attributes"] for f in per_worker.values())

    poll("the attribute cache of both workers filled", both_caches_filled, timeout=60, interval=0)
    assert two_workers.get(f"{SYS}/cache/attributes").json()["currsize"] == 2
    assert two_workers.get(f"{SYS}/clean/attributes").status == 204
    for _ in range(4):  # whichever worker answers, the cache is empty everywhere
        assert two_workers.get(f"{SYS}/cache/attributes").json()["currsize"] == 0


def test_metrics_include_every_worker(two_workers) -> None:
    text = two_workers.get("/metrics").body.decode()
    workers = {line.split('worker="')[1].split('"')[0]
               for line in text.splitlines() if line.startswith("mtango_started_at_seconds")}
    assert len(workers) == 2


def test_config_file_values_show_in_sys_config(control_system, tmp_path) -> None:
    config_file = tmp_path / "bridge.yaml"
    config_file.write_text(yaml.safe_dump({"history_depth": 7, "error_status": "rc4"}))
    process = MainProcess(["--workers", "1", "--config", str(config_file)],
                          child_env(TANGO_HOST=control_system.tango_host), tmp_path / "main.log")
    try:
        process.wait_ready()
        body = json.loads(process.get(f"{SYS}/config").body)
        assert body["history_depth"] == 7 and body["error_status"] == "rc4"
        assert body["workers"] == 1
    finally:
        assert process.stop() == 0


def test_percentiles_interpolate_within_histogram_buckets() -> None:
    from mtango.stats import percentile

    buckets = [(0.001, 0.0), (0.01, 50.0), (0.1, 100.0), (float("inf"), 100.0)]
    assert percentile(buckets, 0.5) == pytest.approx(0.01)
    assert percentile(buckets, 0.75) == pytest.approx(0.055)
    assert percentile([(0.1, 0.0), (float("inf"), 0.0)], 0.5) is None
    # Everything past the last finite bound: the bound is the best estimate there is.
    assert percentile([(0.1, 0.0), (float("inf"), 10.0)], 0.9) == pytest.approx(0.1)


def test_ready_is_503_shutting_down_once_the_server_stops(bridge) -> None:
    """The marker main.py leaves on SIGTERM (tests/test_shutdown.py runs the real sequence):
    every check is skipped, the answer is the documented NotReady body."""
    import jsonschema
    import yaml

    from mtango.api.swagger import SWAGGER_DIR
    from mtango.shutdown import STOPPING_FILE

    marker = bridge.app.ctx.run_dir / STOPPING_FILE
    marker.touch()
    try:
        reply = bridge.get("/health/ready")
        assert bridge.get("/health/live").status == 200
    finally:
        marker.unlink()
    assert reply.status == 503
    body = reply.json()
    assert body["checks"] == {"shutdown": "stopping"}
    assert [e["reason"] for e in body["errors"]] == ["ShuttingDown"]
    spec = yaml.safe_load((SWAGGER_DIR / "ops.yaml").read_text())
    jsonschema.validate(body, {"$ref": "#/components/schemas/NotReady",
                               "components": spec["components"]})
    assert bridge.get("/health/ready").status == 200


def test_an_in_process_server_removes_its_own_run_directory(control_system, monkeypatch,
                                                            tmp_path) -> None:
    """Without main.py's MTANGO_RUN_DIR an app makes a run directory of its own and removes it
    when it stops; main.py's shared one is left to main.py, which made it."""
    from mtango.config import Config
    from tests.bridge import InProcessBridge

    def run_dir_after_a_stop() -> Path:
        bridge = InProcessBridge(Config(tango_host=control_system.tango_host)).start()
        try:
            assert bridge.get("/health/live").status == 200
            directory = bridge.app.ctx.run_dir
            assert (directory / "subscriptions").is_dir()
        finally:
            bridge.stop()
        return directory

    monkeypatch.delenv("MTANGO_RUN_DIR", raising=False)
    assert not run_dir_after_a_stop().exists()
    monkeypatch.setenv("MTANGO_RUN_DIR", str(tmp_path / "shared"))
    assert run_dir_after_a_stop() == tmp_path / "shared"
    assert (tmp_path / "shared").is_dir()
