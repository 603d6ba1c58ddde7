"""The OpenAI-compatible gateway, driven by the official `openai` client, unchanged.

A real controller process with its gateway on loopback, one real edge-node with
the llama.cpp runtime and SmolLM2-135M, and the quickstart manifest (agent
`assistant` on model alias `smollm2-135m`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import MANIFESTS
from tests.integration.controller_process import ControllerProcess, start_controller
from tests.integration.node_process import NodeProcess, start_node
from tests.integration.test_node_daemon import require_model

pytestmark = [pytest.mark.slow, pytest.mark.model]

AGENT = "assistant"
ALIAS = "smollm2-135m"


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ControllerProcess, NodeProcess]]:
    require_model()
    tmp = tmp_path_factory.mktemp("gateway")
    node = start_node("local", tmp / "node")
    ctl = start_controller(tmp / "controller", nodes={"local": node.address}, gateway=True)
    try:
        ctl.edgectl("apply", "-f", str(MANIFESTS / "quickstart.yaml"), "--wait", "--timeout", "120")
        yield ctl, node
    finally:
        ctl.close()
        node.close()


@pytest.fixture
def client(fleet: tuple[ControllerProcess, NodeProcess]) -> Iterator[openai.OpenAI]:
    ctl, _ = fleet
    with openai.OpenAI(
        base_url=ctl.gateway_url, api_key="unused", max_retries=0, timeout=60
    ) as client:
        yield client


@pytest.mark.timeout(180)
def test_models_lists_agents_and_aliases_with_ready_replicas(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {AGENT, ALIAS}
    assert models[AGENT].model_extra == {"kind": "agent", "ready_replicas": 1}
    assert models[ALIAS].model_extra == {"kind": "model", "ready_replicas": 1}


@pytest.mark.timeout(180)
def test_an_agent_answers_whole_and_streamed(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=AGENT,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=12,
        temperature=0,
    )
    assert raw.headers["x-edgefleet-node"] == "local"
    reply = raw.parse()
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None
    assert reply.usage.completion_tokens > 0

    stream = client.chat.completions.create(
        model=AGENT,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=12,
        temperature=0,
        stream=True,
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces).strip()


@pytest.mark.timeout(180)
def test_a_model_alias_goes_straight_to_the_runtime(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=ALIAS, messages=[{"role": "user", "content": "Count to three."}], max_tokens=12
    )
    assert reply.choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model=ALIAS,
            messages=[{"role": "user", "content": "Count to three."}],
            max_tokens=12,
            stream=True,
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()


@pytest.mark.timeout(180)
def test_a_task_hint_picks_the_model_that_lists_the_task(
    fleet: tuple[ControllerProcess, NodeProcess],
) -> None:
    ctl, _ = fleet
    answer = httpx.post(
        f"{ctl.gateway_url}/chat/completions",
        json={
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4,
            "metadata": {"task": "conversation"},
        },
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] is not None
    missing = httpx.post(
        f"{ctl.gateway_url}/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}]},
        headers={"X-EdgeFleet-Task": "translation"},
        timeout=60,
    )
    assert missing.status_code == 404
    assert "translation" in missing.json()["error"]["message"]


@pytest.mark.timeout(180)
def test_errors_have_openai_shape_and_status(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(
            model="no-such-agent", messages=[{"role": "user", "content": "hi"}]
        )
    assert unknown.value.code == "model_not_found"
    assert "no-such-agent" in unknown.value.message
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=AGENT, messages=[])


@pytest.mark.timeout(180)
def test_no_healthy_replica_is_503_with_retry_after(
    fleet: tuple[ControllerProcess, NodeProcess], client: openai.OpenAI
) -> None:
    # Last in this module: it stops the only node.
    _, node = fleet
    node.kill()
    with pytest.raises(openai.InternalServerError) as unavailable:
        client.chat.completions.create(
            model=AGENT, messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
    assert unavailable.value.status_code == 503
    assert unavailable.value.response.headers["retry-after"] == "1"
    assert unavailable.value.code == "no_healthy_replica"


def test_gateway_paths_answer_404_and_405(tmp_path: Path) -> None:
    """No model needed: the gateway's own routing of paths and methods."""
    ctl = start_controller(tmp_path / "controller", gateway=True)
    try:
        base = ctl.gateway_url
        assert httpx.get(f"{base}/nowhere", timeout=10).status_code == 404
        assert httpx.get(f"{base}/chat/completions", timeout=10).status_code == 405
        bad = httpx.post(f"{base}/chat/completions", content=b"{not json", timeout=10)
        assert bad.status_code == 400
        assert bad.json()["error"]["type"] == "invalid_request_error"
        assert httpx.get(f"{base}/models", timeout=10).json() == {"object": "list", "data": []}
    finally:
        ctl.close()


PAIR = """\
deployment:
  type: distributed-edge
  name: pair
  models:
    - alias: smollm2-135m
      runtime: llama.cpp
  agents:
    - name: assistant
      model: smollm2-135m
      replicas: 2
      tools: [time]
  nodes:
    - id: edge-1
      models: [smollm2-135m]
      address: "{edge1}"
    - id: edge-2
      models: [smollm2-135m]
      address: "{edge2}"
  coordination:
    load_balancing: round-robin
    failover: automatic
"""


@pytest.mark.timeout(240)
def test_requests_spread_over_replicas_and_survive_a_killed_node(tmp_path: Path) -> None:
    require_model()
    nodes = {i: start_node(i, tmp_path / i) for i in ("edge-1", "edge-2")}
    ctl = start_controller(tmp_path / "controller", gateway=True)
    try:
        manifest = tmp_path / "pair.yaml"
        manifest.write_text(
            PAIR.format(edge1=nodes["edge-1"].address, edge2=nodes["edge-2"].address)
        )
        ctl.edgectl("apply", "-f", str(manifest), "--wait", "--timeout", "120")
        with openai.OpenAI(
            base_url=ctl.gateway_url, api_key="unused", max_retries=0, timeout=60
        ) as client:

            def ask() -> str:
                raw = client.chat.completions.with_raw_response.create(
                    model=AGENT,
                    messages=[{"role": "user", "content": "Say yes."}],
                    max_tokens=4,
                    temperature=0,
                )
                assert raw.parse().choices[0].message.content is not None
                return raw.headers["x-edgefleet-node"]

            served = [ask() for _ in range(6)]
            assert sorted(set(served)) == ["edge-1", "edge-2"], served

            nodes["edge-2"].kill()
            after = [ask() for _ in range(6)]
            assert after == ["edge-1"] * 6, "every request after the kill succeeded on edge-1"
        agents = {a["name"]: a for a in ctl.json("get", "agents")["agents"]}
        replicas = {r["node_id"]: r for r in agents[AGENT]["replicas"]}
        assert replicas["edge-1"]["latency_ewma_ms"] > 0
    finally:
        ctl.close()
        for node in nodes.values():
            node.close()
