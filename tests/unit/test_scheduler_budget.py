"""Memory budgets and the limits of nodes several deployments name."""

from __future__ import annotations

from edgefleet_contract.desired import NodeLimits
from orchestrator.manifest import ResourceLimits
from orchestrator.scheduler.budget import Ledger, budget_of, combine_limits

GiB = 1024**3
MiB = 1024**2


def test_no_resources_means_no_limits() -> None:
    assert combine_limits([]) == NodeLimits()
    assert combine_limits([ResourceLimits()]) == NodeLimits()
    assert budget_of(NodeLimits(), 16 * GiB) is None


def test_the_most_restrictive_value_of_each_field_wins() -> None:
    limits = combine_limits(
        [
            ResourceLimits(max_memory_bytes=6 * GiB, max_concurrent_agents=4),
            ResourceLimits(
                max_memory_bytes=8 * GiB,
                max_memory_fraction=0.5,
                model_cache_bytes=2 * GiB,
                max_queue_per_agent=4,
                auto_unload_idle_models=True,
                idle_timeout_s=900.0,
            ),
            ResourceLimits(idle_timeout_s=60.0),  # does not unload idle models: its timeout waits
        ]
    )
    assert limits == NodeLimits(
        max_memory_bytes=6 * GiB,
        max_memory_fraction=0.5,
        model_cache_bytes=2 * GiB,
        max_concurrent_agents=4,
        max_queue_per_agent=4,
        auto_unload_idle_models=True,
        idle_timeout_s=900.0,
    )


def test_the_budget_is_the_smallest_bound_and_a_share_needs_the_total() -> None:
    limits = NodeLimits(max_memory_bytes=6 * GiB, max_memory_fraction=0.25, model_cache_bytes=0)
    assert budget_of(limits, 16 * GiB) == 4 * GiB
    assert budget_of(limits, 32 * GiB) == 6 * GiB
    assert budget_of(limits, 0) == 6 * GiB  # total unknown: the share cannot be told
    assert budget_of(NodeLimits(max_memory_fraction=0.5), 0) is None
    assert budget_of(NodeLimits(model_cache_bytes=512 * MiB), 8 * GiB) == 512 * MiB


def test_the_ledger_counts_a_shared_model_once_and_frees_it_with_its_last_holder() -> None:
    ledger = Ledger({"n": 4 * GiB, "open": None}, {"big": 3 * GiB, "small": 2 * GiB})
    assert ledger.acquire("n", "big")
    assert ledger.acquire("n", "big")  # a second agent on the same model: no more memory
    assert ledger.used("n") == 3 * GiB
    assert not ledger.fits("n", "small")
    assert not ledger.acquire("n", "small")
    assert ledger.no_room("n", "small") == (
        "no room on `n`: `small` needs 2.0GiB, 1.0GiB free of 4.0GiB"
    )
    ledger.release("n", "big")
    assert ledger.models_on("n") == ["big"]
    ledger.release("n", "big")
    assert (ledger.models_on("n"), ledger.free("n")) == ([], 4 * GiB)
    assert ledger.acquire("open", "big")
    assert ledger.acquire("open", "small")
    assert ledger.free("open") is None
    assert ledger.size("unknown") == 0
