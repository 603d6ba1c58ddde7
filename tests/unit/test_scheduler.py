"""The scheduler's placement rules, one by one, on the seed shapes and small fleets."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import pytest

from edgefleet_contract.desired import NodeDesired
from orchestrator.errors import PlacementError
from orchestrator.manifest import DesiredState, load_file, load_text
from orchestrator.scheduler import NodeView, PlanStep, Schedule, schedule
from orchestrator.scheduler.model import Assignment, NodeState
from tests.conftest import MANIFESTS

GiB = 1024**3
MiB = 1024**2

SINGLE = load_file(MANIFESTS / "single-device.yaml").desired
DISTRIBUTED = load_file(MANIFESTS / "distributed-edge.yaml").desired
CLINIC = load_file(MANIFESTS / "clinic-fleet.yaml").desired
QUICKSTART = load_file(MANIFESTS / "quickstart.yaml").desired


# -- helpers shared with the other scheduler tests ------------------------------------------


def fleet(*states: tuple[str, NodeState]) -> list[NodeView]:
    """Node views from (id, state) pairs."""
    return [NodeView(node, state) for node, state in states]


def ready(*nodes: str, memory: int = 0) -> list[NodeView]:
    """Ready nodes with a known (or unknown: 0) total memory."""
    return [NodeView(n, "ready", memory_total_bytes=memory) for n in nodes]


def agents_on(result: Schedule | Assignment, node: str) -> list[str]:
    """Agent names assigned to a node (sorted; [] when the node is not in the assignment)."""
    assignment = result.assignment if isinstance(result, Schedule) else result
    desired = assignment.get(node)
    return [a.name for a in desired.agents] if desired else []


def models_on(result: Schedule | Assignment, node: str) -> list[str]:
    """Model aliases assigned to a node, sorted."""
    assignment = result.assignment if isinstance(result, Schedule) else result
    desired = assignment.get(node)
    return [m.alias for m in desired.models] if desired else []


def hosts(result: Schedule, agent: str) -> list[str]:
    """Nodes an agent is assigned to, sorted."""
    return sorted(n for n, d in result.assignment.items() if any(a.name == agent for a in d.agents))


def steps(result: Schedule) -> list[tuple[str, str, str]]:
    """(action, node, name) of every step, in plan order."""
    return [(s.action, s.node, s.name) for s in result.plan.steps]


def step(result: Schedule, action: str, node: str, name: str) -> PlanStep:
    """The one step doing `action` to `name` on `node`."""
    (found,) = [s for s in result.plan.steps if (s.action, s.node, s.name) == (action, node, name)]
    return found


def content(assignment: Mapping[str, NodeDesired]) -> dict[str, tuple[object, object]]:
    """Models and agents per node, leaving out nodes that run nothing."""
    return {
        node: (desired.models, desired.agents)
        for node, desired in sorted(assignment.items())
        if desired.models or desired.agents
    }


def apply_steps(
    previous: Assignment, plan_steps: Iterable[PlanStep], new: Assignment
) -> dict[str, tuple[object, object]]:
    """Carry out the steps on `previous` (specs come from `new`, as an applier reads them)."""
    models = {n: {m.alias: m for m in d.models} for n, d in previous.items()}
    agents = {n: {a.name: a for a in d.agents} for n, d in previous.items()}
    for s in plan_steps:
        target = new.get(s.node, NodeDesired())
        if s.action == "load-model":
            (want,) = [m for m in target.models if m.alias == s.name]
            models.setdefault(s.node, {})[s.name] = want
        elif s.action == "unload-model":
            del models[s.node][s.name]
        elif s.action in ("start-agent", "update-agent"):
            (agent,) = [a for a in target.agents if a.name == s.name]
            agents.setdefault(s.node, {})[s.name] = agent
        elif s.action == "stop-agent":
            del agents[s.node][s.name]
        else:
            raise AssertionError(f"unexpected action {s.action}")
    result = {
        node: NodeDesired(
            models=tuple(v for _, v in sorted(models.get(node, {}).items())),
            agents=tuple(v for _, v in sorted(agents.get(node, {}).items())),
        )
        for node in {*models, *agents}
    }
    return content(result)


def unplaced(result: Schedule) -> dict[tuple[str, str], tuple[int, str]]:
    """(kind, name) -> (missing, reason) of everything short of its replicas."""
    return {(u.kind, u.name): (u.missing, u.reason) for u in result.plan.unplaced}


def distributed(text: str, name: str = "fleet") -> DesiredState:
    """A distributed-edge deployment from the YAML under `deployment:`."""
    body = "\n".join("  " + line for line in text.strip("\n").splitlines())
    return load_text(
        f"deployment:\n  type: distributed-edge\n  name: {name}\n{body}\n",
        source=f"<{name}>",
    ).desired


def rounds(
    deployments: Sequence[DesiredState],
    *fleets: Sequence[NodeView],
    previous: Assignment | None = None,
) -> list[Schedule]:
    """Schedule once per fleet, each time from the previous result."""
    results: list[Schedule] = []
    current: Assignment = previous or {}
    for nodes in fleets:
        results.append(schedule(deployments, nodes, current))
        current = results[-1].assignment
    return results


# -- rule 1: single-device ------------------------------------------------------------------


def test_single_device_seed_puts_everything_on_the_local_node() -> None:
    result = schedule([SINGLE], ready("local"), {})
    assert models_on(result, "local") == ["phi-4-mini", "qwen2.5-0.5b"]
    assert agents_on(result, "local") == ["primary-agent"]
    assert steps(result) == [
        ("load-model", "local", "phi-4-mini"),
        ("load-model", "local", "qwen2.5-0.5b"),
        ("start-agent", "local", "primary-agent"),
    ]
    assert {s.deployment for s in result.plan.steps} == {"single-device"}
    assert result.plan.unplaced == ()
    desired = result.assignment["local"]
    assert (desired.generation, desired.controller_id) == (0, "")
    (agent,) = desired.agents
    assert (agent.model, agent.tools) == ("phi-4-mini", ("database", "calendar", "email"))


def test_single_device_waits_for_a_local_node_that_has_not_connected() -> None:
    result = schedule([SINGLE], [], {})
    assert agents_on(result, "local") == ["primary-agent"]
    missing, reason = unplaced(result)[("agent", "primary-agent")]
    assert missing == 1
    assert reason == (
        "waiting for the local node `local` to connect (start it with `edge-node run --id local`)"
    )


@pytest.mark.parametrize("state", ["not-ready", "suspect", "draining", "untrusted"])
def test_single_device_stays_on_the_local_node_whatever_its_state(state: NodeState) -> None:
    first = schedule([SINGLE], ready("local", "spare"), {})
    result = schedule([SINGLE], [*fleet(("local", state)), *ready("spare")], first.assignment)
    assert agents_on(result, "local") == ["primary-agent"]
    assert agents_on(result, "spare") == []
    assert result.plan.steps == ()
    if state != "suspect":
        assert f"node `local` is {state}" in unplaced(result)[("agent", "primary-agent")][1]


def test_single_device_uses_the_given_local_node_id() -> None:
    result = schedule([SINGLE], ready("box-7"), {}, local_node="box-7")
    assert agents_on(result, "box-7") == ["primary-agent"]
    assert "local" not in result.assignment


def test_single_device_budget_refuses_a_model_that_does_not_fit() -> None:
    # quickstart: smollm2 (300 MiB) under max_memory_usage 75% of a 256 MiB box.
    result = schedule([QUICKSTART], ready("local", memory=256 * MiB), {})
    assert models_on(result, "local") == []
    assert agents_on(result, "local") == []
    missing, reason = unplaced(result)[("agent", "assistant")]
    assert missing == 1
    assert "no room on `local`: `smollm2-135m` needs 300.0MiB, 192.0MiB free of 192.0MiB" in reason
    fits = schedule([QUICKSTART], ready("local", memory=1 * GiB), {})
    assert agents_on(fits, "local") == ["assistant"]


# -- rule 2: distributed placement ------------------------------------------------------------


def test_distributed_seed_places_each_node_its_pinned_work() -> None:
    result = schedule([DISTRIBUTED], ready("edge-1", "edge-2"), {})
    assert agents_on(result, "edge-1") == ["customer-service", "scheduling"]
    assert models_on(result, "edge-1") == ["phi-4-mini"]
    assert agents_on(result, "edge-2") == ["documentation", "technical-support"]
    assert models_on(result, "edge-2") == ["qwen2.5-coder-0.5b"]
    assert steps(result) == [
        ("load-model", "edge-1", "phi-4-mini"),
        ("start-agent", "edge-1", "customer-service"),
        ("start-agent", "edge-1", "scheduling"),
        ("load-model", "edge-2", "qwen2.5-coder-0.5b"),
        ("start-agent", "edge-2", "documentation"),
        ("start-agent", "edge-2", "technical-support"),
    ]
    assert {(s.deployment, s.reason) for s in result.plan.steps} == {
        ("distributed-edge", "pinned by the manifest")
    }
    assert result.plan.unplaced == ()


def test_both_seed_shapes_schedule_together() -> None:
    result = schedule([SINGLE, DISTRIBUTED], ready("edge-1", "edge-2", "local"), {})
    assert agents_on(result, "local") == ["primary-agent"]
    assert agents_on(result, "edge-1") == ["customer-service", "scheduling"]
    assert [s.node for s in result.plan.steps] == sorted(s.node for s in result.plan.steps)


def test_clinic_fleet_places_replicas_on_their_pinned_nodes() -> None:
    result = schedule([CLINIC], ready("reception-pc", "office-pc", "kiosk-1"), {})
    assert hosts(result, "front-desk") == ["office-pc", "reception-pc"]
    assert agents_on(result, "kiosk-1") == []
    assert models_on(result, "kiosk-1") == ["smollm2-135m"]
    (records,) = result.assignment["office-pc"].agents[1:]
    assert records.tool_config == {
        "database": {"path": "/var/lib/clinic/records.db", "max_rows": 50}
    }
    assert result.plan.unplaced == ()


UNPINNED = """
models:
  - {alias: big, memory: 2GiB}
  - {alias: small, memory: 256MiB}
agents:
  - {name: spread, model: small, replicas: 3}
nodes:
  - {id: n1, models: [small]}
  - {id: n2, models: [small]}
  - {id: n3, models: [small]}
  - {id: n4, models: [big]}
"""


def test_replicas_spread_one_per_node_on_the_best_nodes() -> None:
    result = schedule([distributed(UNPINNED)], ready("n1", "n2", "n3", "n4"), {})
    # Nodes that already have `small` assigned win over n4, which would have to load it.
    assert hosts(result, "spread") == ["n1", "n2", "n3"]
    reasons = sorted(step(result, "start-agent", n, "spread").reason for n in ("n1", "n2", "n3"))
    assert reasons == ["replica 1 of 3", "replica 2 of 3", "replica 3 of 3"]


def test_an_unpinned_agent_prefers_a_node_with_its_model_ready() -> None:
    desired = distributed(UNPINNED.replace("replicas: 3", "replicas: 1"))
    nodes = [*ready("n1", "n2", "n3"), NodeView("n4", "ready", ready_models=frozenset({"small"}))]
    assert hosts(schedule([desired], nodes, {}), "spread") == ["n4"]


def test_an_agent_brings_its_model_to_the_node_it_runs_on() -> None:
    base = distributed(UNPINNED)
    agent = base.agent("spread").model_copy(update={"replicas": 1, "preferred_nodes": ("n4",)})
    desired = base.model_copy(update={"agents": (agent,)})
    result = schedule([desired], ready("n1", "n2", "n3", "n4"), {})
    assert models_on(result, "n4") == ["big", "small"]
    assert step(result, "load-model", "n4", "small").reason == (
        "needed by agent `spread` (pinned by the manifest)"
    )


def test_a_model_no_agent_uses_and_no_node_lists_gets_one_replica_on_the_best_node() -> None:
    desired = distributed(
        """
models:
  - {alias: used, memory: 1GiB}
  - {alias: spare, memory: 1GiB}
agents:
  - {name: a, model: used}
nodes:
  - {id: n1, models: [used], agents: [a]}
  - {id: n2, resources: {max_memory_usage: 2GiB}}
  - {id: n3, resources: {max_memory_usage: 4GiB}}
"""
    )
    result = schedule([desired], ready("n1", "n2", "n3"), {})
    # n1 is unlimited (most free memory of all): the spare model goes there.
    assert [n for n in ("n1", "n2", "n3") if "spare" in models_on(result, n)] == ["n1"]
    assert step(result, "load-model", "n1", "spare").reason == (
        "used by no agent: one replica on the best node"
    )
    limited = desired.model_copy(update={"nodes": desired.nodes[1:]})
    agent = desired.agent("a").model_copy(update={"preferred_nodes": ("n2",)})
    limited = limited.model_copy(update={"agents": (agent,)})
    result = schedule([limited], ready("n2", "n3"), {})
    assert models_on(result, "n3") == ["spare"]  # 4 GiB free beats n2's 1 GiB left


def test_fewer_replicas_than_pinned_nodes_prefers_ready_nodes() -> None:
    base = distributed(UNPINNED)
    agent = base.agent("spread").model_copy(
        update={"replicas": 2, "preferred_nodes": ("n1", "n2", "n3")}
    )
    desired = base.model_copy(update={"agents": (agent,)})
    nodes = [*fleet(("n1", "suspect")), *ready("n2", "n3", "n4")]
    result = schedule([desired], nodes, {})
    assert hosts(result, "spread") == ["n2", "n3"]
    # The model pinned to n1 waits for it; the agent does not.
    assert [(u.kind, u.name) for u in result.plan.unplaced] == [("model", "small")]


# -- rule 3: eligibility ----------------------------------------------------------------------


def test_a_suspect_node_keeps_its_work_and_gets_nothing_new() -> None:
    first = schedule([DISTRIBUTED], ready("edge-1", "edge-2"), {})
    changed = distributed(
        """
models: [{alias: phi-4-mini}, {alias: qwen2.5-coder-0.5b}]
nodes:
  - {id: edge-1, agents: [customer-service, scheduling], models: [phi-4-mini]}
  - {id: edge-2, agents: [technical-support, documentation, triage], models: [qwen2.5-coder-0.5b]}
""",
        name="distributed-edge",
    )
    nodes = [*ready("edge-1"), *fleet(("edge-2", "suspect"))]
    result = schedule([changed], nodes, first.assignment)
    assert agents_on(result, "edge-2") == ["documentation", "technical-support"]
    assert hosts(result, "triage") == []  # no new work there, and no move yet
    missing, reason = unplaced(result)[("agent", "triage")]
    assert (missing, reason) == (
        1,
        "node `edge-2` is suspect (no new work until it recovers or times out)",
    )
    assert result.plan.steps == ()


def test_a_node_that_never_connected_keeps_its_pinned_work_without_failover() -> None:
    result = schedule([DISTRIBUTED], ready("edge-1"), {})
    assert agents_on(result, "edge-2") == ["documentation", "technical-support"]
    assert agents_on(result, "edge-1") == ["customer-service", "scheduling"]
    for agent in ("documentation", "technical-support"):
        assert unplaced(result)[("agent", agent)] == (1, "node `edge-2` has not connected yet")
    assert unplaced(result)[("model", "qwen2.5-coder-0.5b")][0] == 1


def test_an_untrusted_node_gets_nothing_and_its_work_fails_over() -> None:
    first = schedule([DISTRIBUTED], ready("edge-1", "edge-2"), {})
    nodes = [*ready("edge-1"), *fleet(("edge-2", "untrusted"))]
    result = schedule([DISTRIBUTED], nodes, first.assignment)
    assert result.assignment["edge-2"] == NodeDesired()
    assert hosts(result, "technical-support") == ["edge-1"]
    assert step(result, "start-agent", "edge-1", "documentation").reason == (
        "failover from edge-2 (untrusted)"
    )
    fresh = schedule([DISTRIBUTED], nodes, {})
    assert agents_on(fresh, "edge-2") == []


def test_an_untrusted_node_under_manual_failover_is_emptied_and_nothing_moves() -> None:
    manual = DISTRIBUTED.model_copy(
        update={"coordination": DISTRIBUTED.coordination.model_copy(update={"failover": "manual"})}
    )
    first = schedule([manual], ready("edge-1", "edge-2"), {})
    nodes = [*ready("edge-1"), *fleet(("edge-2", "untrusted"))]
    result = schedule([manual], nodes, first.assignment)
    assert result.assignment["edge-2"] == NodeDesired()
    assert hosts(result, "technical-support") == []
    assert "node `edge-2` is untrusted" in unplaced(result)[("agent", "technical-support")][1]


@pytest.mark.parametrize("failover", ["automatic", "manual", "none"])
def test_a_draining_node_hands_its_work_over_without_a_gap(failover: str) -> None:
    desired = DISTRIBUTED.model_copy(
        update={"coordination": DISTRIBUTED.coordination.model_copy(update={"failover": failover})}
    )
    start, moving, done = rounds(
        [desired],
        ready("edge-1", "edge-2"),
        [*ready("edge-1"), *fleet(("edge-2", "draining"))],
        [
            NodeView(
                "edge-1",
                "ready",
                ready_agents=frozenset({"technical-support", "documentation"}),
                ready_models=frozenset({"qwen2.5-coder-0.5b"}),
            ),
            *fleet(("edge-2", "draining")),
        ],
    )
    # The replacement starts while the draining node still serves.
    assert hosts(moving, "technical-support") == ["edge-1", "edge-2"]
    assert step(moving, "start-agent", "edge-1", "technical-support").reason == (
        "moved off edge-2 (draining)"
    )
    assert not [s for s in moving.plan.steps if s.node == "edge-2"]
    # Once it is ready there, the draining node is emptied.
    assert hosts(done, "technical-support") == ["edge-1"]
    assert done.assignment["edge-2"] == NodeDesired()
    assert step(done, "stop-agent", "edge-2", "technical-support").reason == (
        "moved to edge-1 (node is draining)"
    )
    assert start.plan.unplaced == done.plan.unplaced == ()


def test_a_draining_node_keeps_what_cannot_go_anywhere() -> None:
    first = schedule([DISTRIBUTED], ready("edge-2"), {})
    result = schedule([DISTRIBUTED], fleet(("edge-2", "draining")), first.assignment)
    assert agents_on(result, "edge-2") == ["documentation", "technical-support"]
    missing, reason = unplaced(result)[("agent", "documentation")]
    assert missing == 1
    assert "node `edge-2` is draining" in reason


# -- rule 4: failover -------------------------------------------------------------------------


def test_automatic_failover_moves_work_off_a_failed_node_and_fences_it() -> None:
    first, failed = rounds(
        [DISTRIBUTED],
        ready("edge-1", "edge-2"),
        [*ready("edge-1"), *fleet(("edge-2", "not-ready"))],
    )
    assert agents_on(failed, "edge-1") == [
        "customer-service",
        "documentation",
        "scheduling",
        "technical-support",
    ]
    assert models_on(failed, "edge-1") == ["phi-4-mini", "qwen2.5-coder-0.5b"]
    # The failed node's assignment drops what moved: when it returns it stops it.
    assert failed.assignment["edge-2"] == NodeDesired()
    assert steps(failed) == [
        ("load-model", "edge-1", "qwen2.5-coder-0.5b"),
        ("start-agent", "edge-1", "documentation"),
        ("start-agent", "edge-1", "technical-support"),
        ("stop-agent", "edge-2", "documentation"),
        ("stop-agent", "edge-2", "technical-support"),
        ("unload-model", "edge-2", "qwen2.5-coder-0.5b"),
    ]
    assert step(failed, "start-agent", "edge-1", "documentation").reason == (
        "failover from edge-2 (not-ready)"
    )
    assert step(failed, "stop-agent", "edge-2", "documentation").reason == (
        "failover to edge-1 (node is not-ready)"
    )
    assert failed.plan.unplaced == ()
    assert first.plan.unplaced == ()


def _failover_target(extra_nodes: str, views: list[NodeView]) -> str:
    """Where agent `a` goes when its node `home` fails, among the nodes given."""
    desired = distributed(
        """
models:
  - {alias: m, memory: 1GiB}
  - {alias: light}
agents:
  - {name: a, model: m}
  - {name: b, model: light}
nodes:
  - {id: home, agents: [a], models: [m]}
  - {id: spare, agents: [b], models: [light]}
"""
        + extra_nodes
    )
    # `m` is listed under `home` only for the validator: take the pin away, so the agent
    # alone decides where its model goes.
    home = desired.nodes[0].model_copy(update={"models": ()})
    desired = desired.model_copy(update={"nodes": (home, *desired.nodes[1:])})
    ids = [v.id for v in views]
    first = schedule([desired], ready("home", *ids), {})
    (target,) = hosts(
        schedule([desired], [NodeView("home", "not-ready"), *views], first.assignment), "a"
    )
    return target


def test_failover_prefers_a_node_with_the_model_ready() -> None:
    nodes = "  - {id: w}\n  - {id: z, resources: {max_memory_usage: 2GiB}}\n"
    views = [*ready("w"), NodeView("z", "ready", ready_models=frozenset({"m"}))]
    assert _failover_target(nodes, views) == "z"


def test_failover_then_prefers_a_node_already_assigned_the_model() -> None:
    nodes = "  - {id: v, models: [m], resources: {max_memory_usage: 2GiB}}\n  - {id: w}\n"
    assert _failover_target(nodes, ready("v", "w")) == "v"


def test_failover_then_prefers_the_most_free_memory() -> None:
    nodes = (
        "  - {id: w, resources: {max_memory_usage: 4GiB}}\n"
        "  - {id: x, resources: {max_memory_usage: 8GiB}}\n"
    )
    assert _failover_target(nodes, ready("w", "x")) == "x"
    unlimited = nodes + "  - {id: y}\n"
    assert _failover_target(unlimited, ready("w", "x", "y")) == "y"


def test_failover_then_prefers_the_fewest_agents_then_the_node_id() -> None:
    nodes = (
        "  - {id: x, agents: [b], models: [light], resources: {max_memory_usage: 8GiB}}\n"
        "  - {id: z, resources: {max_memory_usage: 8GiB}}\n"
    )
    assert _failover_target(nodes, ready("x", "z")) == "z"
    even = nodes.replace("agents: [b], ", "") + nodes.splitlines()[0].replace("id: x", "id: q")
    assert _failover_target(even, ready("x", "z", "q")) == "x"


def test_failover_respects_budgets_and_keeps_what_fits_nowhere() -> None:
    desired = distributed(
        """
models: [{alias: big, memory: 3GiB}]
agents: [{name: a, model: big}]
nodes:
  - {id: home, agents: [a], models: [big]}
  - {id: small, resources: {max_memory_usage: 2GiB}}
"""
    )
    _, failed = rounds(
        [desired], ready("home", "small"), [NodeView("home", "not-ready"), *ready("small")]
    )
    assert agents_on(failed, "small") == []
    assert agents_on(failed, "home") == ["a"]  # resumes when the node is back
    assert failed.plan.steps == ()
    missing, reason = unplaced(failed)[("agent", "a")]
    assert missing == 1
    assert reason == (
        "node `home` is not-ready; no room on `small`: `big` needs 3.0GiB, 2.0GiB free of 2.0GiB"
    )


@pytest.mark.parametrize("mode", ["manual", "none"])
def test_manual_and_none_failover_move_nothing(mode: str) -> None:
    desired = DISTRIBUTED.model_copy(
        update={"coordination": DISTRIBUTED.coordination.model_copy(update={"failover": mode})}
    )
    first, failed = rounds(
        [desired], ready("edge-1", "edge-2"), [*ready("edge-1"), *fleet(("edge-2", "not-ready"))]
    )
    assert failed.assignment == first.assignment
    assert failed.plan.steps == ()
    assert unplaced(failed)[("agent", "documentation")] == (
        1,
        f"node `edge-2` is not-ready (failover: {mode}, so nothing moves)",
    )


# -- rule 5: stickiness -----------------------------------------------------------------------


def test_a_changed_manifest_acts_only_on_the_difference() -> None:
    first = schedule([CLINIC], ready("reception-pc", "office-pc", "kiosk-1"), {})
    notifier = CLINIC.agent("notifier").model_copy(update={"instructions": "Be brief."})
    extra = notifier.model_copy(update={"name": "reminders", "preferred_nodes": ("office-pc",)})
    agents = [a for a in CLINIC.agents if a.name != "notifier"] + [notifier, extra]
    changed = CLINIC.model_copy(update={"agents": tuple(agents)})
    result = schedule([changed], ready("reception-pc", "office-pc", "kiosk-1"), first.assignment)
    assert steps(result) == [
        ("start-agent", "office-pc", "reminders"),
        ("update-agent", "reception-pc", "notifier"),
    ]
    assert step(result, "update-agent", "reception-pc", "notifier").reason == (
        "changed: instructions"
    )


def test_an_unpinned_replica_stays_where_it_failed_over_to() -> None:
    desired = distributed(UNPINNED.replace("replicas: 3", "replicas: 1"))
    first = schedule([desired], ready("n1", "n2", "n3", "n4"), {})
    (home,) = hosts(first, "spread")
    moved = schedule(
        [desired],
        [NodeView(n, "not-ready" if n == home else "ready") for n in ("n1", "n2", "n3", "n4")],
        first.assignment,
    )
    (elsewhere,) = hosts(moved, "spread")
    assert elsewhere != home
    back = schedule([desired], ready("n1", "n2", "n3", "n4"), moved.assignment)
    assert hosts(back, "spread") == [elsewhere]
    assert [s for s in back.plan.steps if s.name == "spread"] == []


def test_lowering_replicas_keeps_the_preferred_replicas() -> None:
    first = schedule([CLINIC], ready("reception-pc", "office-pc", "kiosk-1"), {})
    one = CLINIC.agent("front-desk").model_copy(update={"replicas": 1})
    lowered = CLINIC.model_copy(
        update={"agents": tuple(one if a.name == "front-desk" else a for a in CLINIC.agents)}
    )
    nodes = [
        NodeView("reception-pc", "ready", ready_agents=frozenset({"front-desk"})),
        *ready("office-pc", "kiosk-1"),
    ]
    result = schedule([lowered], nodes, first.assignment)
    assert hosts(result, "front-desk") == ["reception-pc"]
    assert step(result, "stop-agent", "office-pc", "front-desk").reason == "replicas lowered to 1"


# -- rule 6: failback -------------------------------------------------------------------------


def test_failback_surges_until_the_preferred_node_reports_ready() -> None:
    both_ready = ready("edge-1", "edge-2")
    reported = [
        *ready("edge-1"),
        NodeView(
            "edge-2",
            "ready",
            ready_agents=frozenset({"technical-support", "documentation"}),
            ready_models=frozenset({"qwen2.5-coder-0.5b"}),
        ),
    ]
    _, failed, back, settled = rounds(
        [DISTRIBUTED],
        both_ready,
        [*ready("edge-1"), *fleet(("edge-2", "not-ready"))],
        both_ready,
        reported,
    )
    assert hosts(failed, "documentation") == ["edge-1"]
    # Back: the preferred node gets it again, the failover replica stays meanwhile.
    assert hosts(back, "documentation") == ["edge-1", "edge-2"]
    assert step(back, "start-agent", "edge-2", "documentation").reason == "failback to edge-2"
    assert not [s for s in back.plan.steps if s.action.startswith("stop")]
    assert back.plan.unplaced == ()
    # Ready there: the surge replica goes.
    assert hosts(settled, "documentation") == ["edge-2"]
    assert step(settled, "stop-agent", "edge-1", "documentation").reason == (
        "failed back to edge-2"
    )
    assert step(settled, "unload-model", "edge-1", "qwen2.5-coder-0.5b")
    assert models_on(settled, "edge-1") == ["phi-4-mini"]


def test_an_agent_the_manifest_moves_to_another_node_is_moved_without_loading_its_model() -> None:
    first = schedule([DISTRIBUTED], ready("edge-1", "edge-2"), {})
    moved = distributed(
        """
nodes:
  - id: edge-1
    agents: [customer-service, documentation]
    models: [phi-4-mini]
  - id: edge-2
    agents: [technical-support]
    models: [qwen2.5-coder-0.5b]
""",
        name="distributed-edge",
    )
    result = schedule([moved], ready("edge-1", "edge-2"), first.assignment)
    assert steps(result) == [
        ("start-agent", "edge-1", "documentation"),
        ("stop-agent", "edge-1", "scheduling"),
        ("stop-agent", "edge-2", "documentation"),
    ]
    assert step(result, "stop-agent", "edge-2", "documentation").reason == (
        "the manifest moved it to edge-1"
    )
    assert models_on(result, "edge-2") == ["qwen2.5-coder-0.5b"]


def test_without_failback_the_failover_replica_stays() -> None:
    desired = DISTRIBUTED.model_copy(
        update={"coordination": DISTRIBUTED.coordination.model_copy(update={"failback": False})}
    )
    _, failed, back = rounds(
        [desired],
        ready("edge-1", "edge-2"),
        [*ready("edge-1"), *fleet(("edge-2", "not-ready"))],
        ready("edge-1", "edge-2"),
    )
    assert hosts(back, "documentation") == ["edge-1"]
    assert agents_on(back, "edge-2") == []
    assert agents_on(back, "edge-1") == agents_on(failed, "edge-1")
    # The model listed under edge-2 is a pin of its own: it is loaded there again.
    assert steps(back) == [("load-model", "edge-2", "qwen2.5-coder-0.5b")]


# -- rule 7: memory budgets -------------------------------------------------------------------


BUDGETS = """
models: [{alias: m, memory: 1GiB}, {alias: n, memory: 1GiB}, {alias: o}]
agents: [{name: a, model: m}]
nodes:
  - {id: capped, models: [m, n, o], agents: [a], resources: {max_memory_usage: 1536MiB}}
  - {id: share, models: [m, n], resources: {max_memory_usage: 25%}}
  - {id: cache, models: [m, n], resources: {model_cache_size: 1GiB}}
  - {id: free, models: [m, n]}
"""


def test_a_pinned_model_that_does_not_fit_is_unplaced_with_the_numbers() -> None:
    nodes = [
        *ready("capped", "cache", "free"),
        NodeView("share", "ready", memory_total_bytes=8 * GiB),
    ]
    result = schedule([distributed(BUDGETS)], nodes, {})
    # capped holds m (agent a) and o (no size given: counts as 0), not n.
    assert models_on(result, "capped") == ["m", "o"]
    assert models_on(result, "share") == ["m", "n"]  # 25% of 8 GiB
    assert models_on(result, "cache") == ["m"]
    assert models_on(result, "free") == ["m", "n"]
    missing, reason = unplaced(result)[("model", "n")]
    assert missing == 2
    assert reason == (
        "no room on `cache`: `n` needs 1.0GiB, 0B free of 1.0GiB; "
        "no room on `capped`: `n` needs 1.0GiB, 512.0MiB free of 1.5GiB"
    )
    assert step(result, "load-model", "capped", "o").reason == "pinned by the manifest"
    assert step(result, "load-model", "capped", "m").reason == ("pinned by the manifest")


def test_a_share_of_unknown_memory_is_unlimited() -> None:
    result = schedule([distributed(BUDGETS)], ready("capped", "share", "cache", "free"), {})
    assert models_on(result, "share") == ["m", "n"]
    small = schedule(
        [distributed(BUDGETS)],
        [*ready("capped", "cache", "free"), NodeView("share", "ready", memory_total_bytes=6 * GiB)],
        {},
    )
    assert models_on(small, "share") == ["m"]  # 25% of 6 GiB is 1.5 GiB


def test_node_resources_override_the_deployments() -> None:
    desired = distributed(
        """
models: [{alias: m, memory: 1GiB}, {alias: n, memory: 1GiB}]
resources: {max_memory_usage: 1GiB}
nodes:
  - {id: own, models: [m, n], resources: {max_memory_usage: 4GiB}}
  - {id: inherits, models: [m, n]}
"""
    )
    result = schedule([desired], ready("own", "inherits"), {})
    assert models_on(result, "own") == ["m", "n"]
    assert models_on(result, "inherits") == ["m"]


def test_a_budget_that_shrinks_moves_what_no_longer_fits() -> None:
    desired = distributed(BUDGETS)
    nodes = [
        *ready("capped", "cache", "free"),
        NodeView("share", "ready", memory_total_bytes=8 * GiB),
    ]
    first = schedule([desired], nodes, {})
    shrunk = [
        *ready("capped", "cache", "free"),
        NodeView("share", "ready", memory_total_bytes=4 * GiB),
    ]
    result = schedule([desired], shrunk, first.assignment)
    assert models_on(result, "share") == ["m"]
    assert step(result, "unload-model", "share", "n").reason.startswith("no room any more")


# -- rule 8: limits ---------------------------------------------------------------------------


def test_limits_come_from_node_resources_else_the_deployments() -> None:
    result = schedule([CLINIC], ready("reception-pc", "office-pc", "kiosk-1"), {})
    kiosk = result.assignment["kiosk-1"].limits
    assert (kiosk.max_memory_bytes, kiosk.model_cache_bytes) == (1 * GiB, 512 * MiB)
    assert (kiosk.auto_unload_idle_models, kiosk.idle_timeout_s) == (True, 900.0)
    reception = result.assignment["reception-pc"].limits
    assert (reception.max_memory_bytes, reception.max_concurrent_agents) == (6 * GiB, 4)
    office = result.assignment["office-pc"].limits
    assert (office.max_memory_bytes, office.max_queue_per_agent) == (0, 16)


def test_limits_of_a_node_two_deployments_name_are_the_most_restrictive() -> None:
    one = distributed(
        """
models: [{alias: m}]
nodes:
  - id: shared
    models: [m]
    resources:
      max_memory_usage: 4GiB
      max_concurrent_agents: 2
      auto_unload_idle_models: true
      idle_timeout: 5m
""",
        name="one",
    )
    two = distributed(
        """
models: [{alias: m}]
resources: {max_memory_usage: 50%, model_cache_size: 2GiB, max_queue_per_agent: 4}
nodes: [{id: shared, models: [m]}]
""",
        name="two",
    )
    limits = schedule([one, two], ready("shared"), {}).assignment["shared"].limits
    assert limits.max_memory_bytes == 4 * GiB
    assert limits.max_memory_fraction == 0.5
    assert limits.model_cache_bytes == 2 * GiB
    assert limits.max_concurrent_agents == 2
    assert limits.max_queue_per_agent == 4
    assert (limits.auto_unload_idle_models, limits.idle_timeout_s) == (True, 300.0)


# -- rule 9: unplaced -------------------------------------------------------------------------


def test_more_replicas_than_nodes_reports_how_many_are_missing() -> None:
    base = distributed(UNPINNED)
    agent = base.agent("spread").model_copy(update={"replicas": 6})
    result = schedule(
        [base.model_copy(update={"agents": (agent,)})], ready("n1", "n2", "n3", "n4"), {}
    )
    assert hosts(result, "spread") == ["n1", "n2", "n3", "n4"]
    assert unplaced(result)[("agent", "spread")] == (
        2,
        "deployment `fleet` has 4 node(s) for 6 replicas (one replica per node)",
    )


def test_unplaced_names_every_node_and_why() -> None:
    base = distributed(UNPINNED)
    agent = base.agent("spread").model_copy(update={"replicas": 4})
    desired = base.model_copy(update={"agents": (agent,)})
    nodes = [*ready("n1"), *fleet(("n2", "not-ready"), ("n3", "draining"), ("n4", "untrusted"))]
    result = schedule([desired], nodes, {})
    missing, reason = unplaced(result)[("agent", "spread")]
    assert missing == 3
    assert reason == "no other ready node of deployment `fleet` can take it"


# -- rule 10: plan steps ----------------------------------------------------------------------


def test_a_removed_deployment_empties_its_nodes_with_reasons() -> None:
    first = schedule([SINGLE, DISTRIBUTED], ready("edge-1", "edge-2", "local"), {})
    result = schedule([SINGLE], ready("edge-1", "edge-2", "local"), first.assignment)
    assert result.assignment["edge-1"] == NodeDesired()
    assert result.assignment["edge-2"] == NodeDesired()
    assert steps(result)[:3] == [
        ("stop-agent", "edge-1", "customer-service"),
        ("stop-agent", "edge-1", "scheduling"),
        ("unload-model", "edge-1", "phi-4-mini"),
    ]
    assert {(s.deployment, s.reason) for s in result.plan.steps} == {
        ("", "removed from the manifest")
    }
    deleted = schedule(
        [SINGLE], ready("edge-1", "edge-2", "local"), first.assignment, retired=[DISTRIBUTED]
    )
    assert {(s.deployment, s.reason) for s in deleted.plan.steps} == {
        ("distributed-edge", "deployment `distributed-edge` deleted")
    }


def test_a_model_nothing_needs_any_more_is_unloaded() -> None:
    first = schedule([DISTRIBUTED], ready("edge-1", "edge-2"), {})
    fewer = distributed(
        """
models: [{alias: phi-4-mini}, {alias: qwen2.5-coder-0.5b}]
nodes:
  - {id: edge-1, agents: [customer-service, scheduling], models: [phi-4-mini]}
  - {id: edge-2, models: [qwen2.5-coder-0.5b]}
agents:
  - {name: technical-support, model: qwen2.5-coder-0.5b}
""",
        name="distributed-edge",
    )
    # qwen stays pinned to edge-2; technical-support stays; documentation goes.
    result = schedule([fewer], ready("edge-1", "edge-2"), first.assignment)
    assert steps(result) == [("stop-agent", "edge-2", "documentation")]
    assert step(result, "stop-agent", "edge-2", "documentation").reason == (
        "removed from the manifest"
    )
    unpinned = fewer.model_copy(
        update={"nodes": (fewer.nodes[0], fewer.nodes[1].model_copy(update={"models": ()}))}
    )
    no_agent = unpinned.model_copy(update={"agents": (), "models": (fewer.models[0],)})
    result = schedule([no_agent], ready("edge-1", "edge-2"), first.assignment)
    assert step(result, "unload-model", "edge-2", "qwen2.5-coder-0.5b").reason == (
        "removed from the manifest"
    )


def test_steps_are_ordered_by_node_then_action_then_name() -> None:
    first = schedule([CLINIC], ready("reception-pc", "office-pc", "kiosk-1"), {})
    swapped = CLINIC.model_copy(
        update={
            "nodes": (
                CLINIC.nodes[0].model_copy(update={"agents": ("front-desk", "records-lookup")}),
                CLINIC.nodes[1].model_copy(update={"agents": ("front-desk", "notifier")}),
                CLINIC.nodes[2],
            ),
            "agents": tuple(
                a.model_copy(
                    update={
                        "preferred_nodes": {
                            "notifier": ("office-pc",),
                            "records-lookup": ("reception-pc",),
                        }.get(a.name, a.preferred_nodes),
                        "instructions": a.instructions + " Thanks.",
                    }
                )
                for a in CLINIC.agents
            ),
        }
    )
    nodes = [
        NodeView(n, "ready", ready_agents=frozenset({"notifier", "records-lookup"}))
        for n in ("reception-pc", "office-pc", "kiosk-1")
    ]
    result = schedule([swapped], nodes, first.assignment)
    order = {
        "load-model": 0,
        "start-agent": 1,
        "update-agent": 2,
        "stop-agent": 3,
        "unload-model": 4,
    }
    keys = [(s.node, order[s.action], s.name) for s in result.plan.steps]
    assert keys == sorted(keys)
    assert ("start-agent", "office-pc", "notifier") in steps(result)
    assert ("update-agent", "office-pc", "front-desk") in steps(result)


def test_conflicting_deployments_are_refused() -> None:
    copy = SINGLE.model_copy(update={"name": "other"})
    with pytest.raises(PlacementError, match="agent `primary-agent` is declared by deployments"):
        schedule([SINGLE, copy], ready("local"), {})


# -- determinism ------------------------------------------------------------------------------


def test_input_order_does_not_matter() -> None:
    nodes = [*ready("reception-pc", "office-pc"), *fleet(("kiosk-1", "suspect"))]
    previous = schedule([CLINIC, SINGLE], ready("reception-pc", "office-pc", "kiosk-1"), {})
    one = schedule([CLINIC, SINGLE], nodes, previous.assignment)
    two = schedule([SINGLE, CLINIC], nodes[::-1], dict(reversed(list(previous.assignment.items()))))
    assert one == two
    assert list(one.assignment) == sorted(one.assignment)


def test_the_same_node_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="node `edge-1` appears twice"):
        schedule([DISTRIBUTED], ready("edge-1", "edge-1"), {})


# -- whole scenarios --------------------------------------------------------------------------


def test_clinic_office_failure_moves_what_fits_and_keeps_the_rest() -> None:
    nodes = [NodeView("reception-pc", "ready", memory_total_bytes=16 * GiB), *ready("kiosk-1")]
    first, failed = rounds(
        [CLINIC],
        [*nodes, *ready("office-pc")],
        [*nodes, NodeView("office-pc", "not-ready")],
    )
    assert hosts(failed, "records-lookup") == ["reception-pc"]
    assert step(failed, "start-agent", "reception-pc", "records-lookup").reason == (
        "failover from office-pc (not-ready)"
    )
    # front-desk already runs on reception-pc; phi-4-mini (3 GiB) cannot go to the kiosk.
    assert hosts(failed, "front-desk") == ["office-pc", "reception-pc"]
    missing, reason = unplaced(failed)[("agent", "front-desk")]
    assert missing == 1
    assert reason == (
        "node `office-pc` is not-ready; "
        "no room on `kiosk-1`: `phi-4-mini` needs 3.0GiB, 212.0MiB free of 512.0MiB"
    )
    assert [s.node for s in failed.plan.steps] == ["office-pc", "reception-pc"]
    assert first.plan.unplaced == ()


def test_an_absent_node_keeps_what_it_ran_before() -> None:
    desired = distributed(UNPINNED.replace("replicas: 3", "replicas: 1"))
    first = schedule([desired], ready("n1", "n2", "n3", "n4"), {})
    (home,) = hosts(first, "spread")
    others = [n for n in ("n1", "n2", "n3", "n4") if n != home]
    result = schedule([desired], ready(*others), first.assignment)
    assert hosts(result, "spread") == [home]
    assert unplaced(result)[("agent", "spread")] == (1, f"node `{home}` has not connected yet")


def test_an_agent_that_changes_model_brings_the_new_one_and_drops_the_old() -> None:
    first = schedule([DISTRIBUTED], ready("edge-1", "edge-2"), {})
    agent = DISTRIBUTED.agent("scheduling").model_copy(update={"model": "qwen2.5-coder-0.5b"})
    changed = DISTRIBUTED.model_copy(
        update={"agents": tuple(agent if a.name == "scheduling" else a for a in DISTRIBUTED.agents)}
    )
    result = schedule([changed], ready("edge-1", "edge-2"), first.assignment)
    assert steps(result) == [
        ("load-model", "edge-1", "qwen2.5-coder-0.5b"),
        ("update-agent", "edge-1", "scheduling"),
    ]
    assert step(result, "load-model", "edge-1", "qwen2.5-coder-0.5b").reason == (
        "needed by agent `scheduling` (its model changed)"
    )
    assert step(result, "update-agent", "edge-1", "scheduling").reason == "changed: model"


@pytest.mark.parametrize(
    "deployments",
    [[SINGLE], [DISTRIBUTED], [CLINIC], [SINGLE, DISTRIBUTED]],
    ids=["single-device", "distributed-edge", "clinic-fleet", "both-seeds"],
)
def test_scheduling_the_result_again_is_a_no_op(deployments: list[DesiredState]) -> None:
    nodes = [
        *ready("edge-1", "local", "reception-pc"),
        *fleet(("edge-2", "not-ready"), ("office-pc", "suspect")),
    ]
    first = schedule(deployments, nodes, {})
    again = schedule(deployments, nodes, first.assignment)
    assert again.plan.steps == ()
    assert again.assignment == first.assignment
