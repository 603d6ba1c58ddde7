"""The routing table crosses the wire unchanged, and a broken one says what is wrong."""

from __future__ import annotations

import pytest

from edgefleet.v1 import node_pb2
from edgefleet_contract.errors import InvalidMessage
from edgefleet_contract.routes_wire import table_from_proto, table_to_proto
from edgefleet_contract.routing import (
    AgentRoute,
    DeploymentRoutes,
    EscalationEndpoint,
    ModelRoute,
    RoutingIndex,
)
from edgefleet_contract.routing_table import ReplicaRoute, RoutingTable, TargetRoutes

TABLE = RoutingTable(
    generation=12,
    controller_id="ctrl-1",
    index=RoutingIndex(
        deployments=(
            DeploymentRoutes(
                name="shop",
                distributed=True,
                strategy="least-outstanding",
                session_affinity=True,
                agents=(AgentRoute(name="desk", instructions="Be brief."),),
                models=(ModelRoute(alias="smol", tasks=("chat",), primary=True),),
                escalation=EscalationEndpoint(
                    base_url="https://llm.example/v1", model="big", api_key_env="KEY", timeout_s=9
                ),
            ),
            DeploymentRoutes(name="kiosk", strategy=None, models=(ModelRoute(alias="tiny"),)),
        )
    ),
    targets=(
        TargetRoutes(
            name="desk",
            kind="agent",
            replicas=(
                ReplicaRoute(node_id="n1", address="10.0.0.1:7443", generation=4),
                ReplicaRoute(node_id="n2", address="10.0.0.2:7443", generation=7),
            ),
        ),
        TargetRoutes(name="smol", kind="model", replicas=()),
    ),
    api_key_digests=("ab" * 32,),
)


def test_a_table_survives_the_wire_unchanged() -> None:
    assert table_from_proto(table_to_proto(TABLE)) == TABLE


def test_queries_read_replicas_and_addresses() -> None:
    assert [r.node_id for r in TABLE.replicas("desk", "agent")] == ["n1", "n2"]
    assert TABLE.replicas("desk", "model") == ()
    assert TABLE.address("n2") == "10.0.0.2:7443"
    assert TABLE.address("n9") is None


def test_the_content_key_ignores_generation_and_sender() -> None:
    later = TABLE.model_copy(update={"generation": 13, "controller_id": "ctrl-2"})
    assert later.content_key() == TABLE.content_key()
    fewer = TABLE.model_copy(update={"targets": TABLE.targets[:1]})
    assert fewer.content_key() != TABLE.content_key()


def test_a_table_without_a_generation_is_refused() -> None:
    message = table_to_proto(TABLE)
    message.generation = 0
    with pytest.raises(InvalidMessage, match="generation must be greater than 0"):
        table_from_proto(message)


def test_an_unknown_strategy_is_refused_with_its_deployment() -> None:
    message = table_to_proto(TABLE)
    message.deployments[0].strategy = "random"
    with pytest.raises(InvalidMessage, match="deployment `shop`: strategy `random`"):
        table_from_proto(message)


def test_a_replica_without_a_node_says_where() -> None:
    message = table_to_proto(TABLE)
    message.targets[0].replicas.append(node_pb2.RouteReplica(address="10.0.0.3:7443"))
    with pytest.raises(InvalidMessage, match=r"targets\[0\]\.replicas\[2\]\.node_id"):
        table_from_proto(message)
