"""Child processes that stop when the process that started them is gone, even by SIGKILL.

A program killed with SIGKILL cannot stop its children: Sanic's workers would keep serving the
port, the demo's database and servers would run on. Linux can signal a child when its parent
dies (``prctl(PR_SET_PDEATHSIG)``); the request survives ``exec``, so a child makes it first and
then becomes its program: ``python -m mtango.lifeline PARENT_PID -- PROGRAM ARGS...``.

The kernel's "parent" is the *thread* that started the child: only children started from a
thread that lives as long as its process (the main thread) may use this. Elsewhere than Linux
nothing is set up and children behave as before.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence

_PR_SET_PDEATHSIG = 1


def stop_with_parent(parent_pid: int | None, sig: int = signal.SIGTERM) -> bool:
    """Have the kernel send ``sig`` to this process when its parent dies; whether it could.

    ``parent_pid`` is the parent expected: if it is already gone (this process was adopted before
    asking), the signal is sent at once, as it would have been.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if parent_pid is not None and os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)
    return True


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3 or args[1] != "--" or not args[0].isdigit():
        sys.exit("usage: python -m mtango.lifeline PARENT_PID -- PROGRAM [ARGS...]")
    stop_with_parent(int(args[0]))
    program = args[2:]
    os.execvp(program[0], program)


if __name__ == "__main__":
    main()
