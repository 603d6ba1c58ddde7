"""Certificate renewal on the node: a failed renewal is retried with a growing delay."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from edgefleet_common.pki import Credentials, key_pem, load_csr, new_key, node_csr
from node_agent import node_trust
from orchestrator.trust.ca import ClusterCa


class _Stop(Exception):
    """Ends the renewal loop once enough waits were seen."""


def test_a_failed_renewal_is_retried_with_a_growing_delay(tmp_path: Path) -> None:
    ca = ClusterCa.load_or_create(tmp_path / "ca", "shop")
    key = new_key()
    issued = ca.issue_node(load_csr(node_csr(key, "edge-1")), "edge-1", timedelta(hours=3))
    serving = node_trust.ServingCredentials(Credentials(key_pem(key), issued.pem, ca.cert_pem))
    due = node_trust.renew_at(serving.current)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 8:
            raise _Stop

    # No controller address saved in the data folder: every renewal fails (JoinError).
    with pytest.raises(_Stop):
        asyncio.run(node_trust.keep_renewed("edge-1", tmp_path / "node", serving, sleep))
    retries = waits[1::2]
    assert retries == [1.0, 2.0, 4.0, 8.0]
    assert all(abs(wait - due) < 60 for wait in waits[0::2]), "each retry waits for the due time"
    assert serving.current.cert_pem == issued.pem
