"""One node serving several clients at once, with real processes: llama-server's slots,
capacity in the node's status, and agents that stream with a tool offered, through the
node's API and both gateways.

A real controller (gateway on) and one real edge-node (its own gateway on) run the
quickstart manifest: agent `assistant`, with the `time` tool, on SmolLM2-135M served
by llama-server with 4 slots. Whether things ran together or a reply came before the
end of its generation is read from the server's own figures (`/metrics`, `/slots`),
never from wall-clock thresholds.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import openai
import pytest

from edgefleet.v1 import common_pb2, node_pb2
from edgefleet_common.ports import free_port
from tests.conftest import MANIFESTS
from tests.integration.controller_process import ControllerProcess, start_controller
from tests.integration.node_process import NodeProcess, start_node
from tests.integration.test_node_daemon import follow, require_model, watching

pytestmark = [pytest.mark.slow, pytest.mark.model]

AGENT = "assistant"
ALIAS = "smollm2-135m"
SLOTS = 4


@dataclass
class Site:
    """The controller and the node, with the node's llama-server."""

    controller: ControllerProcess
    node: NodeProcess
    node_gateway_url: str

    def server_url(self) -> str:
        """The node's llama-server, at its root (no `/v1`)."""
        (server,) = self.node.runtime_servers()
        command = server.cmdline()
        return f"http://127.0.0.1:{command[command.index('--port') + 1]}"

    def generating(self) -> bool:
        """Whether a slot of the server is generating now (the server's own view)."""
        slots = httpx.get(f"{self.server_url()}/slots", timeout=10).json()
        return any(slot["is_processing"] for slot in slots)

    def server_metric(self, name: str) -> float:
        for line in httpx.get(f"{self.server_url()}/metrics", timeout=10).text.splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
        raise AssertionError(f"{name} is not on the server's metrics page")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    require_model()
    tmp = tmp_path_factory.mktemp("serving")
    gateway_port = free_port()
    node = start_node(
        "local",
        tmp / "node",
        extra_args=[
            "--gateway-listen", f"127.0.0.1:{gateway_port}",
            "--heartbeat-interval", "0.2",
        ],
    )  # fmt: skip
    ctl = start_controller(tmp / "controller", nodes={"local": node.address}, gateway=True)
    try:
        ctl.edgectl("apply", "-f", str(MANIFESTS / "quickstart.yaml"), "--wait", "--timeout", "120")
        yield Site(ctl, node, f"http://127.0.0.1:{gateway_port}/v1")
    finally:
        ctl.close()
        node.close()


def proxy_body(tokens: int) -> bytes:
    """A model-path request that generates exactly `tokens` tokens."""
    return json.dumps(
        {
            "model": ALIAS,
            "messages": [{"role": "user", "content": "Tell me a long story about a lighthouse."}],
            "max_tokens": tokens,
            "ignore_eos": True,
            "stream": True,
        }
    ).encode()


def model_capacity(status: node_pb2.NodeStatus) -> common_pb2.RuntimeCapacity | None:
    for model in status.models:
        if model.alias == ALIAS and model.HasField("capacity"):
            return model.capacity
    return None


@pytest.mark.timeout(240)
def test_parallel_requests_share_the_slots_and_capacity_follows_the_load(site: Site) -> None:
    node = site.node
    decodes_before = site.server_metric("llamacpp:n_decode_total")
    tokens_before = site.server_metric("llamacpp:tokens_predicted_total")
    with watching(node.stub(), 180) as stream:
        idle = follow(stream, lambda s: model_capacity(s) is not None, node)[-1]
        capacity = model_capacity(idle)
        assert capacity is not None
        assert capacity.slots_total == SLOTS
        assert capacity.HasField("memory_bytes")
        assert capacity.memory_bytes > 50 * 2**20

        started = threading.Event()

        def request() -> bytes:
            stub = node.stub()
            started.set()
            chunks = stub.ProxyModel(
                node_pb2.ProxyModelRequest(model=ALIAS, body=proxy_body(160)), timeout=180
            )
            return b"".join(chunk.data for chunk in chunks)

        with ThreadPoolExecutor(SLOTS) as pool:
            answers = [pool.submit(request) for _ in range(SLOTS)]
            started.wait(30)
            busy = follow(stream, lambda s: (model_capacity(s) or capacity).slots_busy >= 2, node)[
                -1
            ]
            bodies = [answer.result() for answer in answers]
        assert busy.load.slots_total == SLOTS
        assert busy.load.slots_busy >= 2
        calm = follow(stream, lambda s: (model_capacity(s) or capacity).slots_busy == 0, node)[-1]
        assert calm.load.slots_busy == 0

    assert all(b"[DONE]" in body for body in bodies)
    generated = site.server_metric("llamacpp:tokens_predicted_total") - tokens_before
    decodes = site.server_metric("llamacpp:n_decode_total") - decodes_before
    assert generated >= SLOTS * 160
    assert decodes < generated, "decode steps produced tokens of several requests at once"
    assert site.server_metric("llamacpp:n_busy_slots_per_decode") > 1.0


@pytest.mark.timeout(180)
def test_streamed_requests_sent_back_to_back_are_all_answered(site: Site) -> None:
    # llama-server may close a connection right after a streamed answer: a request the
    # node sent on it then would be lost, so the node never reuses one.
    def model_requests() -> None:
        stub = site.node.stub()
        for _ in range(15):
            request = node_pb2.ProxyModelRequest(model=ALIAS, body=proxy_body(2))
            body = b"".join(chunk.data for chunk in stub.ProxyModel(request, timeout=60))
            assert b"[DONE]" in body

    def agent_requests() -> None:
        stub = site.node.stub()
        for _ in range(8):
            request = node_pb2.InvokeAgentRequest(
                agent=AGENT,
                messages=[common_pb2.ChatMessage(role="user", content="Say hello.")],
                options=common_pb2.GenerationOptions(max_tokens=2),
            )
            assert list(stub.InvokeAgent(request, timeout=60))[-1].finish_reason

    with ThreadPoolExecutor(SLOTS) as pool:
        runs = [pool.submit(model_requests) for _ in range(2)]
        runs += [pool.submit(agent_requests) for _ in range(2)]
        for run in runs:
            run.result()


@pytest.mark.timeout(180)
def test_an_agent_with_a_tool_streams_through_the_node_with_usage(site: Site) -> None:
    request = node_pb2.InvokeAgentRequest(
        agent=AGENT,
        messages=[common_pb2.ChatMessage(role="user", content="Tell me a story about a clock.")],
        options=common_pb2.GenerationOptions(max_tokens=64, temperature=0.0, seed=1),
    )
    chunks = []
    generating_at_first_text = None
    for chunk in site.node.stub().InvokeAgent(request, timeout=120):
        if chunk.delta and generating_at_first_text is None:
            generating_at_first_text = site.generating()
        chunks.append(chunk)
    deltas = [c.delta for c in chunks if c.delta]
    assert len(deltas) > 1, "the reply arrives in pieces"
    assert generating_at_first_text, "the first text came before the generation ended"
    assert chunks[-1].usage.prompt_tokens > 0
    assert chunks[-1].usage.completion_tokens > 0

    whole = site.node.stub().InvokeAgentUnary(request, timeout=120)
    assert whole.usage.prompt_tokens > 0
    assert whole.usage.completion_tokens > 0


@pytest.mark.timeout(240)
@pytest.mark.parametrize("gateway", ["controller", "node"])
def test_an_agent_with_a_tool_streams_through_a_gateway_with_usage(
    site: Site, gateway: str
) -> None:
    url = site.controller.gateway_url if gateway == "controller" else site.node_gateway_url
    with openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120) as client:
        messages = [{"role": "user", "content": "Tell me a story about a clock."}]
        stream = client.chat.completions.create(
            model=AGENT, messages=messages, max_tokens=64, temperature=0, stream=True
        )
        pieces: list[str] = []
        generating_at_first_text = None
        usage = None
        for chunk in stream:
            text = chunk.choices[0].delta.content if chunk.choices else None
            if text and generating_at_first_text is None:
                generating_at_first_text = site.generating()
            pieces += [text] if text else []
            usage = chunk.usage or usage
        assert len(pieces) > 1, "the reply arrives in pieces"
        assert generating_at_first_text, "the first text came before the generation ended"
        assert usage is not None
        assert usage.prompt_tokens > 0
        assert usage.completion_tokens > 0

        whole = client.chat.completions.create(
            model=AGENT, messages=messages, max_tokens=24, temperature=0
        )
        assert whole.usage is not None
        assert whole.usage.completion_tokens > 0
