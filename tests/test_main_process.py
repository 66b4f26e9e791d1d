"""``python main.py`` as an operator runs it: worker processes, configuration layers, the demo.

Each test starts the real program as a child process and talks to it over HTTP, then stops it with
SIGTERM (what a container runtime sends) and checks that it exited cleanly.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import main as main_module
from mtango.demo import DEMO_DEVICE
from tests.bridge import NO_DRAIN, ROOT, MainProcess, child_env, free_port, http, poll

OPTIONS = (
    "--host", "--port", "--workers", "--config", "--tango-host", "--tango-hosts", "--app-base",
    "--error-status", "--cors-origins", "--proxies-count", "--writes", "--auth", "--users-file",
    "--read-access", "--audit-log", "--debug", "--version", "--help",
)


def stop_cleanly(process: MainProcess, timeout: float = 20.0) -> None:
    """SIGTERM; the program must exit by itself with status 0 (MainProcess kills it otherwise)."""
    code = process.stop(timeout)
    assert code == 0, f"main.py exited with {code}:\n{process.log.read_text(errors='replace')}"




def ready_bridge(tmp_path: Path, control_system, workers: int) -> MainProcess:
    """main.py serving the session's Tango database, once it answers (stopped if it never does)."""
    main = MainProcess(["--workers", str(workers)],
                       child_env(TANGO_HOST=control_system.tango_host), tmp_path / "main.log")
    try:
        main.wait_ready()
    except BaseException:
        main.stop()
        raise
    return main


def descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid`` (from /proc), as pid -> start time (to tell reused pids)."""
    parents: dict[int, list[int]] = {}
    started: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid ...
        parents.setdefault(int(fields[1]), []).append(int(entry))
        started[int(entry)] = fields[19]
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found[child] = started[child]
            todo.append(child)
    return found


def alive(pid: int, start_time: str) -> bool:
    """True while that very process runs (a zombie has exited; a reused pid is another one)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[19] == start_time and fields[0] not in ("Z", "X")


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def test_help_lists_every_option():
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--help"],
        capture_output=True, text=True, env=child_env(), cwd=str(ROOT), timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for option in OPTIONS:
        assert re.search(rf"(^|[\s\[,]){re.escape(option)}\b", result.stdout), option
    assert "TANGO_HOST" in result.stdout and "MTANGO_" in result.stdout


def test_bad_configuration_stops_at_start(tmp_path, control_system):
    config = tmp_path / "bad.yaml"
    config.write_text("error_status: rc5\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--config", str(config)],
        capture_output=True, text=True, env=child_env(TANGO_HOST=control_system.tango_host),
        cwd=str(ROOT), timeout=60,
    )
    assert result.returncode == 2
    assert "error_status" in result.stderr


def test_malformed_yaml_is_a_one_line_configuration_error(tmp_path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text("port: 8000\nworkers: [1, 2\n")  # an unclosed flow sequence
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--config", str(config)],
        capture_output=True, text=True, env=child_env(TANGO_HOST="127.0.0.1:1"),
        cwd=str(ROOT), timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("main.py: configuration error:"), lines
    assert str(config) in lines[0] and "YAML" in lines[0]


def test_tango_host_without_port_means_port_10000(tmp_path) -> None:
    """Tango's own rule: ``TANGO_HOST=name`` is ``name:10000``; the banner shows that form."""
    main = MainProcess(["--workers", "1"], child_env(TANGO_HOST="nohostport"),
                       tmp_path / "main.log")
    try:
        hosts = main.wait_ready().json()
        assert hosts == {"nohostport:10000":
                         f"{main.base}/tango/rest/rc3/hosts/nohostport/10000"}
        poll("the banner with the normalized host", lambda: (
            f"{main.base}/tango/rest/rc3/hosts/nohostport/10000/devices" in main.log.read_text()))
    finally:
        stop_cleanly(main)


def test_two_workers(tmp_path, control_system, proxy):
    main = MainProcess(
        ["--workers", "2"], child_env(TANGO_HOST=control_system.tango_host), tmp_path / "main.log"
    )
    try:
        hosts = main.wait_ready()
        assert hosts.json() == {
            control_system.tango_host: f"{main.base}/tango/rest/rc3/hosts/"
            f"{control_system.db_host}/{control_system.db_port}"
        }
        assert hosts.headers.get("x-mtango", "").startswith("mtango-bridge")
        # Both workers came up (each logs its own "Worker ready").
        poll("two workers", lambda: main.log.read_text().count("Worker ready") >= 2, 60)

        device = (f"/tango/rest/rc3/hosts/{control_system.db_host}/{control_system.db_port}"
                  f"/devices/{DEMO_DEVICE}")
        for _ in range(4):  # several connections: whichever worker answers, the same results
            state = main.get(f"{device}/state")
            assert state.status == 200 and state.headers.get("x-mtango")
            assert state.json()["state"] == proxy.state().name
            value = main.get(f"{device}/attributes/long64_scalar/value")
            assert value.status == 200
            assert value.json()["value"] == proxy.read_attribute("long64_scalar").value
            assert value.json()["quality"] == "ATTR_VALID"
    finally:
        stop_cleanly(main)
    assert not port_open("127.0.0.1", main.port)


def test_urls_are_printed_when_the_workers_answer(tmp_path, control_system):
    """The banner is the operator's signal that the bridge serves: its URLs answer at once."""
    main = MainProcess(
        ["--workers", "2"], child_env(TANGO_HOST=control_system.tango_host), tmp_path / "main.log"
    )
    try:
        line = poll("the URL banner", lambda: re.search(r"Tango hosts: +(\S+)",
                                                        main.log.read_text()), timeout=60)
        reply = http("GET", line.group(1))  # once, no retry: it must answer now
        assert reply.status == 200 and control_system.tango_host in reply.json()
    finally:
        stop_cleanly(main)


def test_configuration_layers(tmp_path, control_system):
    """YAML < environment < flags, observed through the running program."""
    yaml_port, env_port = free_port(), free_port()
    config = tmp_path / "bridge.yaml"
    config.write_text(
        "error_status: rc4\n"
        f"port: {yaml_port}\n"
        "tango_host: 127.0.0.1:1\n"  # overridden by TANGO_HOST in the environment
        "workers: 1\n"
    )
    env = child_env(TANGO_HOST=control_system.tango_host, MTANGO_PORT=str(env_port))
    main = MainProcess(["--config", str(config)], env, tmp_path / "main.log")
    try:
        hosts = main.wait_ready()  # listens on --port, not the YAML's nor MTANGO_PORT's
        assert list(hosts.json()) == [control_system.tango_host]  # env beats YAML
        assert not port_open("127.0.0.1", yaml_port)
        assert not port_open("127.0.0.1", env_port)
        prefix = f"/tango/rest/rc3/hosts/{control_system.db_host}/{control_system.db_port}"
        unknown = main.get(f"{prefix}/devices/no/such/device/state")
        assert unknown.status == 404, unknown.body  # rc4, from the YAML file
        assert unknown.json()["quality"] == "FAILURE"
        assert main.get(f"{prefix}/devices/{DEMO_DEVICE}/state").json()["state"] == "ON"
    finally:
        stop_cleanly(main)


def test_demo_without_tango_host(tmp_path):
    """No TANGO_HOST anywhere: main.py starts the demo, serves it, and takes it down on SIGTERM."""
    env = child_env()
    assert not any(k.startswith(("TANGO_", "MTANGO_")) for k in env if k != NO_DRAIN)
    main = MainProcess(["--workers", "1"], env, tmp_path / "demo.log")
    try:
        hosts = main.wait_ready(timeout=90).json()
        assert len(hosts) == 1
        (tango_host, host_url), = hosts.items()
        db_host, db_port = tango_host.rsplit(":", 1)
        assert host_url == f"{main.base}/tango/rest/rc3/hosts/{db_host}/{db_port}"

        output = poll("the URL banner", lambda: "Swagger UI:" in main.log.read_text()
                      and main.log.read_text())
        assert "embedded demo" in output
        for url in (f"{main.base}/tango/rest", f"{main.base}/tango/rest/rc3/hosts",
                    f"{main.base}/tango/rest/rc3/hosts/{db_host}/{db_port}/devices/{DEMO_DEVICE}"):
            assert url in output, output

        state = main.get(f"/tango/rest/rc3/hosts/{db_host}/{db_port}/devices/{DEMO_DEVICE}/state")
        assert state.status == 200
        assert state.json()["state"] == "ON"

        children = descendants(main.process.pid)
        assert len(children) >= 3, children  # database, device server, Sanic worker(s)
        assert port_open(db_host, int(db_port))
    except BaseException:
        main.stop()
        raise
    stop_cleanly(main)

    left = wait_for_gone(children)
    assert not left, f"processes left behind after SIGTERM: {left}"
    assert not port_open(db_host, int(db_port)), "the demo Tango database still listens"


@pytest.fixture
def own_tmp() -> Iterator[Path]:
    """A TMPDIR of the test's own (a short path: sockets may be made in it)."""
    directory = Path(tempfile.mkdtemp(prefix="sigkill-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_sigkill_leaves_nothing_behind(tmp_path, own_tmp):
    """Killed outright (SIGKILL, the OOM killer), main.py cannot stop anything: its workers and the
    demo's database, device server and IOC stop by themselves (mtango.lifeline), so nothing keeps
    serving or holding the ports."""
    # Its run directory in a TMPDIR of its own: in the shared one, a bridge that another test
    # process starts meanwhile may remove it first (it removes every stale one it finds there).
    main = MainProcess(["--workers", "2"], child_env(TMPDIR=str(own_tmp)), tmp_path / "demo.log")
    try:
        (tango_host, _), = main.wait_ready(timeout=90).json().items()
        db_host, db_port = tango_host.rsplit(":", 1)
        children = descendants(main.process.pid)
        # database, device server, IOC, Sanic's two workers and the manager of their state
        assert len(children) >= 6, {pid: _cmdline(pid) for pid in children}
    except BaseException:
        main.stop()
        raise
    owner = main_module._process_identity(main.process.pid)
    run_dirs = [p for p in own_tmp.glob("mtango-run-*")
                if _read(p / main_module.OWNER_FILE) == owner]
    assert len(run_dirs) == 1, run_dirs
    main.process.kill()
    main.process.wait()
    left = wait_for_gone(children)
    assert not left, f"processes left behind after SIGKILL: {left}"
    assert not port_open(db_host, int(db_port)), "the demo Tango database still listens"
    assert not port_open("127.0.0.1", main.port), "a worker still serves HTTP"
    # Its run directory is the one thing left; the next bridge to start removes it.
    assert run_dirs[0].is_dir()
    assert run_dirs[0] in main_module.remove_stale_run_dirs(own_tmp)
    assert not run_dirs[0].exists()


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def test_only_run_directories_of_dead_main_processes_are_removed(tmp_path) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    dead_pid = int(finished.stdout)
    me = main_module._process_identity(os.getpid())
    assert me is not None and me.split()[0] == str(os.getpid())
    pid, start = me.split()
    owners = {
        "live": me,
        "dead": f"{dead_pid} 12345",
        "reused-pid": f"{pid} {int(start) + 1}",  # this pid, but another process's start time
        "no-owner": None,
        "not-a-pid": "starting",
    }
    for name, owner in owners.items():
        directory = tmp_path / f"mtango-run-{name}"
        (directory / "metrics").mkdir(parents=True)
        if owner is not None:
            (directory / main_module.OWNER_FILE).write_text(owner)
    (tmp_path / "other-dir").mkdir()
    (tmp_path / "mtango-run-link").symlink_to(tmp_path / "mtango-run-dead")

    removed = main_module.remove_stale_run_dirs(tmp_path)
    assert sorted(p.name for p in removed) == ["mtango-run-dead", "mtango-run-reused-pid"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mtango-run-link", "mtango-run-live", "mtango-run-no-owner", "mtango-run-not-a-pid",
        "other-dir"]


def test_a_lifeline_child_stops_with_its_parent(tmp_path):
    """``python -m mtango.lifeline PID -- program``: the program runs under its own name, and
    gets SIGTERM when the process that started it dies."""
    parent_code = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-m', 'mtango.lifeline', str(os.getpid()),"
        " '--', 'sleep', '120'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], cwd=str(ROOT),
                              stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        started = descendants(parent.pid)[child]
        assert poll("the program running", lambda: _cmdline(child).startswith("sleep 120"))
    finally:
        parent.kill()
        parent.wait()
    assert not wait_for_gone({child: started}), "the child outlived its parent"


def wait_for_gone(processes: dict[int, str], timeout: float = 15.0) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    left = dict(processes)
    while left and time.monotonic() < deadline:
        left = {pid: st for pid, st in left.items() if alive(pid, st)}
        if left:
            time.sleep(0.1)
    return {pid: _cmdline(pid) for pid in left}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "?"


def test_sigterm_right_after_the_first_answer(tmp_path, control_system):
    """A stop signal while Sanic still waits for its workers' start-up acknowledgement.

    The workers answer HTTP before the manager has their ACK; a SIGTERM in that window used to hang
    the main process for good (sanic-org/sanic#2997), leaving a supervisor only SIGKILL.
    """
    stop_cleanly(ready_bridge(tmp_path, control_system, workers=2))


def test_main_process_log_lines_appear_once(tmp_path, control_system):
    """Sanic's own lines of the main process (signal, goodbye) are written once, not also by the
    root handler main.py sets up for the bridge's loggers."""
    main = ready_bridge(tmp_path, control_system, workers=1)
    stop_cleanly(main)
    lines = main.log.read_text(errors="replace").splitlines()
    for text in ("Received signal SIGTERM", "Server Stopped"):
        assert sum(text in line for line in lines) == 1, "\n".join(lines)


def test_demo_children_that_die_are_reaped_and_started_again(tmp_path):
    """A crashed demo device server or IOC is neither left a zombie nor gone for good."""
    main = MainProcess(["--workers", "1"], child_env(), tmp_path / "demo.log")
    try:
        (tango_host, _), = main.wait_ready(timeout=90).json().items()
        db_host, db_port = tango_host.rsplit(":", 1)
        state_path = f"/tango/rest/rc3/hosts/{db_host}/{db_port}/devices/{DEMO_DEVICE}/state"
        pv_path = "/epics/rest/v1/pvs/demo:double/value"
        assert main.get(state_path).json()["state"] == "ON"
        assert main.get(pv_path).status == 200
        children = {pid: _cmdline(pid) for pid in descendants(main.process.pid)}
        victims = [pid for pid, cmd in children.items()
                   if "mtango.demo.tangotest" in cmd or "mtango.demo.ioc" in cmd]
        assert len(victims) == 2, children
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        poll("killed children reaped (no zombie left)",
             lambda: not [p for p in victims if Path(f"/proc/{p}").exists()], timeout=20)
        poll("the device answers again",
             lambda: main.get(state_path).json().get("state") == "ON", timeout=60)
        poll("the PV answers again", lambda: main.get(pv_path).status == 200, timeout=60)
        restarted = {pid: _cmdline(pid) for pid in descendants(main.process.pid)}
        assert len([c for c in restarted.values() if "mtango.demo.tangotest" in c]) == 1
    finally:
        main.stop()
