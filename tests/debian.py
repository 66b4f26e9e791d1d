"""Debian packages the tests need beyond Python (Chromium, nginx): installed with apt-get when
missing and the tests run as root (CI machines start without them), as the README's one test
command promises. A file lock per program serializes the install between pytest-xdist workers.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path


def ensure_program(what: str, find: Callable[[], str | None],
                   choices: list[list[str]]) -> tuple[str | None, str]:
    """(path of ``what``, "") or (None, why it cannot be had). ``find`` looks for it; ``choices``
    are the package sets to install, tried in turn until ``find`` finds it (a package whose
    service fails to start still leaves its program)."""
    found = find()
    if found:
        return found, ""
    if not shutil.which("apt-get"):
        return None, f"{what} is not installed and there is no apt-get to install it"
    if os.geteuid() != 0:
        return None, (f"{what} is not installed; install it with: sudo apt-get install "
                      f"{' '.join(choices[0])}")
    lock_path = Path(tempfile.gettempdir()) / f"mtango-{what}-install.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = find()
        if found:
            return found, ""
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        log: list[str] = []

        def run(*command: str) -> None:
            done = subprocess.run(list(command), env=env, capture_output=True, text=True,
                                  timeout=900, stdin=subprocess.DEVNULL)
            log.append(f"$ {' '.join(command)} ({done.returncode})\n"
                       f"{done.stdout[-2000:]}{done.stderr[-2000:]}")

        run("apt-get", "update", "-q")
        for packages in choices:
            run("apt-get", "install", "-y", "-q", "--no-install-recommends", *packages)
            found = find()
            if found:
                return found, ""
    return None, f"apt-get could not install {what}:\n" + "\n".join(log)
