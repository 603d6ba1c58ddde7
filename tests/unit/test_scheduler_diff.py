"""The plan between two assignments, on its own (as `edgectl delete` uses it)."""

from __future__ import annotations

from edgefleet_contract.desired import AgentWant, ModelWant, NodeDesired, NodeLimits
from orchestrator.scheduler import Reasons, Why, plan_diff
from tests.unit.test_scheduler import apply_steps, content

PHI = ModelWant(alias="phi", memory_bytes=3 << 30)
QWEN = ModelWant(alias="qwen")
DESK = AgentWant(name="desk", model="phi", tools=("calendar",))
NOTES = AgentWant(name="notes", model="qwen")
BEFORE = {
    "edge-1": NodeDesired(
        generation=7, controller_id="c1", models=(PHI, QWEN), agents=(DESK, NOTES)
    ),
    "edge-2": NodeDesired(generation=3, controller_id="c1", models=(QWEN,), agents=(NOTES,)),
}


def test_removing_everything_stops_agents_before_unloading_models_node_by_node() -> None:
    steps = plan_diff(
        BEFORE, {}, default_owner="clinic", removed_reason="deployment `clinic` deleted"
    )
    assert [(s.action, s.node, s.name) for s in steps] == [
        ("stop-agent", "edge-1", "desk"),
        ("stop-agent", "edge-1", "notes"),
        ("unload-model", "edge-1", "phi"),
        ("unload-model", "edge-1", "qwen"),
        ("stop-agent", "edge-2", "notes"),
        ("unload-model", "edge-2", "qwen"),
    ]
    assert {(s.deployment, s.reason) for s in steps} == {("clinic", "deployment `clinic` deleted")}
    assert apply_steps(BEFORE, steps, {}) == {}


def test_loads_and_starts_come_before_updates_stops_and_unloads() -> None:
    desk = DESK.model_copy(update={"tools": ("calendar", "time"), "tool_config": {"time": {}}})
    new = {
        "edge-1": NodeDesired(models=(PHI,), agents=(desk,)),
        "edge-2": NodeDesired(models=(PHI, QWEN), agents=(DESK.model_copy(update={"name": "d2"}),)),
    }
    steps = plan_diff(BEFORE, new, owners={("agent", "desk"): "clinic"})
    assert [(s.action, s.node, s.name, s.reason) for s in steps] == [
        ("update-agent", "edge-1", "desk", "changed: tools, tool_config"),
        ("stop-agent", "edge-1", "notes", "removed from the manifest"),
        ("unload-model", "edge-1", "qwen", "no longer needed on this node"),
        ("load-model", "edge-2", "phi", "needed by agent `d2`"),
        ("start-agent", "edge-2", "d2", "assigned to this node"),
        ("stop-agent", "edge-2", "notes", "removed from the manifest"),
    ]
    assert steps[0].deployment == "clinic"
    assert apply_steps(BEFORE, steps, new) == content(new)


def test_a_moved_agent_says_where_it_went() -> None:
    moved = {"edge-1": NodeDesired(models=(QWEN,), agents=(NOTES,)), "edge-2": NodeDesired()}
    steps = plan_diff({"edge-2": BEFORE["edge-2"]}, moved)
    assert [(s.action, s.node, s.reason) for s in steps] == [
        ("load-model", "edge-1", "needed by agent `notes`"),
        ("start-agent", "edge-1", "assigned to this node"),
        ("stop-agent", "edge-2", "moved to edge-1"),
        ("unload-model", "edge-2", "no longer needed on this node"),
    ]


def test_a_changed_model_is_loaded_again() -> None:
    bigger = QWEN.model_copy(update={"source": "qwen2.5:0.5b", "memory_bytes": 1 << 30})
    new = {"edge-2": NodeDesired(models=(bigger,), agents=(NOTES,))}
    (step,) = plan_diff({"edge-2": BEFORE["edge-2"]}, new)
    assert (step.action, step.name, step.reason) == (
        "load-model",
        "qwen",
        "changed: source, memory_bytes (reload)",
    )
    assert apply_steps({"edge-2": BEFORE["edge-2"]}, [step], new) == content(new)


def test_generations_and_limits_are_not_steps() -> None:
    renumbered = {
        node: desired.model_copy(
            update={"generation": 0, "controller_id": "", "limits": NodeLimits(max_memory_bytes=1)}
        )
        for node, desired in BEFORE.items()
    }
    assert plan_diff(BEFORE, renumbered) == ()


def test_the_schedulers_reasons_are_used_when_given() -> None:
    new = {**BEFORE, "edge-3": NodeDesired(models=(QWEN,), agents=(NOTES,))}
    reasons = Reasons(
        added={
            ("edge-3", "agent", "notes"): Why("clinic", "failover from edge-2 (not-ready)"),
            ("edge-3", "model", "qwen"): Why("clinic", "needed by agent `notes`"),
        }
    )
    steps = plan_diff(BEFORE, new, reasons=reasons)
    assert [(s.action, s.deployment, s.reason) for s in steps] == [
        ("load-model", "clinic", "needed by agent `notes`"),
        ("start-agent", "clinic", "failover from edge-2 (not-ready)"),
    ]
