"""Models that leave the node's set while requests still run on them (`Retirements`)."""

from __future__ import annotations

import contextlib

import pytest

from edgefleet_contract.desired import NodeLimits
from node_agent import model_retirement
from node_agent.errors import NotFound
from tests.unit.test_node_models import MB, Harness, model, run, until

pytestmark = pytest.mark.timeout(20)


def test_a_model_serving_a_request_leaves_the_set_at_once_and_unloads_when_it_ends() -> None:
    async def scenario() -> None:
        harness = Harness()
        await harness.want([model("a")])
        await harness.ready("a")
        async with contextlib.AsyncExitStack() as request:
            await request.enter_async_context(harness.manager.use("a", 1.0))
            await harness.want([])
            assert harness.manager.slots() == []
            with pytest.raises(NotFound):
                await request.enter_async_context(harness.manager.use("a", 1.0))
            assert harness.runtime.unloads() == [], "not under a running request"
        await until(lambda: harness.runtime.unloads() == ["a"], "unloaded once it ended")
        await harness.manager.close()

    run(scenario)


def test_a_retiring_model_wanted_again_stays_as_it_is() -> None:
    async def scenario() -> None:
        harness = Harness()
        await harness.want([model("a")])
        await harness.ready("a")
        async with harness.manager.use("a", 1.0):
            await harness.want([])
            await harness.want([model("a")])
            assert harness.state("a") == "ready"
        await harness.want([model("a")])
        assert (harness.runtime.loads(), harness.runtime.unloads()) == (["a"], [])
        await harness.manager.close()

    run(scenario)


def test_a_new_model_waits_for_the_memory_a_retiring_one_frees() -> None:
    async def scenario() -> None:
        harness = Harness()
        budget = NodeLimits(max_memory_bytes=150 * MB)
        await harness.want([model("a", 100 * MB)], budget)
        await harness.ready("a")
        async with harness.manager.use("a", 1.0):
            await harness.want([model("b", 100 * MB)], budget)
            await until(lambda: harness.state("b") == "loading", "b waits to load")
            assert harness.runtime.loads() == ["a"], "b must not load beside a"
        await harness.ready("b")
        assert harness.runtime.calls[-2:] == [("unload", "a"), ("load", "b")]
        assert "failed" not in harness.history["b"]
        assert harness.runtime.most_served == 1
        await harness.manager.close()

    run(scenario)


def test_a_request_that_never_ends_holds_a_retiring_model_only_for_the_grace_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(model_retirement, "RETIRE_GRACE_S", 0.2)

    async def scenario() -> None:
        harness = Harness()
        await harness.want([model("a")])
        await harness.ready("a")
        async with harness.manager.use("a", 1.0):
            await harness.want([])
            await until(lambda: harness.runtime.unloads() == ["a"], "unloaded after the grace")
        await harness.manager.close()

    run(scenario)


def test_closing_unloads_a_retiring_model_at_once() -> None:
    async def scenario() -> None:
        harness = Harness()
        await harness.want([model("a")])
        await harness.ready("a")
        async with harness.manager.use("a", 1.0):
            await harness.want([])
            await harness.manager.close()
            assert harness.runtime.calls[-2:] == [("unload", "a"), ("stop", "")]

    run(scenario)
