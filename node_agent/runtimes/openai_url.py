"""Any external OpenAI-compatible endpoint, used as it is: no lifecycle at all.

Follows the OpenAI REST API v1 as other servers implement it: `GET {url}/models`
(list models; used for health and to check a key) and `POST {url}/chat/completions`
(sent by the node's clients, not by this adapter). `url` is the base URL an
OpenAI client takes (for example `https://api.example.com/v1`), from the model's
catalog entry (`url`) or from `runtimes: openai: {url: ...}`; a manifest may also
give the base URL as the model's `source`, and then the alias is the model name.
The API key comes from the environment variable named by `api_key_env`; it is
sent as a bearer token and never logged.

The endpoint behind such a URL is not on this machine, so this adapter is tested
against a stand-in server that speaks the same documented API.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from node_agent.errors import ModelLoadError, NotFound
from node_agent.runtimes.base import (
    LoadedModel,
    LoadProgress,
    ModelEndpoint,
    ModelSource,
    ProgressCallback,
    Runtime,
    RuntimeHealth,
    RuntimeName,
    StateListener,
)

log = logging.getLogger(__name__)

TIMEOUT = httpx.Timeout(15.0, connect=5.0)


def api_key_from_env(variable: str, who: str) -> str | None:
    """The API key in environment variable `variable` ('' means none); ModelLoadError if unset.

    `who` names what needs the key, for the message.
    """
    if not variable:
        return None
    key = os.environ.get(variable)
    if not key:
        raise ModelLoadError(
            f"{who} needs an API key from environment variable `{variable}` (api_key_env), "
            "which is not set for the edge-node process; export it in the node's environment "
            "(for example in its systemd unit) and restart the node"
        )
    return key


def bearer(key: str | None) -> dict[str, str]:
    """The Authorization header for an API key, or no header."""
    return {"Authorization": f"Bearer {key}"} if key else {}


@dataclass(frozen=True, slots=True)
class _Target:
    url: str
    model: str
    key: str | None


class OpenAIURLRuntime(Runtime):
    """An OpenAI-compatible URL: load checks that it answers, unload forgets the model."""

    name: RuntimeName = "openai"
    SETTINGS: ClassVar[Mapping[str, type]] = {"url": str, "api_key_env": str}

    def __init__(
        self, listener: StateListener | None = None, *, url: str = "", api_key_env: str = ""
    ) -> None:
        super().__init__(listener)
        self._url = url.rstrip("/")
        self._api_key_env = api_key_env
        self._targets: dict[str, _Target] = {}
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        """Nothing to start: the endpoint runs elsewhere."""
        self._client()

    async def stop(self) -> None:
        """Forget every model and close connections."""
        self._targets.clear()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def load(self, source: ModelSource, progress: ProgressCallback) -> LoadedModel:
        """Check that the endpoint answers `GET /models` with this node's key."""
        target = self._target(source)
        progress(LoadProgress(f"checking the OpenAI-compatible endpoint at {target.url}"))
        models = await list_models(self._client(), target.url, target.key, _who(target.url))
        if models and target.model not in {m["id"] for m in models}:
            # Some servers list only part of what they serve (e.g. per-deployment names),
            # so an unlisted model is worth a warning, not a refusal.
            log.warning(
                "model not listed by the endpoint; requests may fail",
                extra={"model": source.alias, "served_name": target.model, "url": target.url},
            )
        self._targets[source.alias] = target
        progress(LoadProgress("endpoint answers", 1.0))
        return LoadedModel(endpoint=self.endpoint(source.alias))

    async def unload(self, alias: str) -> None:
        """Forget the model; the endpoint's memory is not this node's to free."""
        self._targets.pop(alias, None)

    async def loaded(self) -> list[str]:
        """Aliases this node uses through this runtime."""
        return sorted(self._targets)

    async def health(self) -> RuntimeHealth:
        """Whether every URL in use (and the default URL) answers `GET /models`."""
        keys = {t.url: t.key for t in self._targets.values()}
        if self._url and self._url not in keys:
            try:
                keys[self._url] = api_key_from_env(self._api_key_env, f"endpoint {self._url}")
            except ModelLoadError as exc:
                return RuntimeHealth(False, str(exc))
        if not keys:
            return RuntimeHealth(True, "no OpenAI-compatible URL in use")
        for url, key in sorted(keys.items()):
            try:
                await list_models(self._client(), url, key, _who(url))
            except ModelLoadError as exc:
                return RuntimeHealth(False, str(exc))
        return RuntimeHealth(True, f"answering: {', '.join(sorted(keys))}")

    def endpoint(self, alias: str) -> ModelEndpoint:
        """The external base URL and model name for a model in use."""
        target = self._targets.get(alias)
        if target is None:
            raise NotFound(f"model `{alias}` is not loaded on runtime openai")
        if target.key:
            return ModelEndpoint(base_url=target.url, model=target.model, api_key=target.key)
        return ModelEndpoint(base_url=target.url, model=target.model)

    async def memory_used(self) -> int:
        """Nothing on this node: the model runs elsewhere."""
        return 0

    # -- helpers ----------------------------------------------------------------------

    def _target(self, source: ModelSource) -> _Target:
        if source.source.startswith(("http://", "https://")):
            url, model = source.source, source.alias
        else:
            url, model = source.options.get("url", self._url), source.source
        if not url:
            raise ModelLoadError(
                f"model `{source.alias}` runs on an OpenAI-compatible endpoint but no URL is "
                f'set: add url to its catalog entry (e.g. "{source.alias}: {{runtime: openai, '
                f'source: {source.source}, url: https://HOST/v1}}") or set runtimes: openai: '
                "{url: ...} in the node's catalog"
            )
        key_env = source.options.get("api_key_env", self._api_key_env)
        key = api_key_from_env(key_env, f"model `{source.alias}` at {url}")
        return _Target(url=url.rstrip("/"), model=model, key=key)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=TIMEOUT)
        return self._http


def _who(url: str) -> str:
    return f"the OpenAI-compatible endpoint at {url}"


async def list_models(
    client: httpx.AsyncClient, base_url: str, key: str | None, who: str
) -> list[dict[str, Any]]:
    """The model objects of `GET {base_url}/models`; ModelLoadError says what is wrong.

    `who` names the server for the message (e.g. "the vLLM server at URL").
    """
    try:
        response = await client.get(f"{base_url}/models", headers=bearer(key))
    except httpx.HTTPError as exc:
        raise ModelLoadError(
            f"{who} does not answer ({type(exc).__name__}: {exc}); check that it runs, the URL, "
            "and this node's network route to it"
        ) from exc
    if response.status_code in (401, 403):
        raise ModelLoadError(
            f"{who} refused this node's API key (HTTP {response.status_code}); set the right key "
            "in the environment variable named by api_key_env"
        )
    if response.status_code != 200:
        raise ModelLoadError(
            f"{who} answered GET {base_url}/models with HTTP {response.status_code}; check that "
            "the URL is the API's base URL (ending in /v1)"
        )
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise ModelLoadError(
            f"{who} answered GET {base_url}/models with something other than an OpenAI model "
            "list; check that the URL is the API's base URL (ending in /v1)"
        )
    return [m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
