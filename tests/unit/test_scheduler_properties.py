"""Property tests: the scheduler's guarantees on random fleets and deployments."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from hypothesis import given
from hypothesis import strategies as st

from edgefleet_contract.desired import NodeDesired
from orchestrator.manifest import (
    AgentSpec,
    CoordinationSpec,
    DesiredState,
    ModelSpec,
    NodeSpec,
    ResourceLimits,
)
from orchestrator.scheduler import NodeView, Schedule, schedule
from orchestrator.scheduler.model import Assignment, NodeState
from tests.unit.test_scheduler import apply_steps, content

GiB = 1024**3
MiB = 1024**2
NODE_IDS = ("local", "n0", "n1", "n2", "n3", "n4")
STATES: tuple[NodeState | Literal["absent"], ...] = (
    "ready",
    "ready",
    "suspect",
    "not-ready",
    "untrusted",
    "draining",
    "absent",
)


@dataclass(frozen=True)
class World:
    """Deployments, the fleet as reported, and the assignment before."""

    deployments: tuple[DesiredState, ...]
    nodes: tuple[NodeView, ...]
    previous: Mapping[str, NodeDesired]


resources = st.one_of(
    st.none(),
    st.builds(
        ResourceLimits,
        max_memory_bytes=st.sampled_from([None, 1 * GiB, 2 * GiB, 4 * GiB]),
        max_memory_fraction=st.sampled_from([None, 0.25, 0.5, 1.0]),
        model_cache_bytes=st.sampled_from([None, 512 * MiB, 3 * GiB]),
        max_concurrent_agents=st.sampled_from([None, 1, 4]),
        auto_unload_idle_models=st.booleans(),
    ),
)


@st.composite
def deployment_sets(draw: st.DrawFn) -> tuple[DesiredState, ...]:
    """One to three deployments; one alias is one model everywhere, agent names unique."""
    sizes = [None, 256 * MiB, 1 * GiB, 3 * GiB]
    table = {
        f"m{i}": ModelSpec(alias=f"m{i}", memory_bytes=draw(st.sampled_from(sizes)))
        for i in range(3)
    }
    deployments = []
    agent_number = 0
    for d in range(draw(st.integers(1, 3))):
        aliases = draw(
            st.lists(st.sampled_from(sorted(table)), min_size=1, max_size=3, unique=True)
        )
        models = tuple(table[a] for a in aliases)
        if d == 0 and draw(st.booleans()):
            agents = []
            for _ in range(draw(st.integers(0, 2))):
                agent_number += 1
                model = draw(st.sampled_from(aliases))
                agents.append(AgentSpec(name=f"a{agent_number}", model=model))
            deployments.append(
                DesiredState(
                    type="single-device",
                    name=f"d{d}",
                    models=models,
                    agents=tuple(agents),
                    resources=draw(resources) or ResourceLimits(),
                )
            )
            continue
        node_ids = draw(
            st.lists(st.sampled_from(NODE_IDS[1:]), min_size=1, max_size=5, unique=True)
        )
        agents = []
        for _ in range(draw(st.integers(0, 4))):
            agent_number += 1
            pinned = draw(st.lists(st.sampled_from(node_ids), max_size=3, unique=True))
            agents.append(
                AgentSpec(
                    name=f"a{agent_number}",
                    model=draw(st.sampled_from(aliases)),
                    instructions=draw(st.sampled_from(["", "Be brief."])),
                    replicas=draw(st.integers(1, 3)),
                    preferred_nodes=tuple(pinned),
                )
            )
        nodes = tuple(
            NodeSpec(
                id=node,
                models=tuple(draw(st.lists(st.sampled_from(aliases), max_size=2, unique=True))),
                agents=tuple(a.name for a in agents if node in a.preferred_nodes),
                resources=draw(resources),
            )
            for node in node_ids
        )
        deployments.append(
            DesiredState(
                type="distributed-edge",
                name=f"d{d}",
                models=models,
                agents=tuple(agents),
                nodes=nodes,
                coordination=CoordinationSpec(
                    failover=draw(st.sampled_from(["automatic", "manual", "none"])),
                    failback=draw(st.booleans()),
                ),
                resources=draw(resources) or ResourceLimits(),
            )
        )
    return tuple(deployments)


@st.composite
def fleets(draw: st.DrawFn, deployments: Sequence[DesiredState]) -> tuple[NodeView, ...]:
    """Every node in some state (or absent), some cordoned, with what it reports ready."""
    aliases = sorted({m.alias for d in deployments for m in d.models})
    agents = sorted({a.name for d in deployments for a in d.agents})
    views = []
    for node in NODE_IDS:
        state = draw(st.sampled_from(STATES))
        cordoned = draw(st.sampled_from([False, False, True]))
        if state == "absent":
            if cordoned:  # a cordoned node not heard from is listed, to keep work away
                views.append(NodeView(node, "absent", cordoned=True))
            continue
        views.append(
            NodeView(
                node,
                state,
                cordoned=cordoned,
                memory_total_bytes=draw(st.sampled_from([0, 2 * GiB, 8 * GiB])),
                ready_models=frozenset(draw(st.lists(st.sampled_from(aliases), max_size=2))),
                ready_agents=frozenset(
                    draw(st.lists(st.sampled_from(agents), max_size=3)) if agents else []
                ),
            )
        )
    return tuple(views)


@st.composite
def worlds(draw: st.DrawFn) -> World:
    """A world whose previous assignment came from an earlier manifest and fleet."""
    deployments = draw(deployment_sets())
    previous: Assignment = {}
    for _ in range(draw(st.integers(0, 2))):
        earlier = [d for d in deployments if draw(st.booleans())]
        changed = [
            d.model_copy(
                update={
                    "agents": tuple(
                        a.model_copy(update={"replicas": draw(st.integers(1, 3))}) for a in d.agents
                    )
                }
            )
            for d in earlier
        ]
        previous = schedule(changed, draw(fleets(deployments)), previous).assignment
    return World(deployments, draw(fleets(deployments)), previous)


def budget(world: World, node: str) -> int | None:
    """The node's budget, computed from the rules independently of the scheduler."""
    found: list[ResourceLimits] = []
    for d in world.deployments:
        if d.type == "single-device" and node == "local":
            found.append(d.resources)
        found += [n.resources or d.resources for n in d.nodes if n.id == node]
    total = next((v.memory_total_bytes for v in world.nodes if v.id == node), 0)
    bounds = [r.max_memory_bytes for r in found if r.max_memory_bytes]
    bounds += [r.model_cache_bytes for r in found if r.model_cache_bytes]
    if total:
        bounds += [int(r.max_memory_fraction * total) for r in found if r.max_memory_fraction]
    return min(bounds, default=None)


def same(a: Mapping[str, NodeDesired], b: Mapping[str, NodeDesired]) -> bool:
    """Equal desired states, a node left out being one told to run nothing."""
    empty = NodeDesired()
    return all(a.get(n, empty) == b.get(n, empty) for n in {*a, *b})


def check_plan_leads_to_the_assignment(world: World, result: Schedule) -> None:
    """Applying the steps to the previous assignment gives the new one; nodes in order."""
    applied = apply_steps(world.previous, result.plan.steps, result.assignment)
    assert applied == content(result.assignment)
    assert [s.node for s in result.plan.steps] == sorted(s.node for s in result.plan.steps)


def check_budgets_and_nodes(world: World, result: Schedule) -> None:
    """Budgets hold, one replica per node, agents only on their deployment's nodes."""
    sizes = {m.alias: m.memory_bytes or 0 for d in world.deployments for m in d.models}
    allowed = {
        a.name: {"local"} if d.type == "single-device" else {n.id for n in d.nodes}
        for d in world.deployments
        for a in d.agents
    }
    for node, desired in result.assignment.items():
        limit = budget(world, node)
        if limit is not None:
            assert sum(sizes[m.alias] for m in desired.models) <= limit, node
        names = [a.name for a in desired.agents]
        assert len(names) == len(set(names))
        for agent in desired.agents:
            assert node in allowed[agent.name]
    for missing in result.plan.unplaced:
        assert missing.missing > 0
        assert missing.reason


def check_nothing_new_on_nodes_not_ready(world: World, result: Schedule) -> None:
    """A node not ready gets nothing it did not have (the single-device box aside); a
    cordoned node, whatever its state, neither."""
    fixed = {"local"} if any(d.type == "single-device" for d in world.deployments) else set()
    for view in world.nodes:
        if not view.cordoned and (view.state == "ready" or view.id in fixed):
            continue
        before = world.previous.get(view.id, NodeDesired())
        after = result.assignment.get(view.id, NodeDesired())
        assert {a.name for a in after.agents} <= {a.name for a in before.agents}
        kept_needs = {a.model for a in after.agents}
        assert {m.alias for m in after.models} <= {m.alias for m in before.models} | kept_needs
        if view.state == "untrusted" and view.id not in fixed:
            assert after == NodeDesired(limits=after.limits)


@given(worlds())
def test_every_schedule_keeps_the_rules_and_is_stable(world: World) -> None:
    result = schedule(world.deployments, world.nodes, world.previous)
    check_plan_leads_to_the_assignment(world, result)
    check_budgets_and_nodes(world, result)
    check_nothing_new_on_nodes_not_ready(world, result)
    # Scheduling the result again (same nodes) changes nothing.
    again = schedule(world.deployments, world.nodes, result.assignment)
    assert again.plan.steps == ()
    assert same(again.assignment, result.assignment)
    assert again.plan.unplaced == result.plan.unplaced


@given(worlds(), st.randoms(use_true_random=False))
def test_the_same_inputs_in_any_order_give_the_same_schedule(
    world: World, rnd: random.Random
) -> None:
    deployments = list(world.deployments)
    nodes = list(world.nodes)
    previous = list(world.previous.items())
    rnd.shuffle(deployments)
    rnd.shuffle(nodes)
    rnd.shuffle(previous)
    one = schedule(world.deployments, world.nodes, world.previous)
    two = schedule(deployments, nodes, dict(previous))
    assert one == two
