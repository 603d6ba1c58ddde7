"""Starting child processes that die with their parent, even when it is SIGKILLed."""

from __future__ import annotations

import os
import sys

DIE_WITH_PARENT = """\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):  # the parent died before the signal was armed
    os._exit(1)
os.execv(sys.argv[2], sys.argv[2:])
"""
"""Arms the kernel's parent-death signal, then becomes the real command (same pid).

Used instead of a `preexec_fn`: forking a process that runs gRPC's threads runs
gRPC's fork handlers in the child, and those abort now and then
(`Check failed: next_worker->state == KICKED`). Without a `preexec_fn` Python
spawns with vfork, which runs no fork handlers. The death signal follows the
thread that spawned the child, so spawn from a thread that lives as long as the
parent (the main thread, or the event loop's)."""


def die_with_parent(command: list[str]) -> list[str]:
    """`command`, run so that the kernel SIGKILLs it when this process dies (on Linux).

    `command[0]` must be an absolute path (it is exec'd without a PATH search).
    """
    if not sys.platform.startswith("linux"):
        return command
    return [sys.executable, "-S", "-c", DIE_WITH_PARENT, str(os.getpid()), *command]
