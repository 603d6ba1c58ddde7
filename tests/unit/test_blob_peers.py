"""Who each node fetches a model blob from: holders, its site, the site's origin fetcher."""

from __future__ import annotations

from edgefleet_contract.desired import ModelWant, NodeDesired
from orchestrator.blob_peers import MAX_PEERS, PeerNode, blob_key, plan_peers, with_peers

SHA = "a" * 64
URL = "https://models.example/phi.gguf"
WANT = ModelWant(alias="phi", runtime="llama.cpp", source=URL, sha256=SHA)


def node(
    id: str,
    site: str = "",
    *,
    complete: frozenset[str] = frozenset(),
    fetching: frozenset[str] = frozenset(),
    usable: bool = True,
    address: str | None = None,
) -> PeerNode:
    return PeerNode(
        id=id,
        address=address or f"10.0.0.{len(id)}:7443",
        site=site,
        usable=usable,
        complete=complete,
        fetching=fetching,
    )


def assign(*nodes: str, want: ModelWant = WANT) -> dict[str, NodeDesired]:
    return {n: NodeDesired(models=(want,)) for n in nodes}


def ids(peers: dict[str, dict[str, tuple]], node: str) -> list[tuple[str, bool]]:
    return [(p.node_id, p.complete) for p in peers.get(node, {}).get("phi", ())]


def test_holders_come_first_those_of_the_same_site_first_then_fetchers() -> None:
    nodes = {
        n.id: n
        for n in [
            node("a1", "shop-a"),
            node("a2", "shop-a", fetching=frozenset({SHA})),
            node("b1", "shop-b", complete=frozenset({SHA})),
            node("a3", "shop-a", complete=frozenset({SHA})),
            node("b2", "shop-b", fetching=frozenset({SHA})),
        ]
    }
    peers = plan_peers(assign("a1"), nodes)
    assert ids(peers, "a1") == [("a3", True), ("b1", True), ("a2", False), ("b2", False)]


def test_for_a_blob_nobody_holds_the_first_node_of_each_site_goes_to_the_origin() -> None:
    nodes = {n.id: n for n in [node("n1"), node("n2"), node("n3"), node("m1", "far")]}
    peers = plan_peers(assign("n1", "n2", "n3", "m1"), nodes)
    assert ids(peers, "n1") == []
    assert ids(peers, "m1") == []
    assert ids(peers, "n2") == [("n1", False)]
    assert ids(peers, "n3") == [("n1", False)]


def test_the_origin_fetcher_is_followed_by_other_nodes_fetching_it() -> None:
    nodes = {
        n.id: n
        for n in [node("n1"), node("n2", fetching=frozenset({SHA})), node("n3"), node("m1", "far")]
    }
    peers = plan_peers(assign("n1", "n2", "n3", "m1"), nodes)
    assert ids(peers, "n3") == [("n1", False), ("n2", False)]


def test_unusable_or_invalid_nodes_are_never_named() -> None:
    nodes = {
        n.id: n
        for n in [
            node("n0", complete=frozenset({SHA}), usable=False),
            node("n1", complete=frozenset({SHA}), address="no-port"),
            node("Bad_Id", complete=frozenset({SHA})),
            node("n2", complete=frozenset({SHA})),
            node("n3"),
        ]
    }
    peers = plan_peers(assign("n3"), nodes)
    assert ids(peers, "n3") == [("n2", True)]


def test_an_unusable_first_node_leaves_the_origin_to_the_next_one() -> None:
    nodes = {n.id: n for n in [node("n1", usable=False), node("n2"), node("n3")]}
    peers = plan_peers(assign("n1", "n2", "n3"), nodes)
    assert ids(peers, "n2") == []
    assert ids(peers, "n3") == [("n2", False)]


def test_a_blob_not_pinned_yet_is_named_by_its_source() -> None:
    unpinned = WANT.model_copy(update={"sha256": ""})
    key = blob_key(unpinned)
    assert key == f"source:{URL}"
    nodes = {n.id: n for n in [node("n1", fetching=frozenset({key})), node("n2"), node("n3")]}
    peers = plan_peers(assign("n1", "n2", "n3", want=unpinned), nodes)
    assert ids(peers, "n1") == []  # the first of its site: it goes to the origin
    assert ids(peers, "n3") == [("n1", False)]


def test_a_model_whose_source_is_on_the_node_has_no_peers() -> None:
    local = ModelWant(alias="phi", runtime="llama.cpp", source="/models/phi.gguf", sha256=SHA)
    assert blob_key(local) is None
    nodes = {n.id: n for n in [node("n1"), node("n2", complete=frozenset({SHA}))]}
    assert plan_peers(assign("n1", want=local), nodes) == {}


def test_the_list_is_capped() -> None:
    nodes = {f"h{i:02}": node(f"h{i:02}", complete=frozenset({SHA})) for i in range(20)}
    nodes["n1"] = node("n1")
    assert len(ids(plan_peers(assign("n1"), nodes), "n1")) == MAX_PEERS


def test_peers_change_no_content_key() -> None:
    nodes = {n.id: n for n in [node("n1"), node("n2", complete=frozenset({SHA}))]}
    desired = assign("n1")["n1"]
    filled = with_peers(desired, plan_peers(assign("n1"), nodes)["n1"])
    assert filled != desired
    assert filled.models[0].peers[0].node_id == "n2"
    assert filled.content_key() == desired.content_key()
    assert with_peers(desired, {}) is desired
