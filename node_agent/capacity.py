"""What this box has: processors, memory and accelerators."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True, slots=True)
class Capacity:
    """A reading of the box's resources."""

    cpu_count: int
    memory_total_bytes: int
    memory_available_bytes: int
    accelerators: tuple[str, ...]


def accelerators() -> tuple[str, ...]:
    """GPUs and NPUs this box exposes (by device files; no vendor tools needed)."""
    found: list[str] = []
    nvidia = sorted(Path("/dev").glob("nvidia[0-9]*"))
    found += [f"nvidia:{p.name.removeprefix('nvidia')}" for p in nvidia]
    if Path("/dev/kfd").exists():
        found.append("amd:rocm")
    found += [f"dri:{p.name}" for p in sorted(Path("/dev/dri").glob("renderD*"))]
    found += [f"npu:{p.name}" for p in sorted(Path("/dev/accel").glob("accel*"))]
    if not nvidia and shutil.which("nvidia-smi"):
        found.append("nvidia:driver")
    return tuple(found)


def read_capacity() -> Capacity:
    """The box's capacity right now (available memory changes; the rest rarely)."""
    memory = psutil.virtual_memory()
    return Capacity(
        cpu_count=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1,
        memory_total_bytes=int(memory.total),
        memory_available_bytes=int(memory.available),
        accelerators=accelerators(),
    )
