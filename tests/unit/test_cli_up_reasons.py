"""What `edgectl up` says while it waits for the local node it started, and what
`apply --wait` says for a local node nobody started."""

from __future__ import annotations

from pathlib import Path

from edgefleet.v1 import controller_pb2
from orchestrator.cli import rollout
from orchestrator.cli.up_command import started_node_reason
from orchestrator.manifest import load_file
from orchestrator.scheduler import schedule
from tests.conftest import MANIFESTS

SINGLE = load_file(MANIFESTS / "single-device.yaml").desired
LOG = Path("/var/lib/edgefleet/up/node-local.log")


def waiting_status() -> tuple[controller_pb2.ClusterStatus, rollout.Expected]:
    """A status while the local node has not connected, with the scheduler's own reason."""
    unplaced = schedule([SINGLE], [], {}).plan.unplaced
    (agent,) = [u for u in unplaced if u.kind == "agent"]
    status = controller_pb2.ClusterStatus(
        deployments=[
            controller_pb2.DeploymentView(
                name=SINGLE.name,
                unplaced=[
                    controller_pb2.Unplaced(kind=u.kind, name=u.name, reason=u.reason)
                    for u in unplaced
                ],
            )
        ],
        agents=[
            controller_pb2.AgentView(
                name=agent.name,
                deployment=SINGLE.name,
                desired_replicas=1,
                unplaced_reason=agent.reason,
            )
        ],
    )
    expected = rollout.Expected(frozenset({SINGLE.name}), frozenset({"primary-agent"}))
    return status, expected


def shown(progress: rollout.Progress) -> str:
    return "\n".join([*progress.waiting, *(row.state for row in progress.rows)])


def test_up_says_it_waits_for_the_node_it_started_and_where_its_log_is() -> None:
    status, expected = waiting_status()
    progress = rollout.assess(
        status, expected, lambda reason: started_node_reason(reason, "local", LOG)
    )
    text = shown(progress)
    assert (
        "agent primary-agent (0/1 ready, waiting for the local node `local` that `edgectl up` "
        f"started to connect (if it does not, see its log: {LOG}))"
    ) in progress.waiting
    assert str(LOG) in progress.rows[-1].state, "and in the not-placed row"
    assert "edge-node run" not in text


def test_apply_wait_keeps_the_hint_to_start_the_node() -> None:
    status, expected = waiting_status()
    text = shown(rollout.assess(status, expected))
    assert "(start it with `edge-node run --id local`)" in text
    assert "edgectl up" not in text


def test_up_leaves_reasons_about_other_nodes_as_they_are() -> None:
    other = (
        "waiting for the local node `kiosk` to connect (start it with `edge-node run --id kiosk`)"
    )
    assert started_node_reason(other, "local", LOG) == other
    assert started_node_reason("node `edge-2` is suspect", "local", LOG) == (
        "node `edge-2` is suspect"
    )
