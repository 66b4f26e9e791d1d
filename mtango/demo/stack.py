"""Start a real Tango control system on loopback: a database and device servers.

Used by the embedded demo (``main.py`` without a TANGO_HOST), by the test fixtures and by the
benchmarks, so all three run exactly the same stack. Everything listens on 127.0.0.1 with ports the
OS picks; nothing reads the caller's TANGO_HOST. Processes are children of the caller and are
stopped by ``ControlSystem.stop`` (also registered with ``atexit``).
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
log = logging.getLogger("mtango.demo")
_DB_PORT_LINE = re.compile(rb"port=(\d+)")


class StackError(RuntimeError):
    """A part of the demo/test control system did not start."""


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for child processes, without any outside control-system address."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TANGO_", "EPICS_"))}
    env.update(extra)
    return env


def wait_until(predicate, timeout: float, what: str, process: subprocess.Popen | None = None):
    """Poll ``predicate`` until it returns a true value; fail clearly when time runs out."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise StackError(f"{what}: process exited with code {process.returncode}")
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last_error = exc
        time.sleep(0.05)
    raise StackError(f"{what}: not ready after {timeout:.0f} s ({last_error})")


@dataclass
class ManagedProcess:
    name: str
    process: subprocess.Popen
    log: Path
    args: list[str] = field(default_factory=list)  # the program, as asked for (to start it again)

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


@dataclass
class DeviceServer:
    """A running device server and the devices it serves, by class name."""

    server: str
    devices: dict[str, list[str]]
    managed: ManagedProcess
    env: dict[str, str]

    @property
    def device_names(self) -> list[str]:
        return [d for names in self.devices.values() for d in names]


@dataclass
class ControlSystem:
    """A Tango database and the device servers registered in it."""

    db_host: str
    db_port: int
    workdir: Path
    processes: list[ManagedProcess] = field(default_factory=list)
    servers: dict[str, DeviceServer] = field(default_factory=dict)

    @property
    def tango_host(self) -> str:
        return f"{self.db_host}:{self.db_port}"

    def trl(self, device: str) -> str:
        """Full Tango resource locator, so clients need no TANGO_HOST."""
        return f"tango://{self.tango_host}/{device}"

    def database(self):
        import tango

        return tango.Database(self.db_host, self.db_port)

    def add_server(
        self,
        server: str,
        devices: Mapping[str, Iterable[str]],
        module: str = "mtango.demo.tangotest",
        device_properties: Mapping[str, Mapping[str, list[str]]] | None = None,
        attribute_properties: Mapping[str, Mapping[str, Mapping[str, list[str]]]] | None = None,
        timeout: float = 30.0,
        python_path: Iterable[str] = (),
    ) -> DeviceServer:
        """Register ``server`` ("Executable/instance") with its devices and start it.

        ``module`` is run as ``python -m module <instance>``; it must serve the named classes.
        """
        import tango

        db = self.database()
        by_class = {cls: list(names) for cls, names in devices.items()}
        infos = []
        for cls, names in by_class.items():
            for name in names:
                info = tango.DbDevInfo()
                info.name, info._class, info.server = name, cls, server
                infos.append(info)
        db.add_server(server, infos, with_dserver=True)
        for device, props in (device_properties or {}).items():
            db.put_device_property(device, dict(props))
        for device, per_attr in (attribute_properties or {}).items():
            db.put_device_attribute_property(device, {a: dict(p) for a, p in per_attr.items()})
        instance = server.split("/", 1)[1]
        managed_env = self._server_env(python_path)
        managed = self._spawn(
            f"server-{server.replace('/', '-')}",
            [sys.executable, "-m", module, instance, "-ORBendPoint", f"giop:tcp:{LOOPBACK}:0"],
            managed_env,
        )
        ds = DeviceServer(server, by_class, managed, managed_env)
        self.servers[server] = ds
        self.wait_for_devices(ds, timeout)
        return ds

    def wait_for_devices(self, ds: DeviceServer, timeout: float = 30.0) -> None:
        import tango

        for name in ds.device_names:
            wait_until(
                lambda n=name: tango.DeviceProxy(self.trl(n)).ping() >= 0,
                timeout,
                f"device {name}",
                ds.managed.process,
            )

    def stop_server(self, server: str) -> None:
        self.servers[server].managed.stop()

    def restart_server(self, server: str, timeout: float = 30.0) -> None:
        ds = self.servers[server]
        ds.managed.stop()
        ds.managed = self._spawn(ds.managed.name, ds.managed.args, ds.env)
        self.wait_for_devices(ds, timeout)

    def _server_env(self, python_path: Iterable[str]) -> dict[str, str]:
        paths = [str(_project_root()), *python_path]
        if os.environ.get("PYTHONPATH"):
            paths.append(os.environ["PYTHONPATH"])
        return clean_env(TANGO_HOST=self.tango_host, PYTHONPATH=os.pathsep.join(paths))

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> ManagedProcess:
        managed = spawn(name, args, env, self.workdir)
        self.processes.append(managed)
        return managed

    def stop(self) -> None:
        for managed in reversed(self.processes):
            managed.stop()
        self.processes.clear()


def _project_root() -> Path:
    return Path(__file__).resolve().parents[2]


class Supervisor:
    """Keeps the demo running: reaps children that died and starts crashed ones again.

    Without it a device server or IOC killed under the demo stayed a zombie until the bridge
    exited, and its devices were gone for good. Device servers and the IOC are started again (the
    devices are registered in the database already); the database itself keeps its content only
    in memory, so its death is reported, not repaired: restart the demo then.
    """

    def __init__(self, system: ControlSystem, iocs: Iterable[Any] = (), interval: float = 1.0):
        self.system, self.iocs, self.interval = system, list(iocs), interval
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-supervisor", daemon=True)
        self._thread.lifelong = True  # type: ignore[attr-defined]  # see spawn()
        self._database_reported = False

    def start(self) -> Supervisor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the supervisor must outlive one failed restart
                log.exception("demo supervisor: a restart failed; trying again")

    def check(self) -> None:
        for managed in list(self.system.processes):
            managed.process.poll()  # reaps it when it has exited
        database = self.system.processes[0] if self.system.processes else None
        if database is not None and database.process.returncode is not None:
            if not self._database_reported:
                self._database_reported = True
                log.error("demo: the Tango database exited (code %s); restart the demo",
                          database.process.returncode)
            return
        for name, server in self.system.servers.items():
            if self._stop.is_set():
                return
            if server.managed.process.poll() is not None:
                log.warning("demo: device server %s exited (code %s); starting it again",
                            name, server.managed.process.returncode)
                self.system.restart_server(name)
                self.restarts += 1
        for ioc in self.iocs:
            if not self._stop.is_set() and ioc.managed is not None and not ioc.running:
                log.warning("demo: IOC %s exited (code %s); starting it again",
                            ioc.address, ioc.managed.process.returncode)
                ioc.restart()
                self.restarts += 1


def start_database(
    workdir: Path | None = None, timeout: float = 30.0, database: str = ":memory:"
) -> ControlSystem:
    """Start PyDatabaseds on a free loopback port and wait until it answers.

    ``database`` is its sqlite file (in memory by default); two database servers given the same
    file are one Tango database reachable through two hosts (Tango's fail-over form).
    """
    import tango

    workdir = workdir or Path(tempfile.mkdtemp(prefix="mtango-stack-"))
    executable = Path(sys.executable).with_name("PyDatabaseds")
    command = [str(executable)] if executable.exists() else ["PyDatabaseds"]
    managed = spawn(
        "databaseds",
        [*command, "--port", "0", "--host", LOOPBACK, "--print-host-port", "2"],
        clean_env(PYTANGO_DATABASE_NAME=database),
        workdir,
    )
    process = managed.process

    def port_from_log() -> int | None:
        match = _DB_PORT_LINE.search(managed.log.read_bytes())
        return int(match.group(1)) if match else None

    try:
        port = wait_until(port_from_log, timeout, "Tango database port", process)
        wait_until(
            lambda: tango.Database(LOOPBACK, port).get_info(), timeout, "Tango database", process
        )
    except Exception:
        managed.stop()
        raise
    system = ControlSystem(LOOPBACK, port, workdir, [managed])
    atexit.register(system.stop)
    try:
        remove_stock_servers(system.database())
    except Exception:
        system.stop()
        raise
    return system


# What pytango-db's fresh database registers besides itself: a TangoTest and an access-control
# server that nothing here runs (listed, they only ever answer API_CantConnectToDevice). The
# stack keeps the database's own devices (sys/database/2, dserver/DataBaseds/2) and adds its own.
STOCK_SERVERS = ("TangoTest/test", "TangoAccessControl/1")


def remove_stock_servers(db) -> None:
    """Delete the stock servers and their devices (the dserver/... ones included)."""
    registered = set(db.get_server_list("*"))
    for server in STOCK_SERVERS:
        if server in registered:
            db.delete_server(server)


def free_port(host: str = LOOPBACK, udp: bool = False, attempts: int = 50) -> int:
    """A port free on ``host`` for TCP and, with ``udp``, for UDP too (CA servers use both)."""
    import socket

    for _ in range(attempts):
        with socket.socket() as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            if not udp:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dgram:
                try:
                    dgram.bind((host, port))
                except OSError:
                    continue
                return port
    raise StackError(f"no free port on {host} after {attempts} attempts")


def spawn(name: str, args: list[str], env: dict[str, str], workdir: Path) -> ManagedProcess:
    """Start a child process in its own session, output to ``workdir/<name>.log``.

    Its own session: a Ctrl-C in the terminal reaches only the bridge, which stops its children
    in order (device servers before the database). Started from the main thread, it also gets a
    lifeline (``mtango.lifeline``): should this process be killed without the chance to stop it,
    the child gets SIGTERM from the kernel.
    """
    log = workdir / f"{name}.log"
    command = list(args)
    thread = threading.current_thread()
    # The kernel ties the parent-death signal to the thread that started the child: only the main
    # thread, or a thread that lives as long as the process (the Supervisor's), may give one.
    if thread is threading.main_thread() or getattr(thread, "lifelong", False):
        command = [sys.executable, "-m", "mtango.lifeline", str(os.getpid()), "--", *command]
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(_project_root()),
            start_new_session=True,
        )
    return ManagedProcess(name, process, log, list(args))
