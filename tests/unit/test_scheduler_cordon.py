"""The scheduler and an operator's marks: a cordoned node gets no new replica (spread or
pinned) and keeps what runs there; a draining node's work moves make-before-break."""

from __future__ import annotations

from orchestrator.scheduler import NodeView, schedule
from tests.unit.test_scheduler import (
    DISTRIBUTED,
    SINGLE,
    agents_on,
    distributed,
    fleet,
    hosts,
    models_on,
    ready,
    rounds,
    step,
    steps,
    unplaced,
)

SPREAD = """
models: [{alias: small, memory: 256MiB}]
agents: [{name: spread, model: small, replicas: 2}]
nodes:
  - {id: n1, models: [small]}
  - {id: n2, models: [small]}
  - {id: n3}
coordination: {failover: automatic}
"""

PINNED = """
models: [{alias: small}]
agents: [{name: desk, model: small}]
nodes:
  - {id: home, agents: [desk], models: [small]}
  - {id: spare}
"""


def cordoned(node: str) -> NodeView:
    """A ready node an operator cordoned."""
    return NodeView(node, "ready", cordoned=True)


# -- cordon -----------------------------------------------------------------------------------


def test_a_cordoned_node_gets_no_spread_replica() -> None:
    free = schedule([distributed(SPREAD)], ready("n1", "n2", "n3"), {})
    assert hosts(free, "spread") == ["n1", "n2"]
    result = schedule([distributed(SPREAD)], [cordoned("n1"), *ready("n2", "n3")], {})
    assert hosts(result, "spread") == ["n2", "n3"]
    assert models_on(result, "n1") == []
    assert step(result, "load-model", "n3", "small").reason == "stands in for n1 (cordoned)"


def test_a_cordoned_node_keeps_what_runs_there() -> None:
    first = schedule([distributed(SPREAD)], ready("n1", "n2", "n3"), {})
    result = schedule([distributed(SPREAD)], [cordoned("n1"), *ready("n2", "n3")], first.assignment)
    assert result.assignment == first.assignment
    assert result.plan.steps == ()
    assert result.plan.unplaced == ()


def test_a_cordoned_pinned_node_gets_nothing_new_and_another_node_stands_in() -> None:
    result = schedule([distributed(PINNED)], [cordoned("home"), *ready("spare")], {})
    assert agents_on(result, "home") == []
    assert models_on(result, "home") == []
    assert agents_on(result, "spare") == ["desk"]
    assert step(result, "start-agent", "spare", "desk").reason == "stands in for home (cordoned)"
    assert result.plan.unplaced == ()
    # Scheduling the result again changes nothing.
    again = schedule([distributed(PINNED)], [cordoned("home"), *ready("spare")], result.assignment)
    assert again.plan.steps == ()


def test_a_cordoned_pinned_node_with_nowhere_else_leaves_the_work_unplaced() -> None:
    result = schedule([distributed(PINNED)], [cordoned("home")], {})
    assert result.assignment.get("home") is None or not result.assignment["home"].agents
    missing, reason = unplaced(result)[("agent", "desk")]
    assert missing == 1
    assert "node `home` is cordoned (it takes no new work until it is uncordoned)" in reason


def test_a_pinned_model_is_not_loaded_on_a_cordoned_node() -> None:
    text = """
models: [{alias: m}]
nodes:
  - {id: a, models: [m]}
  - {id: b, models: [m]}
  - {id: c}
"""
    result = schedule([distributed(text)], [cordoned("a"), *ready("b", "c")], {})
    assert models_on(result, "a") == []
    assert models_on(result, "b") == ["m"]
    assert models_on(result, "c") == ["m"]
    assert step(result, "load-model", "c", "m").reason == "stands in for a (cordoned)"


def test_uncordoning_fails_pinned_work_back_without_a_gap() -> None:
    stand_in, back, done = rounds(
        [distributed(PINNED)],
        [cordoned("home"), *ready("spare")],
        ready("home", "spare"),
        [NodeView("home", "ready", ready_agents=frozenset({"desk"})), *ready("spare")],
    )
    assert agents_on(stand_in, "spare") == ["desk"]
    # Back on its pinned node; the stand-in serves until the pinned replica is ready.
    assert agents_on(back, "home") == ["desk"]
    assert agents_on(back, "spare") == ["desk"]
    assert step(back, "start-agent", "home", "desk").reason == "failback to home"
    assert agents_on(done, "spare") == []
    assert step(done, "stop-agent", "spare", "desk").reason == "failed back to home"


def test_single_device_work_waits_for_a_cordoned_local_node() -> None:
    result = schedule([SINGLE], [cordoned("local")], {})
    assert agents_on(result, "local") == []
    missing, reason = unplaced(result)[("agent", "primary-agent")]
    assert missing == 1
    assert reason == "node `local` is cordoned (it takes no new work until it is uncordoned)"
    # What already runs on it stays.
    first = schedule([SINGLE], ready("local"), {})
    kept = schedule([SINGLE], [cordoned("local")], first.assignment)
    assert kept.plan.steps == ()


def test_a_cordoned_node_that_has_not_reported_gets_no_pinned_work() -> None:
    # An absent node gets its pinned work when it joins, unless it is cordoned (e.g. the
    # controller restarted and has not heard from it yet).
    waiting = schedule([distributed(PINNED)], ready("spare"), {})
    assert agents_on(waiting, "home") == ["desk"]
    result = schedule([distributed(PINNED)], [NodeView("home", "absent", cordoned=True)], {})
    assert agents_on(result, "home") == []
    # ... and keeps what it was running.
    kept = schedule(
        [distributed(PINNED)],
        [NodeView("home", "absent", cordoned=True), *ready("spare")],
        waiting.assignment,
    )
    assert agents_on(kept, "home") == ["desk"]
    assert agents_on(kept, "spare") == []


# -- drain ------------------------------------------------------------------------------------


def test_a_draining_nodes_replica_stays_until_its_replacement_is_ready() -> None:
    desired = distributed(SPREAD)
    ready_agent, ready_model = frozenset({"spread"}), frozenset({"small"})
    start, moving, still, done = rounds(
        [desired],
        ready("n1", "n2", "n3"),
        [*fleet(("n1", "draining")), *ready("n2", "n3")],
        [*fleet(("n1", "draining")), *ready("n2", "n3")],
        [
            *fleet(("n1", "draining")),
            NodeView("n2", "ready", ready_agents=ready_agent, ready_models=ready_model),
            NodeView("n3", "ready", ready_agents=ready_agent, ready_models=ready_model),
        ],
    )
    assert hosts(start, "spread") == ["n1", "n2"]
    assert hosts(moving, "spread") == ["n1", "n2", "n3"]
    assert step(moving, "start-agent", "n3", "spread").reason == "moved off n1 (draining)"
    # The model pinned to n1 moves too (the agent's copy on n3 stands in for it).
    assert models_on(moving, "n3") == ["small"]
    assert not [s for s in moving.plan.steps if s.node == "n1"]
    # Not ready yet on n3: nothing changes.
    assert still.plan.steps == ()
    assert hosts(done, "spread") == ["n2", "n3"]
    assert steps(done) == [("stop-agent", "n1", "spread"), ("unload-model", "n1", "small")]
    assert step(done, "stop-agent", "n1", "spread").reason == "moved to n2, n3 (node is draining)"
    assert done.plan.unplaced == ()


def test_a_draining_nodes_work_stays_when_no_other_node_can_take_it() -> None:
    two = distributed(SPREAD.replace("  - {id: n3}\n", ""))
    first = schedule([two], ready("n1", "n2"), {})
    result = schedule([two], [*fleet(("n1", "draining")), *ready("n2")], first.assignment)
    assert hosts(result, "spread") == ["n1", "n2"]
    assert result.plan.steps == ()
    missing, reason = unplaced(result)[("agent", "spread")]
    assert missing == 1
    assert reason == (
        "node `n1` is draining; no other ready node of deployment `fleet` can take it"
    )
    # The model pinned to both nodes cannot move either: the drain cannot finish.
    assert models_on(result, "n1") == ["small"]
    assert ("model", "small") in unplaced(result)


def test_a_draining_node_that_fails_follows_the_failover_rules() -> None:
    # Not-ready and still marked: with automatic failover its work moves at once, as any
    # failed node's, and it gets nothing new when it is back.
    first = schedule([DISTRIBUTED], ready("edge-1", "edge-2"), {})
    failed = schedule(
        [DISTRIBUTED],
        [*ready("edge-1"), NodeView("edge-2", "not-ready", cordoned=True)],
        first.assignment,
    )
    assert agents_on(failed, "edge-2") == []
    assert "technical-support" in agents_on(failed, "edge-1")
    back = schedule(
        [DISTRIBUTED], [*ready("edge-1"), *fleet(("edge-2", "draining"))], failed.assignment
    )
    assert agents_on(back, "edge-2") == []
    assert back.plan.steps == ()
