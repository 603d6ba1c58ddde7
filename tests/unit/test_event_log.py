"""EventLog: stored and handed to watchers; kept in the log when the store refuses it;
observations stored only by the leader; other controllers' events reach local watchers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.events import EventLog, LeaderEvents
from orchestrator.store import EventRow, SqliteStore, StoreError


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore.open(tmp_path / "controller.db") as opened:
        yield opened


class RefusingStore:
    """A store whose writes fail, as an etcd cluster without quorum does."""

    def add_event(self, **fields: object) -> EventRow:
        raise StoreError("the etcd cluster does not answer: the control plane is read-only")


def test_an_event_the_store_refuses_is_logged_not_lost(caplog: pytest.LogCaptureFixture) -> None:
    events = EventLog(RefusingStore())  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="orchestrator.events"):
        row = events.record("warning", "NodeSuspect", "node/n1", "n1 went quiet", node_id="n1")
    assert row.id == 0
    assert row.message == "n1 went quiet"
    messages = [r.getMessage() for r in caplog.records]
    assert "n1 went quiet" in messages
    assert any("event not stored" in m and "read-only" in m for m in messages)


def test_observations_are_stored_only_while_leading(store: SqliteStore) -> None:
    leading = False
    events = EventLog(store)
    observed = LeaderEvents(events, lambda: leading)
    observed.record("warning", "NodeSuspect", "node/n1", "seen by a standby")
    assert store.events() == []
    leading = True
    observed.record("warning", "NodeSuspect", "node/n1", "seen by the leader")
    assert [e.message for e in store.events()] == ["seen by the leader"]


def test_watchers_get_what_another_controller_stored(store: SqliteStore, tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        events = EventLog(store)
        seen: list[str] = []

        async def watch() -> None:
            async for row in events.follow(0):
                seen.append(row.message)
                if len(seen) == 3:
                    return

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.01)
        events.record("info", "Applied", "deployment/chat", "applied here")
        # Written by another controller sharing the store: this one learns of it by a
        # change notification and catches up.
        store.add_event(
            severity="info", reason="NodeReady", object="node/n2", message="from the leader"
        )
        events.catch_up()
        events.catch_up()  # twice: nothing is handed out twice
        events.record("info", "Applied", "deployment/chat", "applied again")
        await asyncio.wait_for(watcher, 3.0)
        return seen

    assert asyncio.run(scenario()) == ["applied here", "from the leader", "applied again"]
