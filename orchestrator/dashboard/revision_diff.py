"""The difference between two stored revisions of a deployment, as a unified diff."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import grpc

from edgefleet.v1 import controller_pb2
from edgefleet_common.grpc_errors import StatusError


def revision_diff(
    revisions: Iterable[controller_pb2.Revision], deployment: str, old: int, new: int
) -> str:
    """The unified diff from revision `old` to revision `new` of the manifests (revisions
    listed with their manifests); NOT_FOUND naming the revisions there are when one is
    missing."""
    by_number = {r.number: r for r in revisions}
    for number in (old, new):
        if number not in by_number:
            known = ", ".join(str(n) for n in sorted(by_number)) or "none"
            raise StatusError(
                grpc.StatusCode.NOT_FOUND,
                f"{deployment} has no revision {number}; it has: {known}",
            )
    return "".join(
        difflib.unified_diff(
            by_number[old].manifest.splitlines(keepends=True),
            by_number[new].manifest.splitlines(keepends=True),
            fromfile=f"{deployment} (revision {old})",
            tofile=f"{deployment} (revision {new})",
        )
    )
