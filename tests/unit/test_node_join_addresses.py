"""`edge-node run --controller`: several controllers, as a list or a repeated flag."""

from __future__ import annotations

from edgefleet_common.pki import DEFAULT_JOIN_PORT
from node_agent.cli import join_addresses


def test_lists_and_repeats_keep_their_order_without_repeats() -> None:
    given = ["10.0.0.1:7441,10.0.0.2:7441", " 10.0.0.3 ", "10.0.0.1:7441", ""]
    assert join_addresses(given) == [
        "10.0.0.1:7441",
        "10.0.0.2:7441",
        f"10.0.0.3:{DEFAULT_JOIN_PORT}",
    ]


def test_no_controller_given_means_none() -> None:
    assert join_addresses([]) == []
    assert join_addresses([" , "]) == []
