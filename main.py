"""mtango-bridge: serve a Tango control system (mTango REST rc3) over HTTP + JSON.

Usage: ``python main.py --host H --port P --workers N`` with TANGO_HOST in the environment.
Without any TANGO_HOST (flag, environment or configuration file) an embedded demo control system
is started on 127.0.0.1 and served instead. ``python main.py --help`` lists every option.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from mtango import __version__
from mtango.config import ERROR_STATUS_MODES, Config, ConfigError, load_config

log = logging.getLogger("mtango")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py",
        description="HTTP + JSON bridge to Tango (mTango REST API rc3). Settings come from conf.py "
        "defaults, then the --config YAML file, then environment variables (TANGO_HOST, "
        "MTANGO_<SETTING>, e.g. MTANGO_PORT), then these flags. Without a TANGO_HOST an embedded "
        "demo control system is started on 127.0.0.1. Also: 'main.py hash-password' (a password on "
        "standard input to the hash a users file keeps) and 'main.py new-token' (a Bearer token "
        "and its digest).",
    )
    add = parser.add_argument
    add("--config", metavar="FILE", help="YAML file with settings (keys as in conf.py)")
    add("--host", help="address to listen on (default 0.0.0.0; env MTANGO_HOST)")
    add("--port", type=int, help="TCP port to listen on (default 8000; env MTANGO_PORT)")
    add("--workers", type=int, help="worker processes (default 2; env MTANGO_WORKERS)")
    add("--tango-host", metavar="HOST:PORT",
        help="Tango database to serve (env TANGO_HOST; HOST:PORT,HOST2:PORT2 for one database "
        "with fail-over hosts); none: start the embedded demo")
    add("--tango-hosts", metavar="LIST",
        help="comma-separated allow-list of Tango databases the bridge may contact "
        "(env MTANGO_TANGO_HOSTS; default: only the --tango-host)")
    add("--app-base", metavar="PATH", help="URL prefix of the APIs (default /tango/rest)")
    add("--error-status", choices=ERROR_STATUS_MODES,
        help="HTTP status of Tango failures: rc3 = 200 (default, like mTango), rc4 = 400/404/503")
    add("--cors-origins", metavar="LIST",
        help="comma-separated origins allowed by CORS (default *; env MTANGO_CORS_ORIGINS)")
    add("--proxies-count", type=int, metavar="N",
        help="proxies in front whose X-Forwarded-For/-Proto/-Host are believed (default 0: none; "
        "1 behind nginx or an ingress; env MTANGO_PROXIES_COUNT)")
    add("--epics-ca-addr-list", metavar="LIST",
        help="EPICS CA search addresses, host[:port] (env EPICS_CA_ADDR_LIST); none: EPICS off, "
        "or a demo IOC with the embedded Tango demo")
    add("--writes", choices=("off", "on"),
        help="let write endpoints write (default off: every write is 403; env MTANGO_WRITES)")
    add("--auth", choices=("none", "basic"),
        help="none (default), or basic: users of --users-file log in (HTTP Basic or Bearer "
        "tokens; env MTANGO_AUTH)")
    add("--users-file", metavar="FILE",
        help="YAML file of users, password hashes, token digests and roles (env "
        "MTANGO_USERS_FILE)")
    add("--read-access", choices=("anonymous", "authenticated"),
        help="who may read (default anonymous; env MTANGO_READ_ACCESS)")
    add("--audit-log", metavar="FILE",
        help="file every write attempt is appended to as a JSON line (default: standard error; "
        "env MTANGO_AUDIT_LOG)")
    add("--debug", action="store_true", default=None, help="Sanic debug mode and verbose logs")
    add("--version", action="version", version=f"mtango-bridge {__version__}")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    overrides = {
        "host": args.host,
        "port": args.port,
        "workers": args.workers,
        "tango_host": args.tango_host,
        "tango_hosts": args.tango_hosts,
        "app_base": args.app_base,
        "error_status": args.error_status,
        "cors_origins": args.cors_origins,
        "proxies_count": args.proxies_count,
        "epics_ca_addr_list": args.epics_ca_addr_list,
        "writes": args.writes,
        "auth": args.auth,
        "users_file": args.users_file,
        "read_access": args.read_access,
        "audit_log": args.audit_log,
        "debug": args.debug,
    }
    return load_config(args.config, overrides={k: v for k, v in overrides.items() if v is not None})


def serve(config: Config, when_ready: Callable[[], None] | None = None) -> None:
    """Run Sanic with ``config.workers`` processes; each builds its own app and backends.

    The workers share a run directory (created here, removed at exit): their metrics live there
    (prometheus-client multiprocess mode) so that /sys and /metrics speak for the whole server,
    and so do the orders that empty every worker's caches. The variables must be set before
    prometheus_client is imported, in this process and in the spawned workers.
    """
    remove_stale_run_dirs(Path(tempfile.gettempdir()))
    run = Path(tempfile.mkdtemp(prefix=RUN_DIR_PREFIX))
    (run / "metrics").mkdir()
    (run / OWNER_FILE).write_text(_process_identity(os.getpid()) or "")
    os.environ["MTANGO_RUN_DIR"] = str(run)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(run / "metrics")
    os.environ["MTANGO_STARTED_AT"] = repr(time.time())
    os.environ["MTANGO_MAIN_PID"] = str(os.getpid())
    try:
        _serve(config, when_ready)
    finally:
        shutil.rmtree(run, ignore_errors=True)


RUN_DIR_PREFIX = "mtango-run-"
OWNER_FILE = "owner"  # "<pid> <start time in clock ticks>" of the main process that made it


def _process_identity(pid: int) -> str | None:
    """``"pid start"`` of a running process (Linux), None if there is none: a pid alone may
    have been given to another process since."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; the fields after it do not.
    return f"{pid} {stat.rsplit(')', 1)[1].split()[19]}"


def remove_stale_run_dirs(tmp: Path) -> list[Path]:
    """Remove the run directories that a main process killed outright (SIGKILL, OOM) left behind.

    Only directories of this user whose owner file names a process that no longer runs: those
    of a live bridge, of another user, or without an owner file (a bridge of an older version,
    or one still starting) are left alone. Returns the directories removed.
    """
    removed = []
    if not Path("/proc/self/stat").exists():
        return removed  # no way to tell a live owner from a dead one
    for path in tmp.glob(f"{RUN_DIR_PREFIX}*"):
        try:
            if path.is_symlink() or path.stat().st_uid != os.getuid():
                continue
            owner = (path / OWNER_FILE).read_text().strip()
            pid = int(owner.split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if _process_identity(pid) != owner:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _serve(config: Config, when_ready: Callable[[], None] | None) -> None:
    from sanic import Sanic
    from sanic.worker.loader import AppLoader

    from mtango.app import create_app

    _patch_worker_manager(when_ready, config.shutdown_drain_s)
    loader = AppLoader(factory=partial(create_app, config, "mtango_bridge"))
    app = loader.load()
    app.prepare(
        host=config.host,
        port=config.port,
        workers=config.workers,
        debug=config.debug,
        access_log=config.debug,
        motd=False,
    )
    Sanic.serve(primary=app, app_loader=loader)


_when_workers_ready: list[Callable[[], None]] = []
_drain_s: list[float] = [0.0]


def _patch_worker_manager(when_ready: Callable[[], None] | None, drain_s: float = 0.0) -> None:
    """Run ``when_ready`` once every worker has acknowledged its start; hold SIGTERM/SIGINT back
    while Sanic's worker manager talks to its shared state.

    Ready: a worker acknowledges after its ``before_server_start`` listeners (the backends are
    built) and the main process already listens on the port, so from then on a request is
    served. The first start of a fresh environment takes seconds before that (measured up to
    8 s with the demo), which is why the URLs are printed here and not before serving.

    Signals: the manager polls a multiprocessing-manager dict (``wait_for_ack``, then every
    monitor cycle in ``_sync_states`` and ``_cleanup_non_tracked_workers``); its signal handler
    writes to the same dict, so a stop signal arriving during one of those calls interleaves two
    calls on one connection and the main process hangs for good (sanic-org/sanic issue 2997; seen
    here with a SIGTERM right after the first answer, and once right after the URL banner). During
    those calls a signal is only noted; it is handled as soon as the call is over.

    SIGTERM drains first (``_draining``): readiness fails at once, the workers stop
    ``drain_s`` seconds later.
    """
    from sanic.worker.manager import WorkerManager

    _when_workers_ready[:] = [when_ready] if when_ready else []
    _drain_s[0] = drain_s
    if getattr(WorkerManager.wait_for_ack, "_mtango_held", False):
        return
    _draining(WorkerManager)
    held_wait = _holding_stop_signals(WorkerManager.wait_for_ack)

    def wait_for_ack(self: WorkerManager) -> None:
        held_wait(self)
        if not self._shutting_down:
            for callback in _when_workers_ready:
                callback()

    wait_for_ack._mtango_held = True  # type: ignore[attr-defined]
    WorkerManager.wait_for_ack = wait_for_ack  # type: ignore[method-assign]
    for name in ("_sync_states", "_cleanup_non_tracked_workers"):
        setattr(WorkerManager, name, _holding_stop_signals(getattr(WorkerManager, name)))


def _draining(manager_class: Any) -> None:
    """SIGTERM (Kubernetes, docker stop): every worker's ``/health/ready`` answers 503 from now on
    (``mtango.shutdown``), and the workers go on serving for ``shutdown_drain_s`` while load
    balancers stop sending new requests and streams; then Sanic's own shutdown stops them (their
    streams get a final event: ``mtango.app.end_streams``). The manager's monitor loop, which
    looks for messages ten times a second, starts that shutdown when the time is up: not the
    signal handler, which must not talk to the manager's shared state (see above), nor a thread.
    SIGINT, a second SIGTERM, or no drain time: Sanic's shutdown at once."""
    from mtango.shutdown import mark_stopping

    stop_now = manager_class.shutdown_signal
    poll = manager_class._poll_monitor

    def shutdown_signal(self: Any, signum: int, frame: Any) -> None:
        run = os.environ.get("MTANGO_RUN_DIR")
        if run:
            mark_stopping(Path(run))
        draining = getattr(self, "_mtango_drain_until", None) is not None
        if signum != signal.SIGTERM or draining or self._shutting_down or _drain_s[0] <= 0:
            stop_now(self, signum, frame)
            return
        self._mtango_drain_until = time.monotonic() + _drain_s[0]
        log.info("SIGTERM: /health/ready answers 503 from now on; serving on for %g s "
                 "(shutdown_drain_s), then stopping", _drain_s[0])

    # Sanic's shutdown talks to the shared state: a signal meanwhile waits for it to finish.
    held_stop = _holding_stop_signals(stop_now)

    def poll_monitor(self: Any) -> Any:
        cycle = poll(self)
        until = getattr(self, "_mtango_drain_until", None)
        if until is not None and not self._shutting_down and time.monotonic() >= until:
            held_stop(self, signal.SIGTERM, None)
        return cycle

    manager_class.shutdown_signal = shutdown_signal
    manager_class._poll_monitor = poll_monitor


def _holding_stop_signals(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` of the worker manager with SIGINT/SIGTERM noted meanwhile, handled after."""

    def held(self: Any, *args: Any) -> Any:
        pending: list[int] = []
        previous = {
            signum: signal.signal(signum, lambda number, _frame: pending.append(number))
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            return method(self, *args)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if pending:
                self.shutdown_signal(pending[0], None)

    return held


def epics_urls(config: Config, demo_ioc: bool) -> list[str]:
    shown = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else config.host
    base = f"http://{shown}:{config.port}/epics/rest/v1"
    if not config.epics_configured:
        return ["  EPICS:          off (no EPICS_CA_ADDR_LIST configured)"]
    where = ", ".join(config.epics_ca_addr_list) or "auto address list"
    lines = [
        f"  EPICS ({where}" + (", demo IOC)" if demo_ioc else ")"),
        f"  EPICS health:   {base}/health",
    ]
    if demo_ioc:
        from mtango.demo.ioc import DEMO_PREFIX

        lines += [
            f"  A PV:           {base}/pvs/{DEMO_PREFIX}double",
            f"  A counter:      {base}/pvs/{DEMO_PREFIX}counter/value",
            f"  PV metadata:    {base}/pvs/{DEMO_PREFIX}double/info",
            f"  Many PVs:       {base}/pvs/value?pv={DEMO_PREFIX}enum&pv={DEMO_PREFIX}waveform"
            f"&pv={DEMO_PREFIX}string",
            f"  pvws WebSocket: ws://{shown}:{config.port}/pvws/pv   (send {{\"type\": "
            f"\"subscribe\", \"pvs\": [\"{DEMO_PREFIX}counter\"]}})",
        ]
    return lines


def print_urls(config: Config, demo: bool, demo_ioc: bool = False) -> None:
    shown = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else config.host
    base = f"http://{shown}:{config.port}{config.app_base}"
    tango_host, tango_port = config.served_tango_host.rsplit(":", 1)
    device = f"{base}/rc3/hosts/{tango_host}/{tango_port}/devices/sys/tg_test/1"
    lines = [
        f"mtango-bridge {__version__} serving Tango database {config.served_tango_host}"
        + (" (embedded demo)" if demo else "")
        + "".join(f" (fail-over host: {h})" for h in config.failover_tango_hosts[1:]),
        f"  Web page:       http://{shown}:{config.port}/   (open it in a browser)",
        f"  API root:       {base}",
        f"  Tango hosts:    {base}/rc3/hosts",
        f"  Devices:        {base}/rc3/hosts/{tango_host}/{tango_port}/devices",
    ]
    if demo:
        from mtango.demo import ALARM_DEVICE

        target = json.dumps([{"host": config.served_tango_host, "device": "sys/tg_test/1",
                              "attribute": "pushed_counter", "type": "change"}])
        root = f"http://{shown}:{config.port}"
        lines += [
            f"  Demo device:    {device}",
            f"  A value:        {device}/attributes/double_scalar/value",
            f"  A live value:   {device}/attributes/polled_counter/value",
            f"  Long poll:      {device}/attributes/pushed_counter/change?state=INITIAL",
            f"  Alarm device:   {base}/rc3/hosts/{tango_host}/{tango_port}/devices/{ALARM_DEVICE}",
            "  Subscribe:      curl -X POST " + root + "/tango/subscriptions -d '" + target + "'",
            f"    then:         curl -N {root}/tango/subscriptions/<id>/event-stream",
        ]
    lines += epics_urls(config, demo_ioc)
    root = f"http://{shown}:{config.port}"
    if demo and demo_ioc:
        from mtango.demo.ioc import DEMO_PREFIX

        watched = f"tango={config.served_tango_host}/sys/tg_test/1/pushed_counter"
        lines.append(f"  One stream:     curl -N '{root}/live/stream?{watched}"
                     f"&pv={DEMO_PREFIX}counter'")
    writes = "off" if config.writes != "on" else (
        "ON, for anyone (auth: none)" if config.auth == "none" else "on, for users with a write "
        "role")
    lines += [
        f"  Writes:         {writes}; auth {config.auth}, reads {config.read_access}",
        f"  Swagger UI:     {root}/swagger/",
        f"  Statistics:     {base}/sys/stats   (metrics: {root}/metrics)",
    ]
    print("\n".join(lines), flush=True)


def hash_password_command() -> int:
    """``python main.py hash-password``: a password from standard input (asked for without echo
    on a terminal) to its argon2id hash, printed on the last line, for the users file."""
    from getpass import getpass

    from mtango.security.passwords import hash_password

    if sys.stdin.isatty():
        password = getpass("Password: ")
        if getpass("Again: ") != password:
            print("main.py: the passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("main.py: an empty password is not a password", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


def new_token_command() -> int:
    """``python main.py new-token``: a random token for ``Authorization: Bearer`` and, on the
    last line, its SHA-256 digest, which is what the users file keeps (``tokens: [...]``)."""
    import secrets

    from mtango.security.users import token_digest

    token = secrets.token_urlsafe(32)
    print(f"token (give it to the client; it is not kept): {token}")
    print(token_digest(token))
    return 0


WRITES_WARNING = """\
WARNING: writes are ON and auth is none: anyone who can reach this bridge may write attributes,
run commands and put PVs. Set MTANGO_AUTH=basic and MTANGO_USERS_FILE to require users, or
MTANGO_WRITES=off. Every write attempt is audited ({audit})."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["hash-password"]:
        return hash_password_command()
    if argv[:1] == ["new-token"]:
        return new_token_command()
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except (ConfigError, OSError) as exc:
        print(f"main.py: configuration error: {exc}", file=sys.stderr)
        return 2
    if config.writes == "on" and config.auth == "none":
        print(WRITES_WARNING.format(audit=config.audit_log or "standard error"), file=sys.stderr,
              flush=True)
    logging.basicConfig(level=logging.DEBUG if config.debug else logging.INFO)
    # Sanic gives its loggers (sanic.root, sanic.error, ...) their own handlers and lets them
    # propagate: through the root handler above every line of the main process was written twice
    # ("Server Stopped" and "INFO:sanic.root:Server Stopped"). They stop at their parent, "sanic",
    # which Sanic's logging configuration does not touch.
    logging.getLogger("sanic").propagate = False
    demo = ioc = None
    if not config.tango_host:
        from mtango.demo import start_tango_demo

        print("No TANGO_HOST configured: starting the embedded demo control system...", flush=True)
        demo = start_tango_demo()
        config = config.replace(tango_host=demo.tango_host)
        if not config.epics_configured:
            # The demo's IOC: on loopback, on its own port, the only address the bridge may use.
            from mtango.demo.ioc import start_ioc

            try:
                ioc = start_ioc("caproto", workdir=demo.workdir)
            except Exception:
                demo.stop()
                raise
            config = config.replace(epics_ca_addr_list=(ioc.address,))
    supervisor = None
    if demo is not None:
        from mtango.demo.stack import Supervisor

        supervisor = Supervisor(demo, [ioc] if ioc is not None else []).start()
    try:
        serve(config, partial(print_urls, config, demo is not None, ioc is not None))
    finally:
        if supervisor is not None:
            supervisor.stop()
        if ioc is not None:
            ioc.stop()
        if demo is not None:
            demo.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
elif __name__ == "__mp_main__" and os.environ.get("MTANGO_MAIN_PID"):
    # A process Sanic started for this program (a worker, the manager of their shared state):
    # it stops with the main process, even when that one is killed and cannot stop it.
    from mtango.lifeline import stop_with_parent

    stop_with_parent(int(os.environ["MTANGO_MAIN_PID"]))
