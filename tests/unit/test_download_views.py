"""Downloads as people see them: progress bars, plan fetches, and when peers are re-sent."""

from __future__ import annotations

from edgefleet.v1 import common_pb2, controller_pb2
from edgefleet_contract.desired import BlobPeer, ModelWant, NodeDesired
from orchestrator.cli.rollout import replica_text
from orchestrator.cli.status_command import _model_text
from orchestrator.reconcile_decision import needs_push
from orchestrator.scheduler import Fetch, Plan, PlanStep
from orchestrator.views import download_text, plan_view

MiB = 1024**2


def test_a_download_reads_as_a_bar_with_bytes_source_rate_and_time_left() -> None:
    progress = common_pb2.DownloadProgress(
        bytes_done=61 * MiB, bytes_total=135 * MiB, rate_bps=3.1 * MiB, eta_s=40, source="peer n2"
    )
    assert download_text(progress) == (
        "downloading █████░░░░░ 45% 61.0 MiB/135.0 MiB from peer n2, 3.1 MiB/s, 40 s left"
    )
    unknown = common_pb2.DownloadProgress(bytes_done=2 * MiB, source="origin")
    assert download_text(unknown) == "downloading 2.0 MiB from origin"


def test_the_plan_carries_each_load_s_fetch_in_its_reason() -> None:
    plan = Plan(
        steps=(
            PlanStep("load-model", "n1", "phi", "d", "pinned by the manifest", Fetch(135 * MiB)),
            PlanStep("load-model", "n2", "phi", "d", "pinned by the manifest", Fetch(0)),
            PlanStep("load-model", "n3", "phi", "d", "pinned by the manifest"),
        )
    )
    reasons = [s.reason for s in plan_view(plan).steps]
    assert reasons == [
        "pinned by the manifest; fetch 135.0 MiB",
        "pinned by the manifest; fetch (size unknown)",
        "pinned by the manifest",
    ]


def test_a_downloading_replica_shows_its_bar_in_rollout_and_describe() -> None:
    replica = controller_pb2.ModelReplicaView(
        node_id="n1",
        state=common_pb2.MODEL_STATE_LOADING,
        reason="downloading █░░░░░░░░░ 10% 1.0 MiB/10.0 MiB from origin",
        progress=0.1,
    )
    assert replica_text(replica) == replica.reason
    replica.reason = "starting llama-server"
    assert replica_text(replica) == "loading 10%"


def test_status_names_a_downloading_model_with_its_percentage() -> None:
    model = common_pb2.ModelStatus(alias="phi", state=common_pb2.MODEL_STATE_LOADING)
    assert _model_text(model) == "phi (loading)"
    model.download.CopyFrom(common_pb2.DownloadProgress(bytes_done=45, bytes_total=100))
    assert _model_text(model) == "phi (downloading 45%)"


def test_peers_alone_are_re_sent_only_to_a_node_still_downloading() -> None:
    want = ModelWant(alias="phi", source="https://models.example/phi.gguf")
    current = NodeDesired(generation=3, controller_id="c", models=(want,))
    peer = BlobPeer(node_id="n2", address="10.0.0.2:7443", complete=True)
    wanted = current.model_copy(update={"models": (want.model_copy(update={"peers": (peer,)}),)})
    assert needs_push(None, wanted, downloading=False)
    assert not needs_push(current, current, downloading=True)
    assert not needs_push(current, wanted, downloading=False)
    assert needs_push(current, wanted, downloading=True)
    newer = wanted.model_copy(update={"generation": 4})
    assert needs_push(current, newer, downloading=False)
