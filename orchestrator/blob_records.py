"""What the fleet learned about the blob behind each remote model source: its hash and size.

A source without a `sha256:` pin gets one the first time a node downloads it: the node
reports the hash it computed, the controller records it (store setting `blob/<source>`,
JSON `{"sha256", "size"}`) and hands it to every later download, which must match. A
record never overrides a manifest pin, and a node that reports another hash for a
pinned or recorded source changes no record: it is told as a disagreement (an event).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from edgefleet_contract.model_source import check_sha256, is_remote
from orchestrator.scheduler.model import KnownBlob

log = logging.getLogger(__name__)

KEY_PREFIX = "blob/"
"""Settings named `blob/<source>` hold the records."""


class Settings(Protocol):
    """The part of the state store records live in."""

    def get_setting(self, key: str) -> str | None: ...

    def set_setting(self, key: str, value: str) -> None: ...


@dataclass(frozen=True, slots=True)
class BlobReport:
    """What one node says of the blob it downloaded for a model."""

    node: str
    source: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class Disagreement:
    """A node's blob for a source is not the one the fleet expects."""

    node: str
    source: str
    expected: str
    reported: str
    pinned: bool
    """True: the manifest pins `expected`; False: the fleet learned it."""

    def message(self) -> str:
        """The event text."""
        whose = "the manifest pins" if self.pinned else "the fleet recorded"
        return (
            f"{self.node} reports sha256 {self.reported} for {self.source}, but {whose} "
            f"{self.expected}; the record is kept (if the file was replaced on purpose, "
            "pin the new hash with `sha256:` in the manifest)"
        )


def judge(
    reports: Iterable[BlobReport],
    pins: Mapping[str, str],
    records: Mapping[str, KnownBlob],
) -> tuple[dict[str, KnownBlob], list[Disagreement]]:
    """The records to write and the disagreements in these reports (pure).

    Reports are taken by node id: for a source nobody recorded, the first one becomes the
    record. A report that matches the record (or pin) only adds a size it lacked.
    """
    written: dict[str, KnownBlob] = {}
    found: list[Disagreement] = []
    for report in sorted(reports, key=lambda r: (r.source, r.node)):
        if not is_remote(report.source) or not _is_sha256(report.sha256):
            continue
        record = written.get(report.source) or records.get(report.source)
        pin = pins.get(report.source)
        expected = pin or (record.sha256 if record is not None else None)
        if expected is not None and report.sha256 != expected:
            found.append(
                Disagreement(report.node, report.source, expected, report.sha256, bool(pin))
            )
            continue
        learned = KnownBlob(report.sha256, report.size or (record.size if record else 0))
        if learned != record:
            written[report.source] = learned
    return written, found


class BlobRecords:
    """The records in the store, read once per source and kept in memory."""

    def __init__(self, store: Settings) -> None:
        self._store = store
        self._cache: dict[str, KnownBlob | None] = {}
        self._told: set[Disagreement] = set()

    def forget(self) -> None:
        """Read the store again on the next lookup (another controller may have written)."""
        self._cache.clear()

    def get(self, source: str) -> KnownBlob | None:
        """The record of a source, if any (an unreadable one counts as none)."""
        if source not in self._cache:
            self._cache[source] = _parse(self._store.get_setting(KEY_PREFIX + source), source)
        return self._cache[source]

    def lookup(self, sources: Iterable[str]) -> dict[str, KnownBlob]:
        """The records of the remote ones among `sources`."""
        found = {}
        for source in sources:
            if is_remote(source) and (record := self.get(source)) is not None:
                found[source] = record
        return found

    def learn(self, reports: Iterable[BlobReport], pins: Mapping[str, str]) -> list[Disagreement]:
        """Record what the reports teach; the disagreements not told before."""
        reports = list(reports)
        records = self.lookup({r.source for r in reports})
        written, found = judge(reports, pins, records)
        for source, record in written.items():
            value = json.dumps({"sha256": record.sha256, "size": record.size})
            self._store.set_setting(KEY_PREFIX + source, value)
            self._cache[source] = record
        new = [d for d in found if d not in self._told]
        self._told.update(new)
        return new


def _parse(text: str | None, source: str) -> KnownBlob | None:
    if text is None:
        return None
    try:
        data = json.loads(text)
        sha256, size = data["sha256"], data.get("size", 0)
        check_sha256(sha256)
        if not isinstance(size, int) or size < 0:
            raise ValueError("size is not a byte count")
    except (ValueError, KeyError, TypeError) as exc:
        log.warning(
            "ignoring an unreadable blob record", extra={"source": source, "error": str(exc)}
        )
        return None
    return KnownBlob(sha256, size)


def _is_sha256(text: str) -> bool:
    try:
        check_sha256(text)
    except ValueError:
        return False
    return True
