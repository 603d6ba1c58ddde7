"""Every runtime reports a model's capacity in the same terms: slots in use of total,
requests queued inside it, memory. vLLM, Ollama and Foundry Local are tested against
stand-ins that speak their documented APIs (llama.cpp against the real server, in
tests/integration/test_llamacpp_runtime.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from node_agent.errors import RuntimeUnavailable
from node_agent.runtimes.base import ModelCapacity, ModelSource
from node_agent.runtimes.foundry_local import FoundryLocalRuntime
from node_agent.runtimes.ollama import OllamaRuntime
from node_agent.runtimes.prometheus_text import parse_samples, total
from node_agent.runtimes.registry import create_runtime
from node_agent.runtimes.vllm import VLLMRuntime
from tests.fakes.foundry_local import FakeFoundryLocal, catalog_entry
from tests.fakes.ollama import FakeOllama
from tests.fakes.server import Reply, Request
from tests.fakes.vllm import FakeVLLM

MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
VLLM_METRICS = f"""\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="{MODEL}"}} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{engine="0",model_name="{MODEL}"}} 5.0
vllm:num_requests_waiting{{engine="0",model_name="other-model"}} 9.0
vllm:gpu_cache_usage_perc{{engine="0",model_name="{MODEL}"}} 0.25
"""


class FakeVLLMWithMetrics(FakeVLLM):
    """vLLM with its Prometheus page (`GET /metrics`), as `vllm serve` exposes it."""

    page = VLLM_METRICS

    def handle(self, request: Request) -> Reply:
        if (request.method, request.path) == ("GET", "/metrics"):
            return Reply.text(self.page)
        return super().handle(request)


@pytest.fixture
def vllm() -> Iterator[FakeVLLMWithMetrics]:
    with FakeVLLMWithMetrics(MODEL) as server:
        yield server


def test_metrics_pages_are_read_by_name_and_labels() -> None:
    samples = parse_samples(VLLM_METRICS + "garbage line\nllamacpp:requests_deferred 2\n")
    assert total(samples, "vllm:num_requests_waiting", model_name=MODEL) == 5.0
    assert total(samples, "vllm:num_requests_waiting") == 14.0
    assert total(samples, "llamacpp:requests_deferred") == 2.0
    assert total(samples, "vllm:num_requests_swapped") is None


def test_vllm_reports_running_and_waiting_requests_of_its_model(
    vllm: FakeVLLMWithMetrics,
) -> None:
    async def scenario() -> tuple[ModelCapacity, ModelCapacity]:
        runtime = VLLMRuntime(url=vllm.url)
        try:
            source = ModelSource(alias="qwen", runtime="vllm", source=MODEL)
            await runtime.load(source, lambda _: None)
            busy = await runtime.capacity("qwen")
            vllm.page = "# an engine that exports nothing yet\n"
            quiet = await runtime.capacity("qwen")
            return busy, quiet
        finally:
            await runtime.stop()

    busy, quiet = asyncio.run(scenario())
    assert busy == ModelCapacity(slots_total=None, slots_busy=3, queued=5, memory_bytes=None)
    assert quiet == ModelCapacity(), "figures it does not export are unknown, not zero"
    assert vllm.paths("GET")[-1] == "/metrics"


def test_vllm_that_stops_answering_has_unknown_capacity(vllm: FakeVLLMWithMetrics) -> None:
    async def scenario() -> ModelCapacity:
        runtime = VLLMRuntime(url=vllm.url)
        try:
            await runtime.load(ModelSource("qwen", "vllm", MODEL), lambda _: None)
            vllm.stop()
            return await runtime.capacity("qwen")
        finally:
            await runtime.stop()

    assert asyncio.run(scenario()) == ModelCapacity()


def test_ollama_reports_its_parallel_setting_and_the_models_memory() -> None:
    tag = "phi4-mini:3.8b-q4_K_M"
    with FakeOllama(library={tag: 2_500_000_000}) as ollama:

        async def scenario() -> tuple[ModelCapacity, int | None]:
            runtime = OllamaRuntime(url=ollama.url, parallel=4)
            try:
                await runtime.load(ModelSource("phi", "ollama", tag), lambda _: None)
                return await runtime.capacity("phi"), runtime.slots("phi")
            finally:
                await runtime.stop()

        capacity, slots = asyncio.run(scenario())
    assert slots == 4, "the node sends no more than the server runs at once"
    assert capacity == ModelCapacity(slots_total=4, memory_bytes=2_500_000_000)


def test_ollama_without_a_parallel_setting_leaves_the_slots_unknown() -> None:
    runtime = OllamaRuntime()
    assert runtime.slots("phi") is None
    assert asyncio.run(runtime.capacity("phi")) == ModelCapacity()


def test_foundry_local_reports_what_its_api_documents_the_loaded_models_size() -> None:
    model_id = "qwen2.5-0.5b-instruct-generic-cpu:3"
    entry = catalog_entry(model_id, "qwen2.5-0.5b", "CPU", "CPUExecutionProvider", 822)
    with FakeFoundryLocal([entry]) as foundry:

        async def scenario() -> ModelCapacity:
            runtime = FoundryLocalRuntime(url=foundry.url)
            try:
                source = ModelSource("qwen", "foundry-local", "qwen2.5-0.5b")
                await runtime.load(source, lambda _: None)
                return await runtime.capacity("qwen")
            finally:
                await runtime.stop()

        capacity = asyncio.run(scenario())
    assert capacity == ModelCapacity(memory_bytes=822 * 2**20)


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"parallel": 0}, "parallel must be at least 1"),
        ({"parallel": True}, "must be a whole number"),
        ({"context": -1}, "context must be 0"),
    ],
)
def test_llama_cpp_slot_settings_are_checked(settings: dict[str, object], problem: str) -> None:
    with pytest.raises(RuntimeUnavailable, match=problem):
        create_runtime("llama.cpp", None, settings)


def test_ollama_parallel_setting_is_checked() -> None:
    with pytest.raises(RuntimeUnavailable, match="OLLAMA_NUM_PARALLEL"):
        create_runtime("ollama", None, {"parallel": -1})
