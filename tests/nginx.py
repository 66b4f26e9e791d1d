"""nginx for the tests: Debian's package, installed when missing (as tests/browser.py does for
Chromium), run in the foreground with everything it writes in one directory.

``Nginx`` runs ``deploy/nginx/mtango.conf``, the configuration the README recommends, with only
the replicas' addresses and the listen address replaced, inside a minimal ``nginx.conf`` of the
test's own that adds what tests need to see: which replica answered (``X-Upstream``: nginx's
``$upstream_addr``, every replica tried, comma-separated) and an access log that says the same.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.bridge import ROOT, free_port, http, poll
from tests.debian import ensure_program

CONFIG = ROOT / "deploy" / "nginx" / "mtango.conf"
SBIN = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
# The placeholders of the three replicas in deploy/nginx/mtango.conf, in order.
PLACEHOLDERS = ("10.0.0.11:8000", "10.0.0.12:8000", "10.0.0.13:8000")
LISTEN = "listen 80;"
# Which replica answered, for the tests (not part of the recommended configuration).
UPSTREAM_HEADER = "x-upstream"


def find_nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return next((path for path in SBIN if os.access(path, os.X_OK)), None)


def ensure_nginx() -> tuple[str | None, str]:
    """(path to nginx, "") or (None, why it cannot be had): Debian's ``nginx-light`` (else
    ``nginx``), installed when missing and running as root (tests/debian.py). Where the package's
    service starts, it is left alone: the tests run their own nginx on ports of their own."""
    return ensure_program("nginx", find_nginx, [["nginx-light"], ["nginx"]])


def site_config(replicas: list[str], listen: str, source: Path = CONFIG) -> str:
    """deploy/nginx/mtango.conf with the replicas' ``host:port`` and the listen address put in."""
    text = source.read_text()
    if len(replicas) != len(PLACEHOLDERS):
        raise ValueError(f"{len(PLACEHOLDERS)} replicas, not {len(replicas)}")
    for placeholder, address in zip(PLACEHOLDERS, replicas, strict=True):
        if placeholder not in text:
            raise AssertionError(f"{source} no longer names the replica {placeholder}")
        text = text.replace(placeholder, address)
    if text.count(LISTEN) != 1:
        raise AssertionError(f"{source}: expected one '{LISTEN}'")
    return text.replace(LISTEN, f"listen {listen};")


MAIN_CONFIG = """\
daemon off;
master_process on;
worker_processes 1;
{user}
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 1024; }}
http {{
    log_format upstreams '$request_method $request_uri $status "$upstream_addr" '
                         '"$upstream_status" $request_time';
    access_log {dir}/access.log upstreams;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    add_header X-Upstream $upstream_addr always;
    include {dir}/mtango.conf;
}}
"""


class Nginx:
    """nginx in the foreground on 127.0.0.1:<free port>, in front of ``replicas``."""

    def __init__(self, executable: str, directory: Path, replicas: list[str]) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        site = site_config(replicas, f"127.0.0.1:{self.port}")
        if re.search(r"^\s*add_header\b", site, re.MULTILINE):
            # The test's X-Upstream would not be inherited by a server or location that adds
            # headers of its own.
            raise AssertionError("mtango.conf adds headers: tests/nginx.py must add X-Upstream "
                                 "where it does")
        (self.dir / "mtango.conf").write_text(site)
        # Run as root, nginx's workers would be 'nobody', who cannot write in the tests' tmp.
        user = "user root;" if os.geteuid() == 0 else ""
        (self.dir / "nginx.conf").write_text(MAIN_CONFIG.format(dir=self.dir, user=user))
        self.log = self.dir / "nginx.out"
        command = [executable, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"),
                   "-e", str(self.dir / "error.log")]
        check = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t refused the configuration:\n{check.stderr}")
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_listening()

    def _wait_listening(self, timeout: float = 30.0) -> None:
        def listening() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited:\n{self.error_log()}")
            try:
                http("GET", f"{self.base}/health/live", timeout=5)
            except OSError:
                return False
            return True

        try:
            poll(f"nginx listening on {self.port}", listening, timeout)
        except AssertionError as exc:
            raise RuntimeError(f"{exc}\n{self.error_log()}") from None

    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def access_log(self) -> list[str]:
        path = self.dir / "access.log"
        return path.read_text(errors="replace").splitlines() if path.exists() else []

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: fast shutdown
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
