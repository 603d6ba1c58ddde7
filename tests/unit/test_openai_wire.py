"""OpenAI's wire format: request bodies in, completions, chunks, events and errors out."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from edgefleet.v1 import common_pb2
from edgefleet_dataplane.openai_wire import (
    SSE_DONE,
    ApiProblem,
    chunk_body,
    completion_body,
    error_body,
    error_headers,
    model_entry,
    parse_json_object,
    parse_messages,
    parse_options,
    requested_model,
    route_problem,
    sse_error,
    sse_event,
    task_hint,
    usage_body,
    wants_stream,
)
from edgefleet_dataplane.route_error import RouteError


def problem_of(call: Any, *args: Any) -> ApiProblem:
    with pytest.raises(ApiProblem) as caught:
        call(*args)
    return caught.value


# -- requests ------------------------------------------------------------------------------


def test_a_body_must_be_one_json_object() -> None:
    assert parse_json_object(b'{"model": "x"}') == {"model": "x"}
    broken = problem_of(parse_json_object, b"{nope")
    assert broken.status == 400
    assert "not valid JSON" in str(broken)
    for raw in (b"", b"[1]", b'"text"'):
        assert "must be a JSON object" in str(problem_of(parse_json_object, raw))


def test_the_model_is_a_string_or_absent() -> None:
    assert requested_model({"model": "helper"}) == "helper"
    assert requested_model({}) == ""
    wrong = problem_of(requested_model, {"model": 7})
    assert (wrong.status, wrong.param) == (400, "model")


def test_the_task_header_wins_over_the_metadata_task() -> None:
    body = {"metadata": {"task": "summarize"}}
    assert task_hint(body, {}) == "summarize"
    assert task_hint(body, {"x-edgefleet-task": "classify"}) == "classify"
    assert task_hint({"metadata": "summarize"}, {}) is None
    assert task_hint({}, {}) is None


def test_stream_is_a_boolean_that_defaults_to_false() -> None:
    assert wants_stream({}) is False
    assert wants_stream({"stream": True}) is True
    assert problem_of(wants_stream, {"stream": "yes"}).param == "stream"


def test_messages_become_chat_messages() -> None:
    messages = parse_messages(
        [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "function": {"name": "time", "arguments": '{"tz": "UTC"}'}}
                ],
            },
            {"role": "tool", "content": "12:00", "tool_call_id": "c1", "name": "time"},
        ]
    )
    assert [(m.role, m.content) for m in messages] == [
        ("system", "Be brief."),
        ("user", "a"),
        ("assistant", ""),
        ("tool", "12:00"),
    ]
    (call,) = messages[2].tool_calls
    assert (call.id, call.name, call.arguments_json) == ("c1", "time", '{"tz": "UTC"}')
    assert (messages[3].tool_call_id, messages[3].name) == ("c1", "time")


@pytest.mark.parametrize(
    ("raw", "says", "param"),
    [
        ([], "non-empty list", "messages"),
        ("hi", "non-empty list", "messages"),
        ([{"content": "hi"}], "with a `role`", "messages[0]"),
        ([{"role": "user"}, {"role": "wizard"}], "unknown role `wizard`", "messages[1]"),
        ([{"role": "user", "content": [{"type": "image_url"}]}], "only text", None),
        ([{"role": "user", "content": 5}], "`content` must be", None),
    ],
)
def test_bad_messages_are_refused_with_where(raw: Any, says: str, param: str | None) -> None:
    problem = problem_of(parse_messages, raw)
    assert problem.status == 400
    assert says in str(problem)
    assert problem.param == param


def test_options_carry_sampling_stop_user_and_tool_choice() -> None:
    options = parse_options(
        {
            "max_tokens": 10,
            "max_completion_tokens": 2**40,
            "temperature": 1,
            "top_p": 0.5,
            "seed": -3,
            "stop": "END",
            "user": "user-1",
            "tool_choice": {"type": "function", "function": {"name": "time"}},
        }
    )
    assert options.max_tokens == 2**31  # the newer field wins, bounded
    assert (options.temperature, options.top_p, options.seed) == (1.0, 0.5, -3)
    assert list(options.stop) == ["END"]
    assert (options.user, options.tool_choice) == ("user-1", "time")
    plain = parse_options({"stop": ["a", "b"], "tool_choice": "none"})
    assert list(plain.stop) == ["a", "b"]
    assert plain.tool_choice == "none"
    assert not plain.HasField("temperature")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": False}, "top_p"),
        ({"seed": 1.5}, "seed"),
        ({"stop": [1]}, "stop"),
        ({"tool_choice": {"type": "function"}}, "tool_choice"),
    ],
)
def test_bad_options_name_their_parameter(body: dict[str, Any], param: str) -> None:
    problem = problem_of(parse_options, body)
    assert (problem.status, problem.param) == (400, param)


# -- errors --------------------------------------------------------------------------------


def test_an_error_body_has_openais_shape() -> None:
    body = error_body(ApiProblem(404, "no such model", "model_not_found", "model"))
    assert body == {
        "error": {
            "message": "no such model",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }
    assert error_body(ApiProblem(502, "upstream"))["error"]["type"] == "server_error"
    assert error_body(ApiProblem(429, "full"))["error"]["type"] == "rate_limit_error"


def test_error_headers_ask_for_a_key_or_a_retry() -> None:
    assert error_headers(400) == [("content-type", "application/json")]
    assert ("www-authenticate", "Bearer") in error_headers(401)
    for status in (429, 503):
        assert ("retry-after", "1") in error_headers(status)
    assert ("retry-after", "1") not in error_headers(502)


@pytest.mark.parametrize(
    ("code", "status", "error_code"),
    [
        (grpc.StatusCode.UNAVAILABLE, 503, "no_healthy_replica"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429, "queue_full"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504, "timeout"),
        (grpc.StatusCode.INVALID_ARGUMENT, 400, None),
        (grpc.StatusCode.INTERNAL, 502, None),
    ],
)
def test_a_routing_failure_maps_to_an_http_status(
    code: grpc.StatusCode, status: int, error_code: str | None
) -> None:
    problem = route_problem(RouteError(code, "it went wrong"))
    assert (problem.status, problem.code, str(problem)) == (status, error_code, "it went wrong")


# -- answers -------------------------------------------------------------------------------


def test_usage_adds_up_the_total() -> None:
    usage = common_pb2.Usage(prompt_tokens=7, completion_tokens=5)
    assert usage_body(usage) == {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}


def test_a_completion_has_one_assistant_choice() -> None:
    usage = common_pb2.Usage(prompt_tokens=1, completion_tokens=2)
    body = completion_body("chatcmpl-1", "helper", 1700000000, "Hi.", "length", usage)
    assert body == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "helper",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi."},
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }


def test_a_chunk_carries_a_delta_and_usage_only_when_given() -> None:
    chunk = chunk_body("chatcmpl-1", "helper", 5, {"content": "Hi"}, None)
    assert chunk == {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 5,
        "model": "helper",
        "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}],
    }
    last = chunk_body("chatcmpl-1", "helper", 5, {}, "stop", {"total_tokens": 3})
    assert last["usage"] == {"total_tokens": 3}
    assert last["choices"][0]["finish_reason"] == "stop"


def test_server_sent_events_are_data_lines_ended_by_a_blank_line() -> None:
    assert sse_event({"a": 1}) == b'data: {"a": 1}\n\n'
    assert SSE_DONE == b"data: [DONE]\n\n"
    error = sse_error("broke off")
    assert error.startswith(b"data: ")
    assert error.endswith(b"\n\n")
    assert json.loads(error[len(b"data: ") :]) == {
        "error": {"message": "broke off", "type": "server_error", "param": None, "code": None}
    }


def test_a_model_entry_names_its_kind_deployment_and_ready_replicas() -> None:
    assert model_entry("helper", "agent", "shop", 9, 2) == {
        "id": "helper",
        "object": "model",
        "created": 9,
        "owned_by": "edgefleet/shop",
        "kind": "agent",
        "ready_replicas": 2,
    }
