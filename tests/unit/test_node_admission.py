"""Admission on a node: bounded queues, the node-wide agent limit, per-model slots."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from node_agent.admission import Admission, Slots, TargetLoad
from node_agent.errors import QueueFull

pytestmark = pytest.mark.timeout(10)


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 5))


class Requests:
    """Requests held inside admission until released, so a test controls who runs."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.running: set[str] = set()
        self._release: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, key: str, target: str, model: str = "m", *, agent: bool = True) -> None:
        self._release[key] = asyncio.Event()
        self._tasks[key] = asyncio.create_task(self._hold(key, target, model, agent))

    async def _hold(self, key: str, target: str, model: str, agent: bool) -> None:
        async with self.admission.admit(target, model, agent=agent):
            self.running.add(key)
            try:
                await self._release[key].wait()
            finally:
                self.running.discard(key)

    async def finish(self, key: str) -> None:
        self._release[key].set()
        await self._tasks[key]

    def task(self, key: str) -> asyncio.Task[None]:
        return self._tasks[key]


async def settle() -> None:
    """Let every runnable task take its next steps."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_full_queue_refuses_at_once_and_says_the_limit() -> None:
    async def scenario() -> None:
        admission = Admission(lambda model: None, max_queue=2, max_concurrent_agents=1)
        requests = Requests(admission)
        for key in ("r1", "r2", "r3"):
            requests.start(key, "agent-a")
        await settle()
        load = admission.loads["agent-a"]
        assert (load.in_flight, load.waiting) == (1, 2)
        assert requests.running == {"r1"}

        with pytest.raises(QueueFull, match=r"`agent-a` has 2 requests waiting \(the limit is 2\)"):
            async with admission.admit("agent-a", "m", agent=True):
                pytest.fail("admitted past a full queue")
        assert load.waiting == 2, "a refused request takes no place"

        await requests.finish("r1")
        await settle()
        assert requests.running == {"r2"}
        await requests.finish("r2")
        await requests.finish("r3")
        assert (load.in_flight, load.waiting, load.requests_total) == (0, 0, 3)

    run(scenario)


def test_queues_are_per_target() -> None:
    async def scenario() -> None:
        admission = Admission(lambda model: None, max_queue=1, max_concurrent_agents=1)
        requests = Requests(admission)
        requests.start("a1", "agent-a")
        requests.start("a2", "agent-a")  # waits
        requests.start("b1", "agent-b")  # waits in its own queue
        await settle()
        assert admission.loads["agent-a"].waiting == 1
        assert admission.loads["agent-b"].waiting == 1
        with pytest.raises(QueueFull):
            async with admission.admit("agent-b", "m", agent=True):
                pass
        for key in ("a1", "a2", "b1"):
            await requests.finish(key)

    run(scenario)


def test_the_agent_limit_is_node_wide_and_model_requests_do_not_count() -> None:
    async def scenario() -> None:
        admission = Admission(lambda model: None, max_concurrent_agents=2)
        requests = Requests(admission)
        requests.start("a", "agent-a")
        requests.start("b", "agent-b")
        requests.start("c", "agent-c")
        requests.start("proxy", "model:m", agent=False)  # a model request takes no agent slot
        await settle()
        assert requests.running == {"a", "b", "proxy"}
        await requests.finish("b")
        await settle()
        assert requests.running == {"a", "c", "proxy"}
        for key in ("a", "c", "proxy"):
            await requests.finish(key)

    run(scenario)


def test_a_models_parallelism_limits_requests_across_agents() -> None:
    async def scenario() -> None:
        parallel = {"small": 1}
        asked: list[str] = []

        def parallelism(model: str) -> int | None:
            asked.append(model)
            return parallel.get(model)

        admission = Admission(parallelism)
        requests = Requests(admission)
        requests.start("a", "agent-a", "small")
        requests.start("b", "agent-b", "small")
        requests.start("other", "agent-c", "big")  # no limit known for `big`
        await settle()
        assert requests.running == {"a", "other"}
        assert admission.loads["agent-b"].waiting == 1
        assert set(asked) == {"small", "big"}

        # Read at every request: a model reloaded on a runtime that serves two at once.
        # The slot that opens goes to `b`, which waited longest, not to the newcomer.
        parallel["small"] = 2
        requests.start("c", "agent-c2", "small")
        await settle()
        assert requests.running == {"a", "b", "other"}
        await requests.finish("a")
        await settle()
        assert requests.running == {"b", "c", "other"}
        for key in ("b", "c", "other"):
            await requests.finish(key)

    run(scenario)


def test_raising_the_limits_admits_waiters_and_lowering_them_cuts_nothing() -> None:
    async def scenario() -> None:
        admission = Admission(lambda model: None, max_queue=1, max_concurrent_agents=1)
        requests = Requests(admission)
        requests.start("a", "agent-a")
        requests.start("b", "agent-b")
        await settle()
        assert requests.running == {"a"}

        await admission.configure(max_queue=4, max_concurrent_agents=2)
        await settle()
        assert requests.running == {"a", "b"}
        assert admission.max_queue == 4

        await admission.configure(max_queue=1, max_concurrent_agents=1)
        await settle()
        assert requests.running == {"a", "b"}, "running work is never cut"
        requests.start("c", "agent-c")
        await settle()
        await requests.finish("a")
        await settle()
        assert "c" not in requests.running, "still two running against a limit of one"
        await requests.finish("b")
        await settle()
        assert requests.running == {"c"}

        await admission.configure(max_queue=1, max_concurrent_agents=None)  # unlimited
        requests.start("d", "agent-d")
        await settle()
        assert requests.running == {"c", "d"}
        await requests.finish("c")
        await requests.finish("d")

    run(scenario)


def test_a_request_cancelled_while_waiting_frees_its_place_in_the_queue() -> None:
    async def scenario() -> None:
        admission = Admission(lambda model: None, max_queue=1, max_concurrent_agents=1)
        requests = Requests(admission)
        requests.start("running", "agent-a")
        requests.start("gives-up", "agent-a")
        await settle()
        load = admission.loads["agent-a"]
        assert load.waiting == 1
        requests.task("gives-up").cancel()
        await settle()
        assert requests.task("gives-up").cancelled()
        assert (load.waiting, load.in_flight) == (0, 1)
        requests.start("next", "agent-a")  # the place is free again
        await settle()
        assert load.waiting == 1
        await requests.finish("running")
        await requests.finish("next")
        assert load.requests_total == 2, "the cancelled request never ran"

    run(scenario)


def test_slots_go_to_waiters_in_arrival_order() -> None:
    async def scenario() -> None:
        slots = Slots(1)
        order: list[int] = []
        release = asyncio.Event()

        async def enter(number: int) -> None:
            async with slots.hold():
                order.append(number)
                await release.wait()

        tasks = [asyncio.create_task(enter(n)) for n in range(4)]
        await settle()
        assert order == [0]
        release.set()
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2, 3]

    run(scenario)


def test_a_waiter_cancelled_just_as_a_slot_frees_does_not_strand_the_next() -> None:
    """The released slot must reach another waiter when the one woken for it gives up."""

    async def scenario() -> None:
        slots = Slots(1)
        entered: list[str] = []

        async def enter(name: str) -> None:
            async with slots.hold():
                entered.append(name)

        first = asyncio.create_task(enter("first"))
        second = asyncio.create_task(enter("second"))

        async def holder() -> None:
            async with slots.hold():
                await settle()  # both others are waiting now
            # The release woke a waiter; it is cancelled before it could run (a caller's
            # deadline passing at that moment).
            first.cancel()

        await holder()
        await asyncio.wait_for(second, 1)
        assert entered == ["second"]
        assert first.cancelled()

    run(scenario)


def test_failures_and_latency_are_counted() -> None:
    async def scenario() -> None:
        admission = Admission(lambda model: None)
        with contextlib.suppress(RuntimeError):
            async with admission.admit("agent-a", "m", agent=True) as load:
                load.observe_latency(100.0)
                raise RuntimeError("the runtime broke")
        async with admission.admit("agent-a", "m", agent=True) as load:
            load.observe_latency(200.0)
        load = admission.loads["agent-a"]
        assert (load.requests_total, load.failures_total) == (2, 1)
        assert load.latency_ewma_ms == pytest.approx(130.0)  # 100 + 0.3 * (200 - 100)
        async with admission.admit("agent-b", "m", agent=True) as other:
            other.observe_latency(70.0)
            in_flight, waiting, latency = admission.totals()
            assert (in_flight, waiting) == (1, 0)
            assert latency == pytest.approx(100.0)
        admission.forget("agent-b")
        assert "agent-b" not in admission.loads

    run(scenario)


def test_latency_ewma_starts_at_the_first_sample() -> None:
    load = TargetLoad()
    load.observe_latency(50.0)
    assert load.latency_ewma_ms == 50.0
