"""`edgectl node cordon|drain|uncordon` and the marks in `get`, `status` and `describe`,
against the controller API test double."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from edgefleet.v1 import common_pb2, controller_pb2
from orchestrator.cli import drain
from orchestrator.cli.main import main
from orchestrator.cli.output import node_state_text, styled
from tests.fakes.controller_api import FakeControllerApi, drain_step


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeControllerApi]:
    monkeypatch.setattr(drain, "POLL_INTERVAL_S", 0.01)
    with FakeControllerApi.serving() as fake:
        yield fake


def edgectl(api: FakeControllerApi, *args: str) -> int:
    return main(["--controller", api.address, *args])


def rows(out: str) -> list[list[str]]:
    return [re.split(r"\s{3,}", line.strip()) for line in out.splitlines() if line.strip()]


# -- cordon and uncordon ----------------------------------------------------------------------


def test_cordon_marks_the_node_and_get_nodes_shows_it(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "node", "cordon", "edge-2", "--reason", "kernel update") == 0
    assert capsys.readouterr().out == (
        "node edge-2 cordoned: no new work goes there; what runs there stays\n"
    )
    request = api.requests("CordonNode")[0]
    assert (request.node_id, request.reason) == ("edge-2", "kernel update")
    assert edgectl(api, "get", "nodes") == 0
    table = rows(capsys.readouterr().out)
    assert [row[:2] for row in table[1:]] == [
        ["edge-1", "ready"],
        ["edge-2", "ready, cordoned"],
        ["edge-3", "not-ready"],
    ]


def test_cordoning_a_cordoned_node_changes_nothing_and_says_so(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "node", "cordon", "edge-2") == 0
    assert edgectl(api, "node", "cordon", "edge-2") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "node edge-2 is already cordoned; nothing changed"


def test_cordoning_a_draining_node_leaves_it_draining(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.marks["edge-1"] = "draining"
    assert edgectl(api, "node", "cordon", "edge-1") == 0
    assert capsys.readouterr().out == (
        "node edge-1 is draining, which keeps new work away already; nothing changed\n"
    )
    assert api.marks == {"edge-1": "draining"}


def test_uncordon_lifts_the_mark_once(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.marks["edge-2"] = "cordoned"
    assert edgectl(api, "node", "uncordon", "edge-2") == 0
    assert edgectl(api, "node", "uncordon", "edge-2") == 0
    assert capsys.readouterr().out.splitlines() == [
        "node edge-2 uncordoned: it takes new work again",
        "node edge-2 is not cordoned; nothing changed",
    ]
    assert api.marks == {}


@pytest.mark.parametrize("action", ["cordon", "drain", "uncordon"])
def test_an_unknown_node_is_an_error_naming_the_known_ones(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str], action: str
) -> None:
    assert edgectl(api, "node", action, "edge-9") == 1
    err = capsys.readouterr().err
    assert err == "error: no node named `edge-9`; nodes: edge-1, edge-2, edge-3\n"
    assert api.marks == {}


def test_marks_show_in_status_describe_and_json(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.marks.update({"edge-1": "draining", "edge-2": "cordoned", "edge-3": "draining"})
    assert edgectl(api, "status") == 0
    out = capsys.readouterr().out
    assert "\nNodes (1 draining, 1 not-ready, 1 ready; 1 cordoned)\n" in out
    nodes = {row[0]: row[1] for row in rows(out) if row[0].startswith("edge-")}
    assert nodes["edge-1"] == "draining"
    assert nodes["edge-2"] == "ready, cordoned"
    assert nodes["edge-3"] == "not-ready, draining (no heartbeat for 3s)"

    assert edgectl(api, "describe", "node", "edge-2") == 0
    assert re.search(
        r"^Maintenance:\s+cordoned for \d+s: no new work", capsys.readouterr().out, re.M
    )

    assert edgectl(api, "get", "nodes", "-o", "json") == 0
    listed = json.loads(capsys.readouterr().out)["nodes"]
    assert [(n["state"], n["mark"]) for n in listed] == [
        ("NODE_STATE_DRAINING", "draining"),
        ("NODE_STATE_READY", "cordoned"),
        ("NODE_STATE_NOT_READY", "draining"),
    ]


def test_marks_are_coloured_as_the_other_maintenance_words() -> None:
    assert styled("cordoned").style == styled("draining").style == "dim"
    node = controller_pb2.NodeView(state=common_pb2.NODE_STATE_READY, mark="cordoned")
    text = node_state_text(node)
    assert text.plain == "ready, cordoned"
    assert [str(span.style) for span in text.spans] == ["dim"]
    assert str(text.style) == str(styled("ready").style)


# -- drain ------------------------------------------------------------------------------------


def test_drain_prints_what_moves_where_until_the_node_is_empty(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.drain_script = [
        drain_step(
            ("agent", "assistant", "ready", "edge-3:pending", ""),
            ("model", "smollm2", "ready", "edge-3:loading", ""),
        ),
        drain_step(
            ("agent", "assistant", "ready", "edge-3:ready", ""),
            ("model", "smollm2", "ready", "edge-3:ready", ""),
        ),
        drain_step(("model", "smollm2", "unloading", "edge-3:ready", "")),
        drain_step(drained=True),
    ]
    assert edgectl(api, "node", "drain", "edge-1") == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[0] == "node edge-1 draining: no new work; its agents and models move to other nodes"
    )
    assert lines[1:6] == [
        "agent assistant (ready on edge-1): moving to edge-3 (pending)",
        "model smollm2 (ready on edge-1): moving to edge-3 (loading)",
        "agent assistant (ready on edge-1): moving to edge-3 (ready)",
        "model smollm2 (ready on edge-1): moving to edge-3 (ready)",
        "model smollm2 (unloading on edge-1): moving to edge-3 (ready)",
    ]
    assert lines[6] == "agent assistant: gone from edge-1"
    assert lines[7] == "model smollm2: gone from edge-1"
    assert re.fullmatch(
        r"node edge-1 drained in [0-9.]+s: nothing runs there; it stays "
        r"cordoned \(`edgectl node uncordon edge-1` lets it take work again\)",
        lines[8],
    )
    assert api.marks == {"edge-1": "draining"}


def test_drain_of_a_draining_node_follows_it_again(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.marks["edge-1"] = "draining"
    assert edgectl(api, "node", "drain", "edge-1") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "node edge-1 is already draining; following its progress"
    assert lines[1].startswith("node edge-1 drained in ")


def test_drain_that_cannot_finish_says_what_is_stuck_and_why(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    why = "node `edge-1` is draining; no room on `edge-2`: `big` needs 3GiB, 1GiB free of 8GiB"
    api.drain_script = [drain_step(("agent", "planner", "ready", "", why))]
    assert edgectl(api, "node", "drain", "edge-1", "--timeout", "0.2") == 1
    captured = capsys.readouterr()
    assert f"agent planner (ready on edge-1): cannot move: {why}" in captured.out
    assert captured.err.splitlines() == [
        "error: node edge-1 is not drained after 0.2s; it stays draining "
        "(`edgectl node uncordon edge-1` stops the drain). Still there:",
        f"  agent planner (ready on edge-1): cannot move: {why}",
    ]


def test_drain_says_why_a_node_cannot_confirm_it_is_empty(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    waiting = "node `edge-1` is not-ready: it cannot confirm it is empty until it is ready"
    api.drain_script = [drain_step(waiting=waiting)]
    assert edgectl(api, "node", "drain", "edge-1", "--timeout", "0.1") == 1
    captured = capsys.readouterr()
    assert f"waiting: {waiting}" in captured.out
    assert captured.err.splitlines()[-1] == f"  {waiting}"


def test_drain_stops_when_the_node_is_uncordoned_meanwhile(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.drain_script = [drain_step(mark="")]
    assert edgectl(api, "node", "drain", "edge-1") == 1
    assert capsys.readouterr().err == (
        "error: node edge-1 is no longer draining (it is uncordoned): the drain stopped\n"
    )


def test_ctrl_c_stops_waiting_and_leaves_the_node_draining(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    api.drain_script = [drain_step(("agent", "assistant", "ready", "edge-3:starting", ""))]

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("orchestrator.cli.drain.time.sleep", interrupted)
    assert edgectl(api, "node", "drain", "edge-1") == 130
    assert capsys.readouterr().err == (
        "stopped waiting; node edge-1 stays draining "
        "(`edgectl node uncordon edge-1` stops the drain)\n"
    )
    assert api.marks == {"edge-1": "draining"}


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_a_bad_drain_timeout_is_a_usage_error(value: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["node", "drain", "edge-1", "--timeout", value])
    assert exit_info.value.code == 2


def test_item_lines_name_the_state_here_and_there() -> None:
    placed = controller_pb2.DrainItem(kind="agent", name="a", state="ready")
    assert drain.item_line(placed, "n1") == (
        "agent a (ready on n1): waiting for another node to take it"
    )
    item = controller_pb2.DrainItem(kind="agent", name="a", state="stopping")
    assert drain.item_line(item, "n1") == "agent a (stopping on n1)"
    item.targets.add(node_id="n2", state="ready")
    item.targets.add(node_id="n3", state="starting")
    assert (
        drain.item_line(item, "n1")
        == "agent a (stopping on n1): moving to n2 (ready), n3 (starting)"
    )
    item.blocked = "no other node can take it"
    assert (
        drain.item_line(item, "n1")
        == "agent a (stopping on n1): cannot move: no other node can take it"
    )
