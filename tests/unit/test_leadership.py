"""Leadership on SQLite (one controller, a new term per start) and the leader key's value."""

from __future__ import annotations

import asyncio

from orchestrator.leadership import ControllerIdentity, SoleLeadership


def test_identity_round_trips_and_garbage_names_nobody() -> None:
    me = ControllerIdentity("c-1234", "10.0.0.1:7440")
    assert ControllerIdentity.decode(me.encode()) == me
    assert ControllerIdentity.decode(b"not json") == ControllerIdentity("", "")
    assert ControllerIdentity.decode(b'{"id": "x"}') == ControllerIdentity("", "")


def test_a_sole_controller_leads_at_once() -> None:
    async def scenario() -> list[str]:
        told: list[str] = []
        leadership = SoleLeadership(ControllerIdentity("c1", "127.0.0.1:7440"))
        leadership.start(lambda: told.append("changed"))
        await asyncio.sleep(0)
        return told

    assert asyncio.run(scenario()) == ["changed"]
    leadership = SoleLeadership(ControllerIdentity("c1", "127.0.0.1:7440"))
    assert leadership.token() == 1
    view = leadership.view()
    assert (view.role, view.leader_id, view.leader_address) == ("single", "c1", "127.0.0.1:7440")
