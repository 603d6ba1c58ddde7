"""A reconcile pass's decision, from plain values: no store, no links, no event log."""

from __future__ import annotations

from collections.abc import Mapping

from edgefleet_contract.desired import NodeDesired
from orchestrator.manifest import DesiredState, load_text
from orchestrator.reconcile_decision import Decision, NodeReport, Stored, decide, stamped
from orchestrator.scheduler import NodeView

CONTROLLER = "ctrl-1"

FLEET = """
deployment:
  type: distributed-edge
  name: fleet
  models:
    - {alias: small, memory: 256MiB}
  agents:
    - {name: greeter, model: small, instructions: Be kind.}
    - {name: notes, model: small}
  nodes:
    - {id: n1, agents: [greeter], models: [small]}
    - {id: n2, agents: [notes], models: [small]}
"""
DEPLOYMENT = load_text(FLEET, source="<fleet>").desired
EDITED = load_text(FLEET.replace("Be kind.", "Be brief."), source="<fleet>").desired
NODES = [NodeView("n1", "ready"), NodeView("n2", "ready")]


def stored(assignment: Mapping[str, NodeDesired]) -> Stored:
    """The store's view after it saved `assignment` (what the reconciler keeps)."""
    return Stored(dict(assignment), {n: d.content_key() for n, d in assignment.items()})


def first_pass(deployment: DesiredState = DEPLOYMENT) -> tuple[Decision, Stored]:
    """The decision on an empty store, and the store once it numbered it (n1: 1, n2: 2)."""
    decision = decide([deployment], NODES, stored({}), {}, local_node="local")
    generations = {node: index + 1 for index, node in enumerate(decision.renew)}
    return decision, stored(decision.assignment(stored({}), generations, CONTROLLER))


def reports(**generations: int) -> dict[str, NodeReport]:
    """Nodes that run something at these generations."""
    return {
        node: NodeReport(generation, runs_work=True) for node, generation in generations.items()
    }


def test_a_first_pass_renews_every_node_given_work_and_records_its_steps() -> None:
    decision, _ = first_pass()
    assert sorted(decision.renew) == ["n1", "n2"]
    assert [a.name for a in decision.renew["n1"].agents] == ["greeter"]
    assert [(s.action, s.node, s.name) for s in decision.steps] == [
        (s.action, s.node, s.name) for s in decision.schedule.plan.steps
    ]
    assert {s.node for s in decision.steps} == {"n1", "n2"}
    assert (decision.force, decision.generation_floor) == ((), 0)


def test_a_pass_over_what_is_stored_renews_nothing() -> None:
    _, store = first_pass()
    again = decide([DEPLOYMENT], NODES, store, reports(n1=1, n2=2), local_node="local")
    assert (again.renew, again.steps, again.force) == ({}, (), ())
    assert again.assignment(store, {}, CONTROLLER) == store.assignment


def test_an_edit_renews_only_the_node_whose_content_changed() -> None:
    _, store = first_pass()
    decision = decide([EDITED], NODES, store, reports(n1=1, n2=2), local_node="local")
    assert list(decision.renew) == ["n1"]
    assert decision.renew["n1"].agents[0].instructions == "Be brief."
    assert [(s.action, s.node, s.name) for s in decision.steps] == [
        ("update-agent", "n1", "greeter")
    ]
    assert decision.force == ()


def test_the_generation_and_sender_are_not_content() -> None:
    _, store = first_pass()
    restamped = {n: stamped(d, d.generation + 10, "ctrl-2") for n, d in store.assignment.items()}
    decision = decide([DEPLOYMENT], NODES, stored(restamped), {}, local_node="local")
    assert decision.renew == {}


def test_renewed_nodes_are_pushed_with_their_new_generation_and_others_as_stored() -> None:
    _, store = first_pass()
    decision = decide([EDITED], NODES, store, {}, local_node="local")
    pushed = decision.assignment(store, {"n1": 7}, CONTROLLER)
    assert (pushed["n1"].generation, pushed["n1"].controller_id) == (7, CONTROLLER)
    assert pushed["n1"].content_key() == decision.renew["n1"].content_key()
    assert pushed["n2"] == store.assignment["n2"]
    # A renewed node the store did not number (it held that content) keeps its state.
    assert decision.assignment(store, {}, CONTROLLER)["n1"] == store.assignment["n1"]


def test_a_node_running_work_nobody_assigned_is_told_to_run_nothing() -> None:
    _, store = first_pass()
    found = {
        **reports(n1=1, n2=2),
        "stray": NodeReport(4, runs_work=True),
        "idle": NodeReport(0, runs_work=False),
    }
    decision = decide(
        [DEPLOYMENT], [*NODES, NodeView("stray", "ready")], store, found, local_node="local"
    )
    assert decision.renew == {"stray": NodeDesired()}
    # It reports a generation the store never gave it: the next one must be above.
    assert (decision.force, decision.generation_floor) == (("stray",), 4)


def test_a_node_ahead_of_the_store_is_forced_above_its_generation_with_the_same_content() -> None:
    _, store = first_pass()
    decision = decide([DEPLOYMENT], NODES, store, reports(n1=1, n2=9), local_node="local")
    assert list(decision.renew) == ["n2"]
    assert decision.renew["n2"].content_key() == store.contents["n2"]
    assert (decision.force, decision.generation_floor) == (("n2",), 9)
    assert decision.steps == (), "nothing to do on the node: only its number changes"


def test_a_node_that_has_not_reported_is_never_forced() -> None:
    decision = decide([DEPLOYMENT], NODES, stored({}), {}, local_node="local")
    assert decision.force == ()
