"""The routing index: built from the current deployments, queried by every gateway."""

from __future__ import annotations

from collections.abc import Sequence

from edgefleet_contract.routing import (
    AgentRoute,
    Coordination,
    DeploymentRoutes,
    EscalationEndpoint,
    ModelRoute,
    RoutingIndex,
)
from orchestrator.manifest import load_file
from orchestrator.manifest.desired import AgentSpec, DesiredState, ModelSpec
from orchestrator.routing_index import CurrentRoutingIndex, routing_index
from tests.conftest import MANIFESTS

SINGLE = load_file(MANIFESTS / "single-device.yaml").desired
CLINIC = load_file(MANIFESTS / "clinic-fleet.yaml").desired


def test_a_distributed_deployment_carries_its_coordination_agents_models_and_escalation() -> None:
    (clinic,) = routing_index([CLINIC]).deployments
    assert (clinic.name, clinic.distributed) == ("clinic-fleet", True)
    assert (clinic.strategy, clinic.session_affinity) == ("peak-ewma", True)
    assert clinic.agents[0] == AgentRoute(
        name="front-desk",
        instructions="Greet patients, answer opening-hours questions and book appointments.",
    )
    assert [a.name for a in clinic.agents] == ["front-desk", "records-lookup", "notifier"]
    assert clinic.models == (
        ModelRoute(alias="phi-4-mini", tasks=("conversation", "reasoning"), primary=True),
        ModelRoute(alias="smollm2-135m", tasks=("routing", "classification"), primary=False),
    )
    assert clinic.escalation == EscalationEndpoint(
        base_url="https://llm.example.com/v1",
        model="large-model",
        api_key_env="EDGEFLEET_ESCALATION_KEY",
        timeout_s=30.0,
    )


def test_a_single_device_deployment_is_not_balanced() -> None:
    index = routing_index([SINGLE])
    assert index.deployments[0].distributed is False
    assert index.deployments[0].escalation is None
    assert index.coordination("primary-agent") == Coordination(strategy=None)
    assert index.coordination("qwen2.5-0.5b") == Coordination(strategy=None)


def test_coordination_follows_the_declaring_deployment_or_the_default() -> None:
    index = routing_index([CLINIC])
    assert index.coordination("notifier") == Coordination(
        strategy="peak-ewma", session_affinity=True
    )
    assert index.coordination("smollm2-135m").session_affinity
    assert index.coordination("nobody") == Coordination(strategy="peak-ewma")


def shop(name: str = "shop", *, alias: str = "tiny", agent: str = "helper") -> DesiredState:
    return DesiredState(
        type="distributed-edge",
        name=name,
        models=(ModelSpec(alias=alias, tasks=("chat",)),),
        agents=(AgentSpec(name=agent, model=alias, instructions=f"{name} rules"),),
    )


def test_a_name_is_an_agent_or_a_model_alias_of_some_deployment() -> None:
    index = routing_index([shop(), CLINIC])
    assert index.kind_of("helper") == "agent"
    assert index.kind_of("smollm2-135m") == "model"
    assert index.kind_of("nobody") is None
    deployment = index.deployment_of("front-desk")
    assert deployment is not None
    assert deployment.name == "clinic-fleet"
    assert index.deployment_of("tiny") == index.deployments[0]
    assert index.deployment_of("nobody") is None
    agent = index.agent("helper")
    assert agent is not None
    assert agent.instructions == "shop rules"
    assert index.names() == sorted(
        ["helper", "tiny", "front-desk", "records-lookup", "notifier", "phi-4-mini", "smollm2-135m"]
    )


def test_an_agent_wins_over_a_model_alias_of_the_same_name() -> None:
    index = routing_index([shop(alias="twin"), shop("other", alias="x", agent="twin")])
    assert index.kind_of("twin") == "agent"


def test_the_models_for_a_task_by_alias() -> None:
    index = routing_index([SINGLE, shop()])
    assert [m.alias for m in index.models_for_task("classification")] == ["qwen2.5-0.5b"]
    assert [m.alias for m in index.models_for_task("chat")] == ["tiny"]
    assert [m.primary for m in index.models_for_task("reasoning")] == [True]
    assert index.models_for_task("dancing") == []


def test_the_escalation_of_a_target_with_an_agents_instructions() -> None:
    index = routing_index([shop(), CLINIC])
    endpoint, instructions = index.escalation("records-lookup", "agent")
    assert endpoint is not None
    assert endpoint.model == "large-model"
    assert instructions.startswith("Answer questions about appointment records")
    assert index.escalation("phi-4-mini", "model") == (endpoint, "")
    assert index.escalation("helper", "agent") == (None, "shop rules")
    assert index.escalation("helper", "model") == (None, ""), "not a model alias"
    assert index.escalation("nobody", "agent") == (None, "")


def test_the_listing_names_each_target_once_in_declaration_order() -> None:
    listed = routing_index([shop(), shop("again"), SINGLE]).listing()
    assert [(e.name, e.kind, e.deployment) for e in listed] == [
        ("helper", "agent", "shop"),
        ("tiny", "model", "shop"),
        ("primary-agent", "agent", "single-device"),
        ("phi-4-mini", "model", "single-device"),
        ("qwen2.5-0.5b", "model", "single-device"),
    ]
    assert RoutingIndex().listing() == []


def test_the_index_travels_as_json_unchanged() -> None:
    index = routing_index([CLINIC, SINGLE, shop()])
    assert RoutingIndex.model_validate_json(index.model_dump_json()) == index
    assert DeploymentRoutes(name="bare").coordination == Coordination(strategy=None)


class Revisions:
    """Stands in for the reconciler: the same parsed objects while they stay current."""

    def __init__(self, *current: DesiredState) -> None:
        self.current: Sequence[DesiredState] = current
        self.asked = 0

    def __call__(self) -> list[DesiredState]:
        self.asked += 1
        return list(self.current)


def test_the_current_index_is_rebuilt_only_when_the_revisions_change() -> None:
    revisions = Revisions(SINGLE, CLINIC)
    current = CurrentRoutingIndex(revisions)
    first = current()
    assert current() is first
    assert revisions.asked == 2
    revisions.current = (SINGLE, shop())
    second = current()
    assert second is not first
    assert [d.name for d in second.deployments] == ["single-device", "shop"]
    revisions.current = (SINGLE,)
    assert [d.name for d in current().deployments] == ["single-device"]
    revisions.current = ()
    assert current() == RoutingIndex()
