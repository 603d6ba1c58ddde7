"""Problems across deployments that make applying them together impossible."""

from __future__ import annotations

from orchestrator.manifest import DesiredState, ModelSpec
from orchestrator.scheduler import check_conflicts, schedule
from tests.unit.test_scheduler import DISTRIBUTED, SINGLE, agents_on, distributed, ready

GiB = 1024**3


def with_model(deployment: DesiredState, name: str, **details: object) -> DesiredState:
    """The deployment renamed, its first model declared with other details."""
    first = deployment.models[0].model_copy(update=details)
    return deployment.model_copy(update={"name": name, "models": (first, *deployment.models[1:])})


def test_the_seed_shapes_go_together() -> None:
    # Both declare `phi-4-mini` without details: one model.
    assert check_conflicts([SINGLE, DISTRIBUTED]) == []


def test_an_agent_name_in_two_deployments_is_a_conflict() -> None:
    other = SINGLE.model_copy(update={"name": "other"})
    assert check_conflicts([SINGLE, other]) == [
        "agent `primary-agent` is declared by deployments `other` and `single-device`: "
        "gateway clients ask for agents by name, so each name must belong to one deployment "
        "(rename one)"
    ]


def test_one_alias_declared_as_two_models_is_a_conflict() -> None:
    empty = SINGLE.model_copy(update={"agents": ()})
    one = with_model(empty, "one", runtime="ollama", source="phi4-mini", memory_bytes=3 * GiB)
    two = with_model(empty, "two", runtime="llama.cpp", source="phi4-mini", memory_bytes=2 * GiB)
    assert check_conflicts([two, one]) == [
        "model `phi-4-mini` means different models in deployments `one` (runtime ollama, "
        "memory 3.0GiB) and `two` (runtime llama.cpp, memory 2.0GiB): one alias must be one "
        "model on every node (use another alias, or declare it the same way)"
    ]


def test_one_alias_with_other_slots_is_a_conflict() -> None:
    # A node runs one server per model: its slots cannot be two things at once.
    empty = SINGLE.model_copy(update={"agents": ()})
    one = with_model(empty, "one", runtime="llama.cpp", parallel=4)
    two = with_model(empty, "two", runtime="llama.cpp", parallel=8, context=4096)
    assert check_conflicts([one, two]) == [
        "model `phi-4-mini` means different models in deployments `one` (parallel 4) and "
        "`two` (parallel 8): one alias must be one model on every node (use another alias, "
        "or declare it the same way)"
    ]


def test_details_one_deployment_leaves_out_do_not_conflict() -> None:
    empty = SINGLE.model_copy(update={"agents": ()})
    detailed = with_model(empty, "detailed", runtime="ollama", memory_bytes=3 * GiB)
    same = with_model(empty, "same", runtime="ollama", memory_bytes=3 * GiB)
    plain = with_model(empty, "plain")
    assert check_conflicts([detailed, same, plain]) == []
    # The node gets the details from the deployment that gives them.
    result = schedule([plain, detailed], ready("local"), {})
    (model, _) = result.assignment["local"].models
    assert (model.alias, model.runtime, model.memory_bytes) == ("phi-4-mini", "ollama", 3 * GiB)


def test_a_node_two_deployments_pin_is_fine_and_runs_both() -> None:
    one = distributed(
        """
models: [{alias: m, memory: 1GiB}]
nodes: [{id: shared, agents: [a], models: [m]}]
""",
        name="one",
    )
    two = distributed(
        """
models: [{alias: m, memory: 1GiB}]
nodes: [{id: shared, agents: [b], models: [m]}]
resources: {max_memory_usage: 1GiB}
""",
        name="two",
    )
    assert check_conflicts([one, two]) == []
    result = schedule([one, two], ready("shared"), {})
    assert agents_on(result, "shared") == ["a", "b"]  # one copy of `m` fits the 1 GiB budget
    assert result.plan.unplaced == ()


def test_a_deployment_given_twice_and_an_undeclared_model_are_reported() -> None:
    broken = SINGLE.model_copy(
        update={"models": (ModelSpec(alias="qwen2.5-0.5b"),), "name": "broken"}
    )
    assert check_conflicts([broken, broken]) == [
        "deployment `broken` is given twice",
        "agent `primary-agent` of deployment `broken` uses model `phi-4-mini`, which the "
        "deployment does not declare",
    ]
