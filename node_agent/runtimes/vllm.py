"""vLLM's OpenAI-compatible server (`vllm serve`): attach to a server that runs already.

Follows the endpoints documented for vLLM's OpenAI-compatible server (v0.6 and
later): `GET /health` (200 when the engine is up), `GET /version`, `GET /v1/models`
(the served model: `id` is the served name, `root` the model it was started
with) and `POST /v1/chat/completions`. With `vllm serve --api-key KEY`, `/v1`
wants a bearer token: name the variable holding it in `api_key_env`. Its load
comes from `GET /metrics`: `vllm:num_requests_running` and
`vllm:num_requests_waiting`, labelled with the served model name.

A vLLM server serves the one model it was started with, and keeps its memory
(GPU memory is reserved up front) until it is stopped. So "load" checks that the
server at the model's URL serves that model, and loading any other model there
is a ModelLoadError that says to start another server; "unload" cannot free
anything and says so in the log.

vLLM cannot run on this machine, so this adapter is tested against a stand-in
server that speaks the same documented API.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import httpx

from node_agent.errors import ModelLoadError, NotFound
from node_agent.runtimes.base import (
    LoadedModel,
    LoadProgress,
    ModelCapacity,
    ModelEndpoint,
    ModelSource,
    ProgressCallback,
    Runtime,
    RuntimeHealth,
    RuntimeName,
    StateListener,
)
from node_agent.runtimes.openai_url import api_key_from_env, list_models
from node_agent.runtimes.prometheus_text import parse_samples, total

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8000"
TIMEOUT = httpx.Timeout(10.0, connect=3.0)
METRICS_TIMEOUT = httpx.Timeout(1.0)


@dataclass(frozen=True, slots=True)
class _Served:
    url: str
    model: str
    key: str | None


class VLLMRuntime(Runtime):
    """A running vLLM server per URL, each serving exactly one model."""

    name: RuntimeName = "vllm"
    SETTINGS: ClassVar[Mapping[str, type]] = {"url": str, "api_key_env": str}

    def __init__(
        self,
        listener: StateListener | None = None,
        *,
        url: str = DEFAULT_URL,
        api_key_env: str = "",
    ) -> None:
        super().__init__(listener)
        self._url = url.rstrip("/")
        self._api_key_env = api_key_env
        self._served: dict[str, _Served] = {}
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        """Nothing to start: vLLM servers are started by the operator (`vllm serve`)."""
        self._client()

    async def stop(self) -> None:
        """Forget every model and close connections (the servers keep running)."""
        self._served.clear()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def load(self, source: ModelSource, progress: ProgressCallback) -> LoadedModel:
        """Check that the vLLM server at the model's URL is healthy and serves this model."""
        url = source.options.get("url", self._url).rstrip("/")
        key = api_key_from_env(
            source.options.get("api_key_env", self._api_key_env), f"the vLLM server at {url}"
        )
        progress(LoadProgress(f"checking the vLLM server at {url}"))
        await self._check_health(url)
        served = await list_models(self._client(), f"{url}/v1", key, f"the vLLM server at {url}")
        names = {str(m["id"]): str(m.get("root") or m["id"]) for m in served}
        # The manifest may name the served name (--served-model-name) or the model it serves.
        model = next((n for n, root in names.items() if source.source in (n, root)), None)
        if model is None:
            serving = ", ".join(f"`{n}`" for n in names) or "nothing"
            raise ModelLoadError(
                f"the vLLM server at {url} serves {serving}, not `{source.source}` (model "
                f"`{source.alias}`); a vLLM server serves one model, so start another one for it "
                f"(vllm serve {source.source} --port PORT) and set that URL as url in this "
                "model's catalog entry"
            )
        self._served[source.alias] = _Served(url=url, model=model, key=key)
        progress(LoadProgress(f"vLLM serves `{model}`", 1.0))
        return LoadedModel(endpoint=self.endpoint(source.alias))

    async def unload(self, alias: str) -> None:
        """Stop using a model; its server keeps the memory, which only stopping it frees."""
        served = self._served.pop(alias, None)
        if served is not None:
            log.info(
                "vLLM cannot unload a model; its memory is freed only when its server stops",
                extra={"model": alias, "url": served.url, "served_name": served.model},
            )

    async def loaded(self) -> list[str]:
        """Aliases in use whose server is healthy now."""
        up = []
        for alias, served in sorted(self._served.items()):
            try:
                await self._check_health(served.url)
            except ModelLoadError:
                continue
            up.append(alias)
        return up

    async def health(self) -> RuntimeHealth:
        """Whether the default server (and every server in use) answers `/health`."""
        urls = sorted({self._url, *(s.url for s in self._served.values())})
        versions = []
        for url in urls:
            try:
                await self._check_health(url)
            except ModelLoadError as exc:
                return RuntimeHealth(False, str(exc))
            versions.append(f"{url} (vLLM {await self._version(url)})")
        return RuntimeHealth(True, "healthy: " + ", ".join(versions))

    def endpoint(self, alias: str) -> ModelEndpoint:
        """The server's `/v1` base URL and its served model name."""
        served = self._served.get(alias)
        if served is None:
            raise NotFound(f"model `{alias}` is not loaded on runtime vllm")
        base = f"{served.url}/v1"
        if served.key:
            return ModelEndpoint(base_url=base, model=served.model, api_key=served.key)
        return ModelEndpoint(base_url=base, model=served.model)

    async def capacity(self, alias: str) -> ModelCapacity:
        """Requests running and waiting, from the server's `/metrics` (vLLM batches as
        many as fit, so it has no fixed slot count)."""
        served = self._served.get(alias)
        if served is None:
            return ModelCapacity()
        try:
            response = await self._client().get(f"{served.url}/metrics", timeout=METRICS_TIMEOUT)
        except httpx.HTTPError:
            return ModelCapacity()
        if response.status_code != 200:
            return ModelCapacity()
        samples = parse_samples(response.text)
        running = total(samples, "vllm:num_requests_running", model_name=served.model)
        waiting = total(samples, "vllm:num_requests_waiting", model_name=served.model)
        return ModelCapacity(
            slots_busy=None if running is None else int(running),
            queued=None if waiting is None else int(waiting),
        )

    async def memory_used(self) -> int:
        """Unknown: vLLM does not report its memory in bytes (it reserves GPU memory up front)."""
        return 0

    # -- HTTP -------------------------------------------------------------------------

    async def _check_health(self, url: str) -> None:
        try:
            response = await self._client().get(f"{url}/health")
        except httpx.HTTPError as exc:
            raise ModelLoadError(
                f"the vLLM server at {url} does not answer ({type(exc).__name__}); start it "
                "(vllm serve MODEL --port PORT) or fix url in the node's catalog"
            ) from exc
        if response.status_code != 200:
            raise ModelLoadError(
                f"the vLLM server at {url} is not healthy (GET /health: HTTP "
                f"{response.status_code}); see its log, it may still be starting"
            )

    async def _version(self, url: str) -> str:
        try:
            response = await self._client().get(f"{url}/version")
            return str(response.json().get("version", "unknown"))
        except (httpx.HTTPError, ValueError, AttributeError):
            return "unknown"

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=TIMEOUT)
        return self._http
