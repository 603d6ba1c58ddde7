"""ControlRole: the reconciler and the routing table run exactly while the controller leads."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, cast

from orchestrator.control_role import ControlRole
from orchestrator.leadership import LeaderView
from orchestrator.store import StoreError


def on_loop(scenario: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async scenario as a plain test."""

    @functools.wraps(scenario)
    def test() -> None:
        asyncio.run(scenario())

    return test


class FakeLeadership:
    def __init__(self) -> None:
        self.current = 0
        self.on_change: Callable[[], None] = lambda: None
        self.closed = False

    def token(self) -> int:
        return self.current

    def view(self) -> LeaderView:
        return LeaderView("leader" if self.current else "standby", "c1", "h:1")

    def start(self, on_change: Callable[[], None]) -> None:
        self.on_change = on_change

    def close(self) -> None:
        self.closed = True

    def become(self, token: int, *, tell: bool = True) -> None:
        self.current = token
        if tell:
            self.on_change()


class FakeStore:
    controller_id = "c1"

    def __init__(self) -> None:
        self.fenced: list[int] = []
        self.listener: Callable[[set[str]], None] = lambda areas: None
        self.counter = 40
        self.beats: list[str] = []

    def fence(self, token: int) -> None:
        self.fenced.append(token)

    def register_member(self, controller_id: str, address: str, role: str) -> None:
        self.beats.append(role)

    def begin_term(self, floor: int = 0) -> int:
        self.counter = max(self.counter, floor) + 1
        return self.counter

    def on_change(self, callback: Callable[[set[str]], None]) -> None:
        self.listener = callback


class Counter:
    """Counts calls of any method (async ones too) by name."""

    def __init__(self, *, failing: str = "") -> None:
        self.calls: list[str] = []
        self._failing = failing

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if name == self._failing:
                raise StoreError("the store is unreachable")
            if name == "close":
                return asyncio.sleep(0)
            return None

        return call

    def count(self, name: str) -> int:
        return self.calls.count(name)


class FakeFleet:
    def __init__(self) -> None:
        self.marks = Counter()
        self.terms = 0

    def new_term(self) -> None:
        self.terms += 1


class Parts:
    def __init__(self) -> None:
        self.leadership = FakeLeadership()
        self.store = FakeStore()
        self.fleet = FakeFleet()
        self.reconciler = Counter()
        self.routes = Counter()
        self.events: list[tuple[str, str]] = []
        recorder = Counter()
        recorder.record = lambda severity, reason, obj, message, **kw: self.events.append(  # type: ignore[method-assign]
            (reason, message)
        )
        self.recorder = recorder
        self.role = ControlRole(
            cast(Any, self.leadership),
            cast(Any, self.store),
            cast(Any, self.fleet),
            cast(Any, self.reconciler),
            cast(Any, self.routes),
            cast(Any, recorder),
        )


async def settle(check: Callable[[], bool], timeout: float = 3.0) -> None:
    """Poll until `check()` (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "the role did not change in time"
        await asyncio.sleep(0.01)


@on_loop
async def test_standby_runs_nothing_until_elected_then_starts_from_the_store() -> None:
    parts = Parts()
    parts.role.start()
    await asyncio.sleep(0.05)
    assert parts.reconciler.count("start") == 0
    assert parts.routes.count("start") == 0
    assert parts.store.fenced == []

    parts.leadership.become(7)
    await settle(lambda: parts.role.acting_term == 41)
    assert parts.role.term() == 41
    assert parts.store.fenced == [7]
    # The stored decisions first, then the loops: nothing is placed from scratch.
    calls = parts.reconciler.calls
    assert calls.index("reload_assignment") < calls.index("start")
    assert parts.routes.count("start") == 1
    assert parts.fleet.terms == 1
    assert ("LeaderElected", "controller c1 leads (term 41)") in parts.events
    # Alive, as a standby at first, then (at once) as the leader.
    await settle(lambda: parts.store.beats[-1:] == ["leader"])
    assert parts.store.beats[0] == "standby"
    await parts.role.close()
    assert parts.leadership.closed


@on_loop
async def test_a_leader_past_its_deadline_stops_even_unannounced() -> None:
    parts = Parts()
    parts.role.start()
    parts.leadership.become(3)
    await settle(lambda: parts.role.acting_term == 41)
    # The lease's deadline passes: token() says 0 with no change reported. Pushes stop
    # at once; the loops stop at the next look.
    parts.leadership.become(0, tell=False)
    assert parts.role.term() == 0
    await settle(lambda: parts.role.acting_term == 0)
    assert parts.reconciler.count("close") == 1
    assert parts.routes.count("close") == 1
    assert parts.fleet.terms == 2
    assert any(reason == "LeaderLost" for reason, _ in parts.events)
    await parts.role.close()


@on_loop
async def test_a_new_term_restarts_the_loops_under_the_new_fence() -> None:
    parts = Parts()
    parts.role.start()
    parts.leadership.become(3)
    await settle(lambda: parts.role.acting_term == 41)
    parts.leadership.become(9)
    await settle(lambda: parts.role.acting_term == 42)
    assert parts.store.fenced == [3, 9]
    assert parts.reconciler.count("start") == 2
    assert parts.reconciler.count("close") == 1
    await parts.role.close()


@on_loop
async def test_store_changes_wake_the_leader_and_refresh_a_standby() -> None:
    parts = Parts()
    parts.role.start()
    await asyncio.sleep(0.02)
    parts.store.listener({"assignment", "marks", "events"})
    await settle(lambda: parts.reconciler.count("reload_assignment") == 1)
    assert parts.fleet.marks.count("reload") == 1
    assert parts.recorder.count("catch_up") == 1
    assert parts.reconciler.count("trigger") == 0

    parts.leadership.become(4)
    await settle(lambda: parts.role.acting_term == 41)
    before = parts.reconciler.count("trigger")
    parts.store.listener({"revisions"})
    await settle(lambda: parts.reconciler.count("trigger") == before + 1)
    routes_before = parts.routes.count("trigger")
    parts.store.listener({"credentials"})
    await settle(lambda: parts.routes.count("trigger") == routes_before + 1)
    # The leader's own assignment writes do not reload what it decided.
    reloads = parts.reconciler.count("reload_assignment")
    parts.store.listener({"assignment"})
    await asyncio.sleep(0.05)
    assert parts.reconciler.count("reload_assignment") == reloads
    await parts.role.close()


@on_loop
async def test_a_store_that_fails_while_taking_over_is_retried() -> None:
    parts = Parts()
    parts.reconciler = Counter(failing="reload_assignment")
    parts.role = ControlRole(
        cast(Any, parts.leadership),
        cast(Any, parts.store),
        cast(Any, parts.fleet),
        cast(Any, parts.reconciler),
        cast(Any, parts.routes),
        cast(Any, parts.recorder),
    )
    parts.role.start()
    parts.leadership.become(5)
    await settle(lambda: parts.reconciler.count("reload_assignment") >= 2)
    assert parts.role.acting_term == 0
    assert parts.reconciler.count("start") == 0
    await parts.role.close()


@on_loop
async def test_a_node_following_a_higher_term_makes_the_leader_outrank_it() -> None:
    parts = Parts()
    reported = 0
    parts.role = ControlRole(
        cast(Any, parts.leadership),
        cast(Any, parts.store),
        cast(Any, parts.fleet),
        cast(Any, parts.reconciler),
        cast(Any, parts.routes),
        cast(Any, parts.recorder),
        reported_term=lambda: reported,
    )
    parts.role.start()
    parts.leadership.become(2)
    await settle(lambda: parts.role.acting_term == 41)
    # A store restored from an old backup: a node saw term 90 from a leader since.
    reported = 90
    await settle(lambda: parts.role.acting_term == 91)
    assert parts.role.term() == 91
    assert parts.store.fenced == [2, 2]
    # Following its own term is no reason to take another.
    reported = 91
    await asyncio.sleep(0.5)
    assert parts.role.acting_term == 91
    await parts.role.close()
