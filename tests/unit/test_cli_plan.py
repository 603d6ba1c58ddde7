"""Printing plans and judging rollouts: the pure parts of `apply`, `diff` and `apply --wait`."""

from __future__ import annotations

import io

from rich.console import Console

from edgefleet.v1 import common_pb2, controller_pb2
from orchestrator.cli.console import Consoles
from orchestrator.cli.plan_output import print_plan, step_line, summary
from orchestrator.cli.rollout import Expected, assess, progress_table
from tests.fakes.controller_api import canned_models, canned_status

Step = controller_pb2.PlanStep


def _consoles() -> tuple[Consoles, io.StringIO]:
    out = io.StringIO()
    return Consoles(out=Console(file=out, width=200), err=Console(file=io.StringIO())), out


def _plan() -> controller_pb2.Plan:
    return controller_pb2.Plan(
        steps=[
            Step(action=Step.ACTION_EVICT_MODEL, node_id="edge-2", name="tinyllama", reason="idle"),
            Step(action=Step.ACTION_LOAD_MODEL, node_id="edge-2", name="phi-4-mini"),
            Step(action=Step.ACTION_STOP_AGENT, node_id="edge-1", name="faq", reason="removed"),
            Step(action=Step.ACTION_START_AGENT, node_id="edge-2", name="faq", reason="moved"),
            Step(action=Step.ACTION_UPDATE_AGENT, node_id="edge-1", name="triage"),
        ],
        unplaced=[
            controller_pb2.Unplaced(
                kind="model", name="llama-8b", reason="no node has 6GiB free", deployment="shop"
            )
        ],
    )


def test_steps_are_grouped_by_node_in_the_order_nodes_appear() -> None:
    consoles, out = _consoles()
    print_plan(_plan(), consoles)
    assert out.getvalue().splitlines() == [
        "- evict-model tinyllama on edge-2 (idle)",
        "+ load-model phi-4-mini on edge-2",
        "+ start-agent faq on edge-2 (moved)",
        "",
        "- stop-agent faq on edge-1 (removed)",
        "~ update-agent triage on edge-1",
        "",
        "! model llama-8b not placed: no node has 6GiB free",
        "plan: load 1 model, start 1 agent, update 1 agent, stop 1 agent, evict 1 model; "
        "1 not placed",
    ]


def test_a_dry_run_summary_says_would() -> None:
    assert summary(_plan(), dry_run=True).startswith("plan: would load 1 model")
    assert summary(controller_pb2.Plan(), dry_run=True) == "plan: no changes"


def test_the_deployment_is_named_when_a_plan_spans_several() -> None:
    step = Step(action=Step.ACTION_START_AGENT, node_id="n", name="a", deployment="shop")
    assert step_line(step, show_deployment=True).plain == "+ start-agent a on n [shop]"
    consoles, out = _consoles()
    plan = controller_pb2.Plan(
        steps=[step, Step(action=Step.ACTION_LOAD_MODEL, node_id="n", name="m", deployment="x")]
    )
    print_plan(plan, consoles)
    assert "+ load-model m on n [x]" in out.getvalue()


def test_an_unknown_action_is_shown_not_dropped() -> None:
    step = Step(action=99, node_id="edge-1", name="thing")  # type: ignore[arg-type]
    assert step_line(step).plain == "? unknown-step thing on edge-1"


EXPECTED = Expected(
    deployments=frozenset({"distributed-edge"}),
    agents=frozenset({"customer-service", "scheduling", "technical-support", "documentation"}),
)


def test_a_half_rolled_out_deployment_is_waiting_on_what_is_not_ready() -> None:
    progress = assess(canned_status(), EXPECTED)
    assert not progress.done
    assert progress.waiting == (
        "agent documentation (0/1 ready)",
        "agent technical-support (0/1 ready)",
    )
    kinds = [(row.kind, row.name, row.state) for row in progress.rows]
    assert ("model", "qwen2.5-coder-0.5b", "loading 45%") in kinds
    assert ("agent", "billing", "no ready node has 3.0GiB free") in kinds


def test_a_rolled_out_deployment_is_done() -> None:
    progress = assess(canned_status(rolled_out=True), EXPECTED)
    assert progress.done
    assert progress.agents == 4


def test_an_agent_the_controller_has_not_reported_yet_is_waited_for() -> None:
    expected = Expected(EXPECTED.deployments, EXPECTED.agents | {"billing"})
    progress = assess(canned_status(rolled_out=True), expected)
    assert progress.waiting == ("agent billing (not reported yet)",)


def test_a_failed_model_or_agent_fails_the_rollout_with_its_reason() -> None:
    status = canned_status()
    status.ClearField("models")
    status.models.extend(canned_models(failed="GGUF not found"))
    status.agents[0].replicas[0].state = common_pb2.AgentState.AGENT_STATE_FAILED
    status.agents[0].replicas[0].reason = "tool `database` failed to start"
    failures = assess(status, EXPECTED).failures
    assert failures == (
        "model qwen2.5-coder-0.5b on edge-2 failed: GGUF not found",
        "agent customer-service on edge-1 failed: tool `database` failed to start",
    )


def test_the_live_table_has_a_row_per_model_replica_and_agent() -> None:
    table = progress_table(assess(canned_status(), EXPECTED))
    assert [c.header for c in table.columns] == ["KIND", "NAME", "WHERE", "STATE"]
    assert table.row_count == 2 + 4 + 1
