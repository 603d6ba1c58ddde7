"""The routing table's content (a pure function of assignment, ready nodes, index and keys)
and its generation, numbered by the store across reopens."""

from __future__ import annotations

from pathlib import Path

from edgefleet_contract.desired import AgentWant, ModelWant, NodeDesired
from edgefleet_contract.routing import AgentRoute, DeploymentRoutes, ModelRoute, RoutingIndex
from edgefleet_contract.routing_table import ReplicaRoute
from orchestrator.routes_table import ReadyNode, keys_in_force, routes_content
from orchestrator.store import SqliteStore
from orchestrator.store.credentials import CredentialRow

INDEX = RoutingIndex(
    deployments=(
        DeploymentRoutes(
            name="shop",
            distributed=True,
            agents=(AgentRoute(name="clerk"), AgentRoute(name="helper")),
            models=(ModelRoute(alias="small", primary=True),),
        ),
    )
)


def desired(generation: int, *agents: str) -> NodeDesired:
    return NodeDesired(
        generation=generation,
        models=(ModelWant(alias="small"),),
        agents=tuple(AgentWant(name=a, model="small") for a in agents),
    )


ASSIGNMENT = {"n1": desired(4, "clerk"), "n2": desired(7, "clerk", "helper"), "n3": desired(2)}


def key(
    id_: str, digest: str, *, revoked: float | None = None, expires: float | None = None
) -> CredentialRow:
    return CredentialRow("api-key", id_, digest, "", 0.0, expires, revoked, None)


def test_only_replicas_assigned_to_and_ready_on_a_ready_node_are_listed() -> None:
    nodes = {
        "n1": ReadyNode("10.0.0.1:7441", agents=frozenset({"clerk"}), models=frozenset()),
        "n2": ReadyNode("10.0.0.2:7441", agents=frozenset({"clerk"}), models=frozenset({"small"})),
        # n3 is not ready (absent); n4 is ready and runs clerk but is assigned nothing.
        "n4": ReadyNode("10.0.0.4:7441", agents=frozenset({"clerk"})),
    }
    table = routes_content(ASSIGNMENT, nodes, INDEX, ["bb", "aa"])
    assert table.generation == 0
    assert table.index == INDEX
    assert table.replicas("clerk", "agent") == (
        ReplicaRoute(node_id="n1", address="10.0.0.1:7441", generation=4),
        ReplicaRoute(node_id="n2", address="10.0.0.2:7441", generation=7),
    )
    # helper is assigned to n2 but not ready there yet; small is ready on n2 alone.
    assert table.replicas("helper", "agent") == ()
    assert [r.node_id for r in table.replicas("small", "model")] == ["n2"]
    assert [(t.name, t.kind) for t in table.targets] == [
        ("clerk", "agent"),
        ("helper", "agent"),
        ("small", "model"),
    ]
    assert table.api_key_digests == ("aa", "bb")


def test_same_inputs_in_another_order_give_the_same_content_key() -> None:
    nodes = {
        "n1": ReadyNode("a:1", agents=frozenset({"clerk"})),
        "n2": ReadyNode("b:1", agents=frozenset({"clerk", "helper"})),
    }
    one = routes_content(ASSIGNMENT, nodes, INDEX, ["x", "y"])
    reordered = dict(reversed(list(ASSIGNMENT.items())))
    two = routes_content(reordered, dict(reversed(list(nodes.items()))), INDEX, ["y", "x", "y"])
    assert one.content_key() == two.content_key()
    # What changes routing changes the key: an address, a readiness, an assignment's
    # generation, a key.
    moved = {**nodes, "n1": ReadyNode("c:1", agents=frozenset({"clerk"}))}
    assert routes_content(ASSIGNMENT, moved, INDEX, ["x", "y"]).content_key() != one.content_key()
    renewed = {**ASSIGNMENT, "n1": desired(5, "clerk")}
    assert routes_content(renewed, nodes, INDEX, ["x", "y"]).content_key() != one.content_key()
    assert routes_content(ASSIGNMENT, nodes, INDEX, ["x"]).content_key() != one.content_key()


def test_keys_in_force_leave_out_revoked_and_expired_keys_and_join_tokens() -> None:
    rows = [
        key("k1", "d1"),
        key("k2", "d2", revoked=50.0),
        key("k3", "d3", expires=99.0),
        key("k4", "d4", expires=101.0),
        CredentialRow("join-token", "t1", "d5", "", 0.0, None, None, None),
    ]
    assert keys_in_force(rows, now=100.0) == ("d1", "d4")


def test_the_generation_grows_only_with_the_content_and_survives_a_reopen(
    tmp_path: Path,
) -> None:
    path = tmp_path / "controller.db"
    with SqliteStore.open(path) as store:
        assert store.routes_generation() == 0
        assert store.number_routes("A") == 1
        assert store.number_routes("A") == 1
        assert store.number_routes("B") == 2
        # A node reports holding 2: still ours, same content.
        assert store.number_routes("B", floor=2) == 2
    with SqliteStore.open(path) as store:
        assert store.routes_generation() == 2
        assert store.number_routes("B") == 2  # same table after a restart: same number
        assert store.number_routes("A") == 3  # back to older content: still a new number
        # A node holds 9 (this store came from a backup): same content, numbered above.
        assert store.number_routes("A", floor=9) == 10
    with SqliteStore.open(path) as store:
        assert store.number_routes("C") == 11
