"""Escalation through the real gateway, driven by the official `openai` client.

A real controller process with its gateway on loopback and no edge node, so no
agent has a ready replica. Escalation endpoints on 127.0.0.1: a real llama.cpp
server with SmolLM2-135M, and a stand-in OpenAI-compatible server that requires an
API key (which the controller reads from its environment).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from edgefleet_common.ports import free_port
from tests.fakes.openai_api import FakeOpenAIServer, reply_text
from tests.integration.controller_process import ControllerProcess, start_controller
from tests.integration.llama_server import llama_server
from tests.integration.test_node_daemon import require_model

pytestmark = [pytest.mark.slow]

KEY = "sk-escalation-integration-7d41e0"
KEY_ENV = "EDGE_TEST_ESCALATION_KEY"
WRONG_KEY_ENV = "EDGE_TEST_ESCALATION_WRONG_KEY"
CLOUD_MODEL = "gpt-4o-mini"
LLAMA_ALIAS = "cloud-llm"

MANIFEST = """\
deployment:
  type: single-device
  name: {name}
  models:
    - alias: {name}-model
  agents:
    - name: {name}
      model: {name}-model
      instructions: "You are a concise assistant. Answer in one short sentence."
      tools: [time]
{escalation}"""


def manifest(path: Path, name: str, escalation: str = "") -> Path:
    """A deployment whose agent `name` can run nowhere (no node is connected)."""
    path.write_text(MANIFEST.format(name=name, escalation=escalation))
    return path


def escalation(base_url: str, model: str, key_env: str = "", timeout: str = "60s") -> str:
    lines = [
        "  escalation:",
        f'    base_url: "{base_url}"',
        f'    model: "{model}"',
        f"    timeout: {timeout}",
    ]
    if key_env:
        lines.append(f'    api_key_env: "{key_env}"')
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def cloud() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer([CLOUD_MODEL], api_key=KEY) as server:
        yield server


@pytest.fixture(scope="module")
def controller(
    tmp_path_factory: pytest.TempPathFactory, cloud: FakeOpenAIServer
) -> Iterator[ControllerProcess]:
    """The controller, with the key (and a wrong one) in its environment and four
    deployments applied: keyed, wrong key, unreachable endpoint, no escalation."""
    tmp = tmp_path_factory.mktemp("escalation")
    with pytest.MonkeyPatch.context() as env:
        env.setenv(KEY_ENV, KEY)
        env.setenv(WRONG_KEY_ENV, "sk-not-the-key")
        ctl = start_controller(tmp / "controller", gateway=True)
    try:
        unreachable = f"http://127.0.0.1:{free_port()}/v1"
        files = [
            manifest(
                tmp / "keyed.yaml", "keyed", escalation(f"{cloud.url}/v1", CLOUD_MODEL, KEY_ENV)
            ),
            manifest(
                tmp / "wrong.yaml",
                "wrong",
                escalation(f"{cloud.url}/v1", CLOUD_MODEL, WRONG_KEY_ENV),
            ),
            manifest(tmp / "gone.yaml", "gone", escalation(unreachable, CLOUD_MODEL)),
            manifest(tmp / "plain.yaml", "plain"),
        ]
        ctl.edgectl("apply", *[arg for f in files for arg in ("-f", str(f))])
        yield ctl
    finally:
        ctl.close()


@pytest.fixture
def client(controller: ControllerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=controller.gateway_url, api_key="unused", max_retries=0, timeout=120
    ) as client:
        yield client


def hello(client: openai.OpenAI, model: str, **extra: object) -> object:
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello."}], **extra
    )


# -- a real OpenAI-compatible endpoint: llama.cpp ------------------------------------------


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A llama.cpp server on 127.0.0.1 serving SmolLM2 as `cloud-llm`; yields `.../v1`."""
    require_model()
    with llama_server(LLAMA_ALIAS, tmp_path_factory.mktemp("llama") / "server.log") as url:
        yield url


@pytest.mark.model
@pytest.mark.timeout(240)
def test_an_agent_with_no_ready_replica_is_answered_by_a_real_llama_server(
    controller: ControllerProcess, client: openai.OpenAI, llama: str, tmp_path: Path
) -> None:
    controller.edgectl(
        "apply",
        "-f",
        str(manifest(tmp_path / "hybrid.yaml", "hybrid", escalation(llama, LLAMA_ALIAS))),
    )
    raw = client.chat.completions.with_raw_response.create(
        model="hybrid",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=12,
        temperature=0,
    )
    assert raw.headers["x-edgefleet-node"] == "escalation"
    assert raw.headers["x-edgefleet-escalated"] == "no-ready-replica"
    reply = raw.parse()
    assert reply.model == LLAMA_ALIAS
    assert reply.choices[0].message.content
    assert reply.usage is not None
    assert reply.usage.completion_tokens > 0

    streamed = client.chat.completions.with_raw_response.create(
        model="hybrid",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=12,
        temperature=0,
        stream=True,
    )
    assert streamed.headers["x-edgefleet-node"] == "escalation"
    assert streamed.headers["content-type"].startswith("text/event-stream")
    chunks = list(streamed.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)

    events = controller.edgectl("events", "--object", "agent/hybrid", "-o", "json").stdout
    reasons = [json.loads(line)["reason"] for line in events.splitlines() if line.strip()]
    assert "Escalating" in reasons


# -- a stand-in endpoint that requires a key -----------------------------------------------


@pytest.mark.timeout(120)
def test_the_key_goes_as_bearer_and_never_into_the_controller_log(
    controller: ControllerProcess, client: openai.OpenAI, cloud: FakeOpenAIServer
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="keyed", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-edgefleet-node"] == "escalation"
    reply = raw.parse()
    assert reply.choices[0].message.content == reply_text("openai", CLOUD_MODEL)
    stream = hello(client, "keyed", stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)  # type: ignore[attr-defined]
    assert text == reply_text("openai", CLOUD_MODEL)

    sent = [r for r in cloud.requests if r.path == "/v1/chat/completions"]
    assert sent
    assert all(r.headers.get("authorization") == f"Bearer {KEY}" for r in sent)
    assert sent[0].json()["messages"][0]["role"] == "system"
    assert sent[0].json()["model"] == CLOUD_MODEL

    controller.process.expect(r"request escalated.*agent/keyed", timeout=30)
    log = "\n".join(controller.process.lines)
    assert KEY not in log
    events = controller.edgectl("events", "-o", "json").stdout
    assert "agent/keyed" in events
    assert KEY not in events
    status = controller.edgectl("status", "-o", "json").stdout
    assert KEY not in status


@pytest.mark.timeout(120)
def test_a_key_the_endpoint_rejects_is_a_502_naming_the_host(
    client: openai.OpenAI, cloud: FakeOpenAIServer
) -> None:
    with pytest.raises(openai.InternalServerError) as failed:
        hello(client, "wrong")
    assert failed.value.status_code == 502
    assert failed.value.code == "escalation_failed"
    assert cloud.url.removeprefix("http://") in failed.value.message
    assert "401" in failed.value.message
    assert failed.value.response.headers["x-edgefleet-node"] == "escalation"
    assert "sk-not-the-key" not in failed.value.response.text


@pytest.mark.timeout(120)
def test_an_unreachable_endpoint_is_a_clean_502(client: openai.OpenAI) -> None:
    for stream in (False, True):
        with pytest.raises(openai.InternalServerError) as failed:
            hello(client, "gone", stream=stream)
        assert failed.value.status_code == 502
        assert failed.value.code == "escalation_unreachable"
        assert "no ready replica of agent `gone`" in failed.value.message


@pytest.mark.timeout(120)
def test_without_escalation_no_ready_replica_stays_503_with_retry_after(
    client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.InternalServerError) as unavailable:
        hello(client, "plain")
    assert unavailable.value.status_code == 503
    assert unavailable.value.response.headers["retry-after"] == "1"
    assert unavailable.value.code == "no_healthy_replica"
    assert "x-edgefleet-escalated" not in unavailable.value.response.headers


@pytest.mark.timeout(120)
def test_an_unknown_model_stays_404_with_escalation_configured(
    client: openai.OpenAI, cloud: FakeOpenAIServer
) -> None:
    before = len(cloud.requests)
    with pytest.raises(openai.NotFoundError) as unknown:
        hello(client, "keyed-typo")
    assert unknown.value.code == "model_not_found"
    assert len(cloud.requests) == before
