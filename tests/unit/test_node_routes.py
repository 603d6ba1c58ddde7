"""The node's routing table on disk and its rules, and fencing per target.

RoutesStore: a table is written atomically before it is used, read back by the
next start, refused when older (or the same generation with other content), and
an unreadable file is set aside. TargetFences: a request routed with an older
generation than its target's (re)assignment is refused; other targets' changes do
not fence it.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from edgefleet_contract.desired import AgentWant, ModelWant, NodeDesired, compare
from edgefleet_contract.routing import AgentRoute, DeploymentRoutes, RoutingIndex
from edgefleet_contract.routing_table import ReplicaRoute, RoutingTable, TargetRoutes
from node_agent.errors import StaleGeneration
from node_agent.fencing import TargetFences
from node_agent.routes_store import RoutesStore

pytestmark = pytest.mark.timeout(30)


def table(generation: int, *nodes: str) -> RoutingTable:
    replicas = tuple(
        ReplicaRoute(node_id=n, address=f"10.0.0.{i}:7443", generation=3)
        for i, n in enumerate(nodes, 1)
    )
    deployment = DeploymentRoutes(
        name="shop", distributed=True, agents=(AgentRoute(name="helper"),)
    )
    return RoutingTable(
        generation=generation,
        controller_id="ctl",
        index=RoutingIndex(deployments=(deployment,)),
        targets=(TargetRoutes(name="helper", kind="agent", replicas=replicas),),
        api_key_digests=("ab" * 32,),
    )


# -- the routes store ------------------------------------------------------------------------


def test_a_table_is_saved_privately_before_use_and_read_back_by_the_next_start(
    tmp_path: Path,
) -> None:
    seen: list[int] = []

    async def scenario() -> None:
        store = RoutesStore(tmp_path, lambda t: seen.append(t.generation))
        assert (store.generation, await store.restore()) == (0, None)  # nothing saved yet
        assert await store.apply(table(4, "n1", "n2")) is True
        assert store.table == table(4, "n1", "n2")
        mode = stat.S_IMODE(os.stat(store.path).st_mode)
        assert mode == 0o600, oct(mode)
        # Nothing of the atomic write is left beside it.
        assert os.listdir(store.path.parent) == [store.path.name]

        restarted = RoutesStore(tmp_path)
        assert await restarted.restore() == table(4, "n1", "n2")
        assert restarted.generation == 4

    asyncio.run(scenario())
    assert seen == [4]


def test_older_tables_are_refused_and_the_same_one_changes_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = RoutesStore(tmp_path)
        await store.apply(table(5, "n1"))
        saved = store.path.read_bytes()
        with pytest.raises(StaleGeneration, match="generation 4 is older than the 5"):
            await store.apply(table(4, "n1"))
        with pytest.raises(StaleGeneration, match="already applied with other content"):
            await store.apply(table(5, "n1", "n2"))
        # The same content, even from another controller id, is the table in use.
        assert await store.apply(table(5, "n1").model_copy(update={"controller_id": "x"})) is False
        assert (store.table, store.path.read_bytes()) == (table(5, "n1"), saved)
        assert await store.apply(table(6, "n2")) is True
        assert RoutesStore(tmp_path).read() == table(6, "n2")

    asyncio.run(scenario())


def test_an_unreadable_saved_table_is_set_aside_and_the_node_starts_without_one(
    tmp_path: Path,
) -> None:
    store = RoutesStore(tmp_path)
    store.path.parent.mkdir(parents=True)
    store.path.write_bytes(b'{"generation": "many", \xff')
    assert asyncio.run(store.restore()) is None
    assert store.generation == 0
    kept = [p.name for p in store.path.parent.iterdir()]
    assert len(kept) == 1, kept
    assert kept[0].startswith("routing-table.json.unreadable-"), kept


# -- fencing per target -----------------------------------------------------------------------

MODEL = ModelWant(alias="tiny")
HELPER = AgentWant(name="helper", model="tiny")
NOTES = AgentWant(name="notes", model="tiny")


def desired(generation: int, *agents: AgentWant) -> NodeDesired:
    return NodeDesired(generation=generation, models=(MODEL,), agents=agents)


def apply(fences: TargetFences, old: NodeDesired, new: NodeDesired) -> None:
    fences.applied(new, compare(old, new))


def test_a_target_is_fenced_at_the_generation_that_last_assigned_it() -> None:
    fences = TargetFences()
    one = desired(1, HELPER)
    apply(fences, NodeDesired(), one)
    # Another agent arrives at 2: the helper, untouched, still takes requests routed at 1.
    two = desired(2, HELPER, NOTES)
    apply(fences, one, two)
    assert (fences.since("agent", "helper"), fences.since("agent", "notes")) == (1, 2)
    fences.check("agent", "helper", 1)
    with pytest.raises(StaleGeneration, match=r"agent `notes` was reassigned .* generation 2"):
        fences.check("agent", "notes", 1)
    # The helper changes at 3 (new instructions): a table made before that is refused.
    three = desired(3, HELPER.model_copy(update={"instructions": "Be brief."}), NOTES)
    apply(fences, two, three)
    with pytest.raises(StaleGeneration, match="routed with generation 2"):
        fences.check("agent", "helper", 2)
    fences.check("agent", "helper", 3)
    fences.check("agent", "helper", 0)  # 0: any (direct callers)
    fences.check("model", "tiny", 1)


def test_a_target_that_moved_away_and_back_refuses_the_old_routes() -> None:
    fences = TargetFences()
    one, two, three = desired(1, HELPER), desired(2), desired(3, HELPER)
    apply(fences, NodeDesired(), one)
    apply(fences, one, two)
    assert fences.since("agent", "helper") is None
    fences.check("agent", "helper", 1)  # gone: the host answers NOT_FOUND, not the fence
    apply(fences, two, three)
    with pytest.raises(StaleGeneration):
        fences.check("agent", "helper", 2)


def test_after_a_restart_every_target_is_fenced_at_the_saved_generation() -> None:
    fences = TargetFences()
    fences.restored(desired(7, HELPER, NOTES))
    assert {fences.since("agent", "helper"), fences.since("model", "tiny")} == {7}
    with pytest.raises(StaleGeneration):
        fences.check("model", "tiny", 6)
    fences.check("model", "tiny", 7)
