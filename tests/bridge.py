"""Run the real bridge for tests: in-process on a background event loop, or as ``main.py``.

The in-process bridge is the app ``create_app`` builds, served by Sanic on a loopback socket from a
thread; tests talk to it over real HTTP and may also look inside (``app.ctx.tango``) to check
caches and de-duplication. ``MainProcess`` runs ``python main.py`` exactly as an operator does.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sanic import Sanic

from mtango.app import create_app
from mtango.config import Config
from mtango.demo.stack import ManagedProcess

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(method: str, url: str, headers: dict[str, str] | None = None,
         timeout: float = 20.0, body: Any = None) -> Reply:
    """One HTTP request on a connection of its own; non-2xx statuses are replies, not exceptions.

    ``body``: bytes as they are, anything else as JSON."""
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, {k.lower(): v for k, v in response.headers.items()},
                         response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())


def poll(what: str, probe: Callable[[], Any], timeout: float = 30.0,
         interval: float = 0.1) -> Any:
    """Ask until ``probe`` returns a true value and return it; fail with ``what`` when time is up.

    Tests wait on conditions, never for fixed times: this is the one loop they all use.
    """
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: still {last!r} after {timeout} s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class InProcessBridge:
    def __init__(self, config: Config) -> None:
        # Several apps start in one test process. Outside test mode Sanic's TouchUp recompiles the
        # protocol methods it already rewrote for the first app, and the second start fails
        # (KeyError 'http1_request_header'); test mode makes it start from the originals each time.
        Sanic.test_mode = True
        self.config = config
        self.app = create_app(config)
        self.loop = asyncio.new_event_loop()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self._server: Any = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> InProcessBridge:
        async def start() -> Any:
            server = await self.app.create_server(
                sock=self.sock, return_asyncio_server=True, access_log=False
            )
            await server.startup()
            await server.before_start()
            await server.after_start()
            return server

        self._server = self.loop.run_until_complete(start())
        self._thread.start()
        return self

    def stop(self) -> None:
        async def stop() -> None:
            await self._server.before_stop()
            await self._server.close()
            await self._server.after_stop()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def run(self, coroutine: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the bridge's own loop (to reach its backends)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    @property
    def tango(self) -> Any:
        return self.app.ctx.tango

    def get(self, path: str, **kwargs: Any) -> Reply:
        return http("GET", self.base + path, **kwargs)


class MainProcess:
    """``python main.py ...`` as a child process, stopped with SIGTERM like a container would."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path,
                 python: str = sys.executable, root: Path = ROOT, port: int | None = None) -> None:
        """``port``: the one to listen on (a replica restarted where its load balancer expects
        it); a free one by default."""
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [python, str(root / "main.py"), "--host", "127.0.0.1",
                 "--port", str(self.port), *args],
                env=env, cwd=str(root), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # A process group of its own, as in a container: a stop signal that comes while
                # Sanic is stopping makes it SIGKILL its workers' whole process group, which
                # would otherwise be the test runner's.
                start_new_session=True,
            )

    def wait_ready(self, path: str = "/tango/rest/rc3/hosts", timeout: float = 60.0) -> Reply:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"main.py exited early:\n{self.log.read_text()}")
            try:
                reply = self.get(path, timeout=2)
                if reply.status == 200:
                    return reply
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"main.py did not answer {path}:\n{self.log.read_text()}")

    def get(self, path: str, **kwargs: Any) -> Reply:
        return http("GET", self.base + path, **kwargs)

    def stop(self, timeout: float = 20.0) -> int:
        ManagedProcess("main.py", self.process, self.log).stop(timeout)
        return self.process.returncode


def child_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any bridge setting, plus ``extra``. SIGTERM stops
    at once (``shutdown_drain_s`` 0) unless ``extra`` says otherwise: tests/test_shutdown.py is
    about the drain, the others should not wait for it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TANGO_", "EPICS_", "MTANGO_"))}
    env[NO_DRAIN] = "0"
    env.update(extra)
    return env


NO_DRAIN = "MTANGO_SHUTDOWN_DRAIN_S"
