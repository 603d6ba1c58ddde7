"""Ollama, attached over its REST API; models are pulled, loaded and unloaded through it.

Follows Ollama's documented REST API (docs/api.md, v0.5 and later):

* `GET /api/version` for health; `GET /api/tags` for the models on disk;
* `POST /api/pull` to download a missing model, streaming NDJSON progress lines
  `{status, digest, total, completed}` and ending with `{"status": "success"}`
  (or an `{"error": ...}` line);
* `POST /api/chat` with `messages: []` to load a model (`keep_alive: -1`: keep it
  until told otherwise, since the node does its own idle unloading) and with
  `keep_alive: 0` to unload it;
* `GET /api/ps` for the loaded models and their `size` in memory;
* the OpenAI-compatible API under `/v1`, where requests go.

Ollama serves `OLLAMA_NUM_PARALLEL` requests per model at once and says neither
that number nor how many run: set `parallel` under `runtimes: ollama:` to what
the server runs with, and the node sends no more than that at once (queueing
the rest itself) and reports it as the model's slots.

The URL is the model's catalog option `url`, or `runtimes: ollama: {url: ...}`,
or http://127.0.0.1:11434. Ollama cannot run on this machine, so this adapter is
tested against a stand-in server that speaks the same documented API.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

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

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:11434"
TIMEOUT = httpx.Timeout(10.0, connect=3.0)
PULL_SHARE = 0.9
"""Part of the load progress bar that the download takes."""


def full_tag(tag: str) -> str:
    """`model:tag` as Ollama lists it (`latest` when the tag is left out)."""
    name = tag.rsplit("/", 1)[-1]
    return tag if ":" in name else f"{tag}:latest"


class OllamaRuntime(Runtime):
    """An Ollama server that runs already (`ollama serve`); this node drives its models."""

    name: RuntimeName = "ollama"
    SETTINGS: ClassVar[Mapping[str, type]] = {"url": str, "load_timeout": float, "parallel": int}

    def __init__(
        self,
        listener: StateListener | None = None,
        *,
        url: str = DEFAULT_URL,
        load_timeout: float = 300.0,
        parallel: int = 0,
    ) -> None:
        """`parallel`: the server's OLLAMA_NUM_PARALLEL (0: not known, the node does not
        limit how many requests it sends)."""
        super().__init__(listener)
        if load_timeout <= 0:
            raise ValueError("load_timeout must be more than 0 seconds")
        if parallel < 0:
            raise ValueError("parallel must be 0 (not known) or the server's OLLAMA_NUM_PARALLEL")
        self.parallel_requests = parallel or None
        self._url = url.rstrip("/")
        self._load_timeout = load_timeout
        self._models: dict[str, tuple[str, str]] = {}
        """alias -> (server URL, full tag)"""
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        """Attach: Ollama runs as its own service; nothing is checked until a model loads."""
        self._client()

    async def stop(self) -> None:
        """Unload the models this node loaded, then close connections."""
        for alias in list(self._models):
            try:
                await self.unload(alias)
            except ModelLoadError as exc:
                log.warning("could not unload a model", extra={"model": alias, "error": str(exc)})
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def load(self, source: ModelSource, progress: ProgressCallback) -> LoadedModel:
        """Pull the tag if Ollama does not have it, then load it into memory."""
        url = source.options.get("url", self._url).rstrip("/")
        tag = full_tag(source.source)
        progress(LoadProgress(f"asking Ollama at {url} for `{tag}`", 0.0))
        if tag not in await self._tags(url):
            await self._pull(url, tag, progress)
        progress(LoadProgress(f"loading `{tag}` into memory", PULL_SHARE))
        body = await self._post(
            url,
            "/api/chat",
            {"model": tag, "messages": [], "keep_alive": -1, "stream": False},
            read_s=self._load_timeout,
        )
        if not body.get("done", False):
            raise ModelLoadError(
                f"Ollama at {url} did not confirm loading `{tag}` (answer: {_short(body)}); "
                "see Ollama's log (journalctl -u ollama)"
            )
        self._models[source.alias] = (url, tag)
        progress(LoadProgress(f"`{tag}` is loaded", 1.0))
        sizes = await self._running(url)
        return LoadedModel(endpoint=self.endpoint(source.alias), memory_bytes=sizes.get(tag, 0))

    async def unload(self, alias: str) -> None:
        """Ask Ollama to drop the model from memory now (`keep_alive: 0`)."""
        entry = self._models.pop(alias, None)
        if entry is None:
            return
        url, tag = entry
        await self._post(
            url, "/api/chat", {"model": tag, "messages": [], "keep_alive": 0, "stream": False}
        )

    async def loaded(self) -> list[str]:
        """Aliases whose tag Ollama lists in `/api/ps` now."""
        running: dict[str, dict[str, int]] = {}
        aliases = []
        for alias, (url, tag) in sorted(self._models.items()):
            if url not in running:
                try:
                    running[url] = await self._running(url)
                except ModelLoadError:
                    running[url] = {}
            if tag in running[url]:
                aliases.append(alias)
        return aliases

    async def health(self) -> RuntimeHealth:
        """Whether Ollama answers `/api/version` at the default URL and every URL in use."""
        urls = sorted({self._url, *(u for u, _ in self._models.values())})
        answers = []
        for url in urls:
            try:
                response = await self._client().get(f"{url}/api/version")
                version = response.json().get("version", "unknown")
            except (httpx.HTTPError, ValueError, AttributeError) as exc:
                return RuntimeHealth(False, _unreachable(url, exc))
            answers.append(f"Ollama {version} at {url}")
        return RuntimeHealth(True, ", ".join(answers))

    def endpoint(self, alias: str) -> ModelEndpoint:
        """Ollama's OpenAI-compatible base URL and the model's full tag."""
        entry = self._models.get(alias)
        if entry is None:
            raise NotFound(f"model `{alias}` is not loaded on runtime ollama")
        url, tag = entry
        return ModelEndpoint(base_url=f"{url}/v1", model=tag)

    async def capacity(self, alias: str) -> ModelCapacity:
        """Slots from the `parallel` setting, memory from `/api/ps` (Ollama reports no
        running or waiting requests)."""
        entry = self._models.get(alias)
        memory = None
        if entry is not None:
            url, tag = entry
            with contextlib.suppress(ModelLoadError):
                memory = (await self._running(url)).get(tag)
        return ModelCapacity(slots_total=self.parallel_requests, memory_bytes=memory)

    async def memory_used(self) -> int:
        """Bytes Ollama reports (`/api/ps` `size`) for the models this node loaded.

        A server that does not answer counts 0: its memory is unknown, not an error.
        """
        total = 0
        sizes_by_url: dict[str, dict[str, int]] = {}
        for url, tag in self._models.values():
            if url not in sizes_by_url:
                try:
                    sizes_by_url[url] = await self._running(url)
                except ModelLoadError:
                    sizes_by_url[url] = {}
            total += sizes_by_url[url].get(tag, 0)
        return total

    # -- the REST API -----------------------------------------------------------------

    async def _tags(self, url: str) -> set[str]:
        body = await self._get(url, "/api/tags")
        return {full_tag(str(m.get("name") or m.get("model"))) for m in _models_of(body)}

    async def _running(self, url: str) -> dict[str, int]:
        body = await self._get(url, "/api/ps")
        return {
            full_tag(str(m.get("name") or m.get("model"))): int(m.get("size") or 0)
            for m in _models_of(body)
        }

    async def _pull(self, url: str, tag: str, progress: ProgressCallback) -> None:
        layers: dict[str, tuple[int, int]] = {}
        done = 0.0
        # `name` is what Ollama before 0.3 reads; later versions read `model`.
        request = {"model": tag, "name": tag, "stream": True}
        timeout = httpx.Timeout(TIMEOUT.connect, read=120.0, write=10.0, pool=10.0)
        try:
            async with self._client().stream(
                "POST", f"{url}/api/pull", json=request, timeout=timeout
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise ModelLoadError(_pull_failed(tag, _error_of(response)))
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    event = _json_line(line)
                    if "error" in event:
                        raise ModelLoadError(_pull_failed(tag, str(event["error"])))
                    status = str(event.get("status", ""))
                    if status == "success":
                        return
                    digest, total = event.get("digest"), event.get("total")
                    if isinstance(digest, str) and isinstance(total, int) and total > 0:
                        layers[digest] = (int(event.get("completed") or 0), total)
                    if layers:
                        completed = sum(c for c, _ in layers.values())
                        done = max(done, completed / sum(t for _, t in layers.values()))
                    progress(LoadProgress(f"pulling `{tag}`: {status}", done * PULL_SHARE))
        except httpx.HTTPError as exc:
            raise ModelLoadError(_unreachable(url, exc)) from exc
        raise ModelLoadError(
            f"Ollama at {url} ended the pull of `{tag}` without success; see Ollama's log "
            f"and try `ollama pull {tag}` on the node"
        )

    async def _get(self, url: str, path: str) -> dict[str, Any]:
        try:
            response = await self._client().get(f"{url}{path}")
        except httpx.HTTPError as exc:
            raise ModelLoadError(_unreachable(url, exc)) from exc
        return _checked(url, path, response)

    async def _post(
        self, url: str, path: str, body: dict[str, Any], read_s: float | None = None
    ) -> dict[str, Any]:
        try:
            response = await self._client().post(
                f"{url}{path}",
                json=body,
                timeout=httpx.Timeout(read_s, connect=TIMEOUT.connect) if read_s else TIMEOUT,
            )
        except httpx.HTTPError as exc:
            raise ModelLoadError(_unreachable(url, exc)) from exc
        return _checked(url, path, response)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=TIMEOUT)
        return self._http


def _checked(url: str, path: str, response: httpx.Response) -> dict[str, Any]:
    if response.status_code == 404 and path == "/api/chat":
        raise ModelLoadError(
            f"Ollama at {url} does not have the model: {_error_of(response)}; "
            "pull it (ollama pull TAG) or fix source in the catalog"
        )
    if response.status_code != 200:
        raise ModelLoadError(
            f"Ollama at {url} answered {path} with HTTP {response.status_code}: "
            f"{_error_of(response)}; see Ollama's log (journalctl -u ollama)"
        )
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ModelLoadError(
            f"Ollama at {url} answered {path} with something other than a JSON object; "
            "is the URL an Ollama server?"
        )
    return body


def _models_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    models = body.get("models")
    return [m for m in models if isinstance(m, dict)] if isinstance(models, list) else []


def _json_line(line: str) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError:
        return {"status": line.strip()}
    return event if isinstance(event, dict) else {"status": str(event)}


def _error_of(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or "no detail"
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return _short(body)


def _short(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 200 else text[:200] + "…"


def _pull_failed(tag: str, error: str) -> str:
    return (
        f"Ollama could not pull `{tag}`: {error}; check the tag (ollama pull {tag} on the node "
        "shows the same error) and the node's route to the model registry"
    )


def _unreachable(url: str, exc: BaseException) -> str:
    return (
        f"Ollama does not answer at {url} ({type(exc).__name__}); start it (ollama serve, or "
        "systemctl start ollama) or fix url under runtimes: ollama: in the node's catalog"
    )
