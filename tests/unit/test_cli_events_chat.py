"""`edgectl events` and `edgectl chat` against the controller API test double."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator

import pytest
from google.protobuf import json_format

from edgefleet.v1 import controller_pb2
from orchestrator.cli import events_command
from orchestrator.cli.main import main
from tests.fakes.controller_api import FakeControllerApi, ago


@pytest.fixture
def api() -> Iterator[FakeControllerApi]:
    with FakeControllerApi.serving() as fake:
        yield fake


def edgectl(api: FakeControllerApi, *args: str) -> int:
    return main(["--controller", api.address, *args])


def test_events_lists_the_stored_events_oldest_first(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "events") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert lines[1].split()[1:4] == ["info", "NodeReady", "node/edge-1"]
    assert lines[-1].split()[1:4] == ["info", "ModelLoading", "model/qwen2.5-coder-0.5b"]
    assert len(lines) == 7


def test_events_about_one_object(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "events", "--object", "node/edge-3") == 0
    (request,) = api.requests("WatchEvents")
    assert (request.object, request.follow) == ("node/edge-3", False)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert "warning   NodeNotReady   node/edge-3   no heartbeat for 3s" in lines[1]


def test_a_malformed_object_filter_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["events", "--object", "edge-3"]) == 2
    assert "is not KIND/NAME" in capsys.readouterr().err


def test_events_json_is_one_parsable_event_per_line(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "events", "-o", "json", "--limit", "2") == 0
    lines = capsys.readouterr().out.splitlines()
    events = [json_format.ParseDict(json.loads(line), controller_pb2.Event()) for line in lines]
    assert [e.reason for e in events] == ["NodeNotReady", "ModelLoading"]
    assert events[0] == api.events[4]


def test_follow_streams_new_events_as_they_happen(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    def happen() -> None:
        api.live_events.put(
            controller_pb2.Event(
                id=7,
                time=ago(0),
                severity=controller_pb2.Event.Severity.SEVERITY_ERROR,
                reason="ModelFailed",
                object="model/qwen2.5-coder-0.5b",
                message="out of memory",
            )
        )
        api.live_events.put(None)  # the controller ends the stream

    threading.Timer(0.1, happen).start()
    assert edgectl(api, "events", "--follow") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert len(lines) == 8
    assert lines[-1].split() == [
        "0s",
        "error",
        "ModelFailed",
        "model/qwen2.5-coder-0.5b",
        "out",
        "of",
        "memory",
    ]
    assert api.requests("WatchEvents")[0].follow


def test_ctrl_c_while_following_exits_130_quietly(
    api: FakeControllerApi, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(events_command, "event_line", interrupted)
    assert edgectl(api, "events", "--follow") == 130
    assert capsys.readouterr().err == ""


# -- chat -----------------------------------------------------------------------------------


def test_chat_streams_the_reply_and_shows_tools_and_the_node(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "chat", "customer-service", "what time is it?") == 0
    captured = capsys.readouterr()
    assert captured.out == "It is 14:02 UTC.\n"
    assert captured.err.splitlines() == [
        "[tool time]",
        "[tool time → 14:02 UTC]",
        "(served by edge-1, finish: stop, 31 prompt + 7 reply tokens)",
    ]
    (request,) = api.requests("Chat")
    assert request.agent == "customer-service"
    assert [(m.role, m.content) for m in request.messages] == [("user", "what time is it?")]
    assert not request.options.HasField("temperature")


def test_chat_options_reach_the_request(api: FakeControllerApi) -> None:
    args = ["--system", "Be brief.", "--max-tokens", "64", "--temperature", "0.2"]
    assert edgectl(api, "chat", "scheduling", "hi", *args, "--tool-choice", "none") == 0
    (request,) = api.requests("Chat")
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "Be brief."),
        ("user", "hi"),
    ]
    assert request.options.max_tokens == 64
    assert request.options.temperature == pytest.approx(0.2)
    assert request.options.tool_choice == "none"


def test_chat_with_an_unknown_agent_exits_1(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "chat", "nobody", "hi") == 1
    assert capsys.readouterr().err.startswith("error: no agent or model named nobody; known: ")


def test_interactive_chat_keeps_the_conversation(
    api: FakeControllerApi, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n\nand tomorrow?\n/exit\nnever sent\n"))
    assert edgectl(api, "chat", "customer-service", "--system", "Be brief.") == 0
    first, second = api.requests("Chat")
    assert [(m.role, m.content) for m in first.messages] == [
        ("system", "Be brief."),
        ("user", "hello"),
    ]
    assert [(m.role, m.content) for m in second.messages] == [
        ("system", "Be brief."),
        ("user", "hello"),
        ("assistant", "It is 14:02 UTC."),
        ("user", "and tomorrow?"),
    ]
    # Piped input: no prompts, stdout holds only the replies.
    assert capsys.readouterr().out == "It is 14:02 UTC.\nIt is 14:02 UTC.\n"


def test_interactive_chat_survives_a_refused_turn_and_leaves_on_eof(
    api: FakeControllerApi, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\nstill there?\n"))
    assert edgectl(api, "chat", "nobody") == 0
    assert len(api.requests("Chat")) == 2
    assert capsys.readouterr().err.count("error: no agent or model named nobody") == 2
