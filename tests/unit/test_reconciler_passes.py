"""Reconciler passes carried out on a real store and event log, with no node connected."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.events import EventLog
from orchestrator.fleet.fleet import Fleet
from orchestrator.manifest import LoadedManifest, load_text
from orchestrator.reconciler import Reconciler
from orchestrator.store import SqliteStore

FLEET = """
deployment:
  type: distributed-edge
  name: fleet
  models:
    - {alias: small, memory: 256MiB}
  agents:
    - {name: greeter, model: small, instructions: Be kind.}
    - {name: notes, model: small}
  nodes:
    - {id: n1, agents: [greeter], models: [small]}
    - {id: n2, agents: [notes], models: [small]}
"""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore.open(tmp_path / "controller.db") as opened:
        yield opened


def add(store: SqliteStore, loaded: LoadedManifest) -> None:
    store.add_revision(
        loaded.desired.name,
        source=loaded.source,
        manifest=loaded.text,
        desired_json=loaded.desired.model_dump_json(),
        digest=hashlib.sha256(loaded.text.encode()).hexdigest(),
        cause="apply",
    )


def passes(store: SqliteStore, *manifests: str, again: int = 0) -> tuple[Reconciler, list[str]]:
    """A new reconciler's pass after each manifest is stored, then `again` more passes;
    the reconciler and every event recorded."""

    async def scenario() -> Reconciler:
        events = EventLog(store)
        fleet = Fleet(
            controller_id=store.controller_id,
            channel_factory=lambda node, address: None,
            events=events,
            failure_timeout=lambda: 5.0,
            on_change=lambda: None,
        )
        reconciler = Reconciler(store, fleet, events, local_node="local")
        for text in manifests:
            add(store, load_text(text, source="fleet.yaml"))
            await reconciler.reconcile_once()
        for _ in range(again):
            await reconciler.reconcile_once()
        return reconciler

    reconciler = asyncio.run(scenario())
    return reconciler, [e.message for e in reversed(store.events(limit=100))]


def test_a_pass_stores_each_node_a_generation_and_records_its_steps(store: SqliteStore) -> None:
    reconciler, events = passes(store, FLEET)
    generations = {node: d.generation for node, d in reconciler.assignment.items()}
    assert generations == {"n1": 1, "n2": 2}
    assert {n: row.generation for n, row in store.assignment().items()} == generations
    assert {d.controller_id for d in reconciler.assignment.values()} == {store.controller_id}
    assert "starting agent greeter on n1" in "\n".join(events)
    assert "starting agent notes on n2" in "\n".join(events)


def test_passes_over_the_same_desired_state_change_nothing(store: SqliteStore) -> None:
    once, events_once = passes(store, FLEET)
    again, events_again = passes(store, again=2)  # also a restarted controller
    assert again.assignment == once.assignment
    assert events_again == events_once
    assert store.last_generation() == 2


def test_an_edit_renumbers_only_the_node_it_changes(store: SqliteStore) -> None:
    reconciler, events = passes(store, FLEET, FLEET.replace("Be kind.", "Be brief."))
    assert {n: d.generation for n, d in reconciler.assignment.items()} == {"n1": 3, "n2": 2}
    assert reconciler.assignment["n1"].agents[0].instructions == "Be brief."
    assert [e for e in events if "updating" in e] == [
        "updating agent greeter on n1 (changed: instructions)"
    ]
