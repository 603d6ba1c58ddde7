"""The state store a bench/controller_scale.py row runs on: SQLite (the controller's
default, a file in its data folder) or a real single-member etcd on loopback, started for
the row with tests/etcd_server.py's launcher (`/usr/bin/etcd`, free ports, its own data
folder) and stopped after it.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.etcd_server import EtcdCluster, etcd_binary

STORES = ("sqlite", "etcd")


@dataclass
class StoreUnderTest:
    """The store a row runs on: the controller's options and, for etcd, its server."""

    kind: str
    options: list[str]
    server: psutil.Process | None = None


def parse_stores(text: str) -> list[str]:
    """`sqlite`, `etcd` or both, comma-separated, in the order given."""
    chosen = list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    unknown = [s for s in chosen if s not in STORES]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"`{text}`: give the stores to compare, comma-separated: sqlite, etcd or sqlite,etcd"
        )
    return chosen


@contextlib.contextmanager
def store_for(kind: str, tmp: Path) -> Iterator[StoreUnderTest]:
    """SQLite in the controller's data folder, or a fresh single-member etcd on loopback
    (its own data folder under `tmp`), stopped on exit."""
    if kind == "sqlite":
        yield StoreUnderTest(kind, [])
        return
    base = tmp / "etcd"
    base.mkdir()
    cluster = EtcdCluster.start(base, size=1)
    try:
        process = cluster.members[0].process
        assert process is not None, "etcd did not start"
        yield StoreUnderTest(kind, ["--store", cluster.url], psutil.Process(process.pid))
    finally:
        cluster.stop()


def etcd_version() -> str | None:
    """The first line of `etcd --version`, or None without etcd."""
    binary = etcd_binary()
    if binary is None:
        return None
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.splitlines()[0] if done.stdout else None
