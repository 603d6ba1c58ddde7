"""The diff between two stored revisions."""

from __future__ import annotations

import grpc
import pytest

from edgefleet.v1 import controller_pb2
from edgefleet_common.grpc_errors import StatusError
from orchestrator.dashboard.revision_diff import revision_diff

REVISIONS = [
    controller_pb2.Revision(deployment="shop", number=2, manifest="name: shop\nreplicas: 2\n"),
    controller_pb2.Revision(deployment="shop", number=1, manifest="name: shop\nreplicas: 1\n"),
]


def test_the_diff_goes_from_one_revision_to_the_other() -> None:
    text = revision_diff(REVISIONS, "shop", 1, 2)
    assert text.splitlines() == [
        "--- shop (revision 1)",
        "+++ shop (revision 2)",
        "@@ -1,2 +1,2 @@",
        " name: shop",
        "-replicas: 1",
        "+replicas: 2",
    ]
    assert "+replicas: 1" in revision_diff(REVISIONS, "shop", 2, 1)


def test_a_revision_with_itself_has_no_diff() -> None:
    assert revision_diff(REVISIONS, "shop", 2, 2) == ""


def test_a_missing_revision_is_not_found_and_the_message_lists_those_there_are() -> None:
    with pytest.raises(StatusError, match=r"shop has no revision 7; it has: 1, 2") as missing:
        revision_diff(REVISIONS, "shop", 1, 7)
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
