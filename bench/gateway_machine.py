"""The machine bench/gateway.py runs on, and how busy other programs kept it meanwhile."""

from __future__ import annotations

import contextlib
import os
import platform
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import psutil

GiB = 1024**3


def describe(versions: dict[str, str]) -> dict[str, Any]:
    """CPU model, cores, memory, Python and gRPC, plus the given tool versions."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / GiB, 1),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        **versions,
    }


class OtherLoad:
    """Samples, once a second, the CPU time of every process outside this one's tree.

    Processes that start and end between two samples are missed, so the figure is a
    floor; a value well above zero says the figures were taken on a busy machine.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._seen: dict[int, float] = {}
        self._used = 0.0
        self._thread = threading.Thread(target=self._run, name="other-load", daemon=True)
        self._start = 0.0
        self._wall = 0.0

    def __enter__(self) -> OtherLoad:
        self._start = time.monotonic()
        self._sample()
        self._used = 0.0
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self._wall = time.monotonic() - self._start

    @property
    def percent(self) -> float:
        """CPU used by other processes, % of one core, over the measured time."""
        return 100 * self._used / self._wall if self._wall else 0.0

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def _sample(self) -> None:
        me = psutil.Process()
        ours = {me.pid, *(p.pid for p in me.children(recursive=True))}
        now: dict[int, float] = {}
        for process in psutil.process_iter():
            if process.pid in ours:
                continue
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                now[process.pid] = times.user + times.system
        for pid, used in now.items():
            if pid in self._seen:
                self._used += max(used - self._seen[pid], 0.0)
        self._seen = now
