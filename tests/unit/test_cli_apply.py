"""`edgectl apply`, `diff`, `delete` and `rollback` against the controller API test double."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format

from edgefleet.v1 import controller_pb2
from orchestrator.cli.main import main
from orchestrator.manifest import load_text
from tests.conftest import MANIFESTS
from tests.fakes.controller_api import FakeControllerApi, canned_models, canned_status

INVALID = """\
deployment:
  type: distributed-edge
  nodes:
    - id: "edge-1"
      models: ["m"]
  coordination:
    failover: sometimes
"""


@pytest.fixture
def api() -> Iterator[FakeControllerApi]:
    with FakeControllerApi.serving() as fake:
        yield fake


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    """A copy of the distributed-edge manifest (deployment `distributed-edge`)."""
    path = tmp_path / "distributed-edge.yaml"
    shutil.copy(MANIFESTS / "distributed-edge.yaml", path)
    return path


def edgectl(api: FakeControllerApi, *args: str) -> int:
    return main(["--controller", api.address, *args])


def test_apply_sends_the_manifest_and_prints_the_plan_by_node(
    api: FakeControllerApi, fleet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "apply", "-f", str(fleet)) == 0
    (request,) = api.requests("Apply")
    assert request.manifest == fleet.read_text(encoding="utf-8")
    assert request.source == str(fleet)
    assert not request.dry_run
    assert capsys.readouterr().out.splitlines() == [
        f"deployment distributed-edge: revision 1 applied from {fleet}",
        "+ load-model phi-4-mini on edge-1 (pinned by the manifest)",
        "+ start-agent customer-service on edge-1 (pinned by the manifest)",
        "+ start-agent scheduling on edge-1 (pinned by the manifest)",
        "",
        "+ load-model qwen2.5-coder-0.5b on edge-2 (pinned by the manifest)",
        "+ start-agent technical-support on edge-2 (pinned by the manifest)",
        "+ start-agent documentation on edge-2 (pinned by the manifest)",
        "plan: load 2 models, start 4 agents",
    ]


def test_dry_run_says_would_and_stores_nothing(
    api: FakeControllerApi, fleet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "apply", "--dry-run", "-f", str(fleet)) == 0
    out = capsys.readouterr().out
    assert "deployment distributed-edge: would become revision 1 (dry run)" in out
    assert out.endswith("plan: would load 2 models, start 4 agents\n")
    assert api.requests("Apply")[0].dry_run
    assert api.revisions == {}


def test_applying_the_same_manifest_again_changes_nothing(
    api: FakeControllerApi, fleet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "apply", "-f", str(fleet)) == 0
    assert edgectl(api, "apply", "-f", str(fleet)) == 0
    out = capsys.readouterr().out
    assert out.endswith("deployment distributed-edge: unchanged (revision 1)\nplan: no changes\n")


def test_unplaced_work_is_listed_with_its_reason(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "apply", "-f", str(MANIFESTS / "clinic-fleet.yaml")) == 0
    out = capsys.readouterr().out
    assert (
        "! agent front-desk not placed (1 replica short): node reception-pc has not joined" in out
    )
    assert "; 4 not placed" in out


def test_a_folder_applies_every_manifest_in_it(
    api: FakeControllerApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("quickstart.yaml", "single-device.yaml"):
        shutil.copy(MANIFESTS / name, tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a manifest", encoding="utf-8")
    assert edgectl(api, "apply", "-f", str(tmp_path)) == 0
    assert [r.source for r in api.requests("Apply")] == [
        str(tmp_path / "quickstart.yaml"),
        str(tmp_path / "single-device.yaml"),
    ]


def test_an_invalid_manifest_sends_nothing_and_prints_as_validate(
    api: FakeControllerApi, fleet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(INVALID, encoding="utf-8")
    assert edgectl(api, "apply", "-f", str(fleet), "-f", str(bad)) == 1
    apply_err = capsys.readouterr().err
    assert api.calls == []
    assert main(["validate", "-f", str(bad)]) == 1
    assert apply_err == capsys.readouterr().err
    assert f"{bad}:7:15: error: `sometimes` is not allowed here" in apply_err
    assert apply_err.endswith(f"{bad}: invalid (1 error(s))\n")


def test_an_invalid_manifest_needs_no_controller(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(INVALID, encoding="utf-8")
    assert main(["--controller", "127.0.0.1:1", "apply", "-f", str(bad)]) == 1
    assert "cannot reach" not in capsys.readouterr().err


def test_the_controllers_diagnostics_print_as_they_came(
    api: FakeControllerApi, fleet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rendered = f"{fleet}:4:11: error: node `edge-1` is untrusted (deployment.nodes[0].id)"
    api.refuse["Apply"] = (grpc.StatusCode.INVALID_ARGUMENT, rendered)
    assert edgectl(api, "apply", "-f", str(fleet)) == 1
    assert capsys.readouterr().err == rendered + "\n"


def test_losing_the_controller_mid_call_exits_3(
    api: FakeControllerApi, fleet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.lose["Apply"] = "shutting down"
    assert edgectl(api, "apply", "-f", str(fleet)) == 3
    err = capsys.readouterr().err
    assert err == f"error: lost the controller at {api.address} during Apply: shutting down\n"


@pytest.mark.parametrize(
    "args",
    [
        ["apply"],
        ["apply", "-f", "x.yaml", "--watch", "."],
        ["apply", "-f", "x.yaml", "--wait", "--dry-run"],
        ["apply", "-f", "x.yaml", "--timeout", "5"],
    ],
)
def test_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    assert capsys.readouterr().err.startswith("error: ")


# -- apply --wait ---------------------------------------------------------------------------


def test_wait_follows_the_rollout_until_every_agent_is_ready(
    api: FakeControllerApi, fleet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.status_script = [canned_status(), canned_status(), canned_status(rolled_out=True)]
    assert edgectl(api, "apply", "-f", str(fleet), "--wait") == 0
    out = capsys.readouterr().out
    # Off a terminal: one line per change, not a redrawn table.
    assert out.count("model qwen2.5-coder-0.5b edge-2: loading 45%") == 1
    assert "model qwen2.5-coder-0.5b edge-2: ready" in out
    assert "agent technical-support edge-2 (starting): 0/1 ready" in out
    assert "agent technical-support edge-2: 1/1 ready" in out
    assert out.endswith("ready: 4 agent(s) of distributed-edge\n")
    assert len(api.requests("GetStatus")) == 3


def test_wait_fails_at_once_when_a_model_fails(
    api: FakeControllerApi, fleet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = canned_status()
    broken.ClearField("models")
    broken.models.extend(canned_models(failed="not enough memory: needs 1.1GiB, 0.8GiB free"))
    api.status_script = [broken]
    assert edgectl(api, "apply", "-f", str(fleet), "--wait") == 1
    assert capsys.readouterr().err == (
        "error: rollout failed:\n"
        "  model qwen2.5-coder-0.5b on edge-2 failed: not enough memory: needs 1.1GiB, "
        "0.8GiB free\n"
    )


def test_wait_gives_up_at_the_timeout_saying_what_is_not_ready(
    api: FakeControllerApi, fleet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "apply", "-f", str(fleet), "--wait", "--timeout", "0.4") == 1
    assert capsys.readouterr().err == (
        "error: timed out after 0.4s; not ready:\n"
        "  agent documentation (0/1 ready)\n"
        "  agent technical-support (0/1 ready)\n"
    )


# -- diff -----------------------------------------------------------------------------------


def test_diff_exits_1_with_changes_and_shows_the_manifest_diff(
    api: FakeControllerApi, fleet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "apply", "-f", str(fleet)) == 0
    fleet.write_text(
        fleet.read_text(encoding="utf-8").replace("failover: automatic", "failover: manual"),
        encoding="utf-8",
    )
    capsys.readouterr()
    assert edgectl(api, "diff", "-f", str(fleet)) == 1
    out = capsys.readouterr().out
    assert out.startswith("deployment distributed-edge: against revision 1\n")
    assert "-    failover: automatic\n+    failover: manual\n" in out
    assert "plan: would load 2 models, start 4 agents" in out


def test_diff_exits_0_without_changes(
    api: FakeControllerApi, fleet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "apply", "-f", str(fleet)) == 0
    assert edgectl(api, "diff", "-f", str(fleet)) == 0
    assert "against revision 1, no change" in capsys.readouterr().out


def test_diff_errors_exit_above_1(
    api: FakeControllerApi, fleet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(INVALID, encoding="utf-8")
    assert edgectl(api, "diff", "-f", str(bad)) == 2
    api.refuse["Diff"] = (grpc.StatusCode.FAILED_PRECONDITION, "store is read-only")
    assert edgectl(api, "diff", "-f", str(fleet)) == 2
    assert main(["--controller", "127.0.0.1:1", "diff", "-f", str(fleet)]) == 3
    assert "error: store is read-only" in capsys.readouterr().err


# -- delete ---------------------------------------------------------------------------------


def test_delete_by_name_prints_the_plan(
    api: FakeControllerApi, fleet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "apply", "-f", str(fleet)) == 0
    capsys.readouterr()
    assert edgectl(api, "delete", "distributed-edge", "--dry-run") == 0
    assert "distributed-edge" in api.revisions
    assert edgectl(api, "delete", "distributed-edge") == 0
    assert api.revisions == {}
    out = capsys.readouterr().out
    assert "deployment distributed-edge: would be deleted (dry run)" in out
    assert "- stop-agent customer-service on edge-1 (deployment deleted)" in out
    assert "deployment distributed-edge: deleted" in out
    assert out.endswith("plan: stop 4 agents, unload 2 models\n")


def test_delete_from_a_file_uses_the_deployment_it_declares(
    api: FakeControllerApi, fleet: Path
) -> None:
    assert edgectl(api, "apply", "-f", str(fleet)) == 0
    assert edgectl(api, "delete", "-f", str(fleet)) == 0
    assert [r.deployment for r in api.requests("Delete")] == ["distributed-edge"]


def test_delete_needs_a_name_or_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["delete"]) == 2
    assert main(["delete", "x", "-f", "y.yaml"]) == 2


# -- rollback -------------------------------------------------------------------------------


def _two_revisions(api: FakeControllerApi, fleet: Path) -> None:
    assert edgectl(api, "apply", "-f", str(fleet)) == 0
    fleet.write_text(
        fleet.read_text(encoding="utf-8").replace("failover: automatic", "failover: none"),
        encoding="utf-8",
    )
    assert edgectl(api, "apply", "-f", str(fleet)) == 0


def test_rollback_prints_the_new_revision_and_the_plan(
    api: FakeControllerApi, fleet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _two_revisions(api, fleet)
    capsys.readouterr()
    assert edgectl(api, "rollback", "distributed-edge") == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "deployment distributed-edge: rolled back as revision 3 (rollback to 1)\n"
    )
    assert "plan: load 2 models, start 4 agents" in out
    (request,) = api.requests("Rollback")
    assert (request.deployment, request.to_revision, request.dry_run) == (
        "distributed-edge",
        0,
        False,
    )
    applied = load_text(api.revisions["distributed-edge"][-1].manifest)
    assert applied.desired.coordination.failover == "automatic"


def test_rollback_to_a_revision_that_does_not_exist_exits_1(
    api: FakeControllerApi, fleet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _two_revisions(api, fleet)
    assert edgectl(api, "rollback", "--to", "7", "--dry-run") == 1
    assert capsys.readouterr().err == "error: deployment distributed-edge has no revision 7\n"


def test_rollback_list_shows_revisions_newest_first(
    api: FakeControllerApi, fleet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _two_revisions(api, fleet)
    capsys.readouterr()
    assert edgectl(api, "rollback", "--list") == 0  # the only deployment
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["REVISION", "APPLIED", "CAUSE", "SOURCE", "DIGEST"]
    assert [line.split()[0] for line in lines[1:]] == ["2", "1"]
    assert edgectl(api, "rollback", "distributed-edge", "--list", "-o", "json") == 0
    document = json.loads(capsys.readouterr().out)
    parsed = json_format.ParseDict(document, controller_pb2.ListRevisionsResponse())
    assert [r.number for r in parsed.revisions] == [2, 1]
