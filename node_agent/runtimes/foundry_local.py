"""Foundry Local, attached over its REST API; models are downloaded, loaded and unloaded through it.

Follows the Foundry Local REST API reference (docs/reference/reference-rest.md,
"under development" API of the 0.x service) and the calls its Python SDK
(`foundry-local-sdk`) makes:

* the service listens on a port it picks at start: the URL is configured
  (`runtimes: foundry-local: {url: ...}`) or read from `foundry service status`
  ("... running on http://127.0.0.1:PORT/openai/status"), after
  `foundry service start` if it is not running; it is read again when the
  service stops answering, since a restarted service has a new port;
* `GET /openai/status` for health; `GET /foundry/list` for the catalog (an
  alias such as `phi-4-mini` has one variant per device; the model `name` is
  the id); `GET /openai/models` for the downloaded models;
* `POST /openai/download` with the catalog entry, streaming progress lines
  (`("file", 0.42)` or `... 42.00%`) and ending with `{"success": ..., "errorMessage": ...}`;
* `GET /openai/load/{id}?unload=false` (the node does its own idle unloading),
  `GET /openai/unload/{id}?force=true`, `GET /openai/loadedmodels`;
* the OpenAI-compatible API under `/v1`, where requests go.

The API documents no request counts or queue: a model's capacity is only whether
it is loaded and its size (the node counts the requests it sends itself).

Foundry Local cannot run on this machine, so this adapter is tested against a
stand-in server that speaks the same documented API.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from node_agent.errors import ModelLoadError, NotFound, RuntimeUnavailable
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

TIMEOUT = httpx.Timeout(10.0, connect=3.0)
CLI_TIMEOUT_S = 60.0
DOWNLOAD_SHARE = 0.9
"""Part of the load progress bar that the download takes."""
MiB = 1024**2
# The SDK's preference when an alias has several variants, for a non-Windows host.
PROVIDER_ORDER = (
    "QNNExecutionProvider",
    "CUDAExecutionProvider",
    "WebGpuExecutionProvider",
    "CPUExecutionProvider",
)
# Variants the service must be told which execution provider to use (as the SDK does).
EP_QUERY = {"CUDAExecutionProvider": "cuda", "WebGpuExecutionProvider": "webgpu"}

_URL = re.compile(r"https?://[^\s/]+")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)%")
_TUPLE = re.compile(r'^\("(.*)",\s*([0-9.]+)\)\s*$')


@dataclass(frozen=True, slots=True)
class _Variant:
    id: str
    file_size_mb: int
    entry: Mapping[str, Any]


def download_progress(line: str) -> tuple[str, float] | None:
    """(file, fraction 0..1) from one progress line of `/openai/download`, or None."""
    if match := _TUPLE.match(line.strip()):
        return match.group(1), min(float(match.group(2)), 1.0)
    if match := _PERCENT.search(line):
        return line.strip(), min(float(match.group(1)) / 100, 1.0)
    return None


class FoundryLocalRuntime(Runtime):
    """The Foundry Local service of this machine; this node drives its models."""

    name: RuntimeName = "foundry-local"
    SETTINGS: ClassVar[Mapping[str, type]] = {
        "url": str,
        "cli": str,
        "device": str,
        "load_timeout": float,
    }

    def __init__(
        self,
        listener: StateListener | None = None,
        *,
        url: str = "",
        cli: str = "foundry",
        device: str = "",
        load_timeout: float = 300.0,
    ) -> None:
        super().__init__(listener)
        if device and device.upper() not in ("CPU", "GPU", "NPU"):
            raise ValueError(f"device `{device}` must be CPU, GPU or NPU")
        if load_timeout <= 0:
            raise ValueError("load_timeout must be more than 0 seconds")
        self._configured = url.rstrip("/")
        self._discovered = ""
        self._cli = cli
        self._device = device.upper()
        self._load_timeout = load_timeout
        self._models: dict[str, _Variant] = {}
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        """Find the service (starting it with the `foundry` CLI if needed)."""
        self._client()
        await self._service_url()

    async def stop(self) -> None:
        """Unload the models this node loaded, then close connections."""
        for alias in list(self._models):
            try:
                await self.unload(alias)
            except (ModelLoadError, RuntimeUnavailable) as exc:
                log.warning("could not unload a model", extra={"model": alias, "error": str(exc)})
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def load(self, source: ModelSource, progress: ProgressCallback) -> LoadedModel:
        """Download the model if it is not cached, then load it."""
        if "url" in source.options:
            raise ModelLoadError(
                f"model `{source.alias}`: Foundry Local is one service per machine, so its URL "
                "is set under runtimes: foundry-local: {url: ...}, not per model; move it there"
            )
        progress(LoadProgress(f"looking up `{source.source}` in Foundry Local's catalog", 0.0))
        variant = self._pick(source, await self._json("GET", "/foundry/list"))
        cached = await self._json("GET", "/openai/models")
        if not (isinstance(cached, list) and variant.id in cached):
            await self._download(variant, progress)
        progress(LoadProgress(f"loading `{variant.id}`", DOWNLOAD_SHARE))
        query = {"unload": "false"}
        provider = _provider(variant.entry)
        if provider in EP_QUERY:
            query["ep"] = EP_QUERY[provider]
        await self._request(
            "GET", f"/openai/load/{variant.id}", params=query, read_s=self._load_timeout
        )
        self._models[source.alias] = variant
        progress(LoadProgress(f"`{variant.id}` is loaded", 1.0))
        # Foundry Local does not report memory; the weights' size is the best estimate.
        return LoadedModel(endpoint=self.endpoint(source.alias), memory_bytes=_bytes(variant))

    async def unload(self, alias: str) -> None:
        """Unload the model now, whatever TTL it was loaded with."""
        variant = self._models.pop(alias, None)
        if variant is not None:
            await self._request("GET", f"/openai/unload/{variant.id}", params={"force": "true"})

    async def loaded(self) -> list[str]:
        """Aliases whose model id `/openai/loadedmodels` lists now."""
        if not self._models:
            return []
        try:
            ids = await self._json("GET", "/openai/loadedmodels")
        except (ModelLoadError, RuntimeUnavailable):
            return []
        ids = set(ids) if isinstance(ids, list) else set()
        return sorted(a for a, v in self._models.items() if v.id in ids)

    async def health(self) -> RuntimeHealth:
        """Whether the service answers `/openai/status`."""
        try:
            status = await self._json("GET", "/openai/status")
        except (ModelLoadError, RuntimeUnavailable) as exc:
            return RuntimeHealth(False, str(exc))
        folder = _field(status, "modelDirPath") if isinstance(status, dict) else None
        where = f" (models in {folder})" if folder else ""
        return RuntimeHealth(True, f"Foundry Local at {await self._service_url()}{where}")

    def endpoint(self, alias: str) -> ModelEndpoint:
        """The service's `/v1` base URL and the model id."""
        variant = self._models.get(alias)
        base = self._configured or self._discovered
        if variant is None or not base:
            raise NotFound(f"model `{alias}` is not loaded on runtime foundry-local")
        return ModelEndpoint(base_url=f"{base}/v1", model=variant.id)

    async def capacity(self, alias: str) -> ModelCapacity:
        """The model's size while `/openai/loadedmodels` lists it; no request figures (the
        API has none)."""
        variant = self._models.get(alias)
        loaded = variant is not None and alias in await self.loaded()
        return ModelCapacity(memory_bytes=_bytes(variant) if loaded and variant else None)

    async def memory_used(self) -> int:
        """Estimated bytes of the models this node loaded (their file sizes in the catalog)."""
        loaded = set(await self.loaded())
        return sum(_bytes(v) for a, v in self._models.items() if a in loaded)

    # -- the catalog ------------------------------------------------------------------

    def _pick(self, source: ModelSource, catalog: object) -> _Variant:
        entries = [e for e in catalog if isinstance(e, dict)] if isinstance(catalog, list) else []
        wanted = source.source
        found = [
            e
            for e in entries
            if wanted in (e.get("name"), e.get("alias"), str(e.get("name", "")).split(":")[0])
        ]
        if self._device:
            found = [e for e in found if _device(e) == self._device]
        if not found:
            device = f" for device {self._device}" if self._device else ""
            raise ModelLoadError(
                f"Foundry Local's catalog has no model `{wanted}`{device} (model "
                f"`{source.alias}`); `foundry model list` shows the aliases it has; fix source "
                "in the node's catalog or the manifest"
            )

        def rank(entry: Mapping[str, Any]) -> tuple[int, int]:
            provider = _provider(entry)
            order = PROVIDER_ORDER.index(provider) if provider in PROVIDER_ORDER else 99
            return (-order, _version(str(entry.get("name", ""))))

        best = max(found, key=rank)
        return _Variant(
            id=str(best["name"]), file_size_mb=int(best.get("fileSizeMb") or 0), entry=best
        )

    async def _download(self, variant: _Variant, progress: ProgressCallback) -> None:
        entry = variant.entry
        provider = str(entry.get("providerType", ""))
        body = {
            "model": {
                "Name": variant.id,
                "Uri": entry.get("uri"),
                "Publisher": entry.get("publisher"),
                # As the SDK sends it: the catalog's AzureFoundry is AzureFoundryLocal here.
                "ProviderType": f"{provider}Local" if provider == "AzureFoundry" else provider,
                "PromptTemplate": entry.get("promptTemplate"),
            },
            "token": None,
            "IgnorePipeReport": True,
        }
        timeout = httpx.Timeout(TIMEOUT.connect, read=300.0, write=10.0, pool=10.0)
        final = ""
        base = await self._service_url()
        try:
            async with self._client().stream(
                "POST", f"{base}/openai/download", json=body, timeout=timeout
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise ModelLoadError(_download_failed(variant.id, response.text[:200]))
                async for line in response.aiter_lines():
                    if final or line.lstrip().startswith("{"):
                        final += line
                        continue
                    step = download_progress(line)
                    if step is not None:
                        name, fraction = step
                        message = f"downloading `{variant.id}`" + (f": {name}" if name else "")
                        progress(LoadProgress(message, fraction * DOWNLOAD_SHARE))
        except httpx.HTTPError as exc:
            raise ModelLoadError(_download_failed(variant.id, repr(exc))) from exc
        try:
            result = json.loads(final)
        except ValueError:
            result = None
        if not isinstance(result, dict):
            raise ModelLoadError(_download_failed(variant.id, "the service sent no final result"))
        if not _field(result, "success"):
            raise ModelLoadError(
                _download_failed(variant.id, str(_field(result, "errorMessage") or "no detail"))
            )

    # -- the service ------------------------------------------------------------------

    async def _service_url(self) -> str:
        if self._configured:
            return self._configured
        if not self._discovered:
            found = await self._cli_url("service", "status")
            if not found:
                log.info("starting the Foundry Local service", extra={"cli": self._cli})
                found = await self._cli_url("service", "start") or await self._cli_url(
                    "service", "status"
                )
            if not found:
                raise RuntimeUnavailable(
                    f"the Foundry Local service is not running and `{self._cli} service start` "
                    "did not start it; run it by hand to see why, or set url under "
                    "runtimes: foundry-local: in the node's catalog"
                )
            self._discovered = found
        return self._discovered

    async def _cli_url(self, *args: str) -> str:
        """The service URL in the output of `foundry ARGS`, or ''."""
        try:
            process = await asyncio.create_subprocess_exec(
                self._cli,
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            raise RuntimeUnavailable(
                f"cannot run `{self._cli}` to find the Foundry Local service ({exc.strerror}); "
                "install Foundry Local so `foundry` is on the node's PATH, or set url under "
                "runtimes: foundry-local: in the node's catalog"
            ) from exc
        try:
            output, _ = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise RuntimeUnavailable(
                f"`{self._cli} {' '.join(args)}` did not finish within {CLI_TIMEOUT_S:.0f}s; "
                "check the Foundry Local installation, or set url under runtimes: foundry-local:"
            ) from None
        match = _URL.search(output.decode(errors="replace"))
        return match.group(0) if match else ""

    async def _json(self, method: str, path: str) -> Any:
        response = await self._request(method, path)
        try:
            return response.json() if response.content else None
        except ValueError as exc:
            raise ModelLoadError(
                f"Foundry Local answered {path} with something other than JSON; is the "
                "configured URL a Foundry Local service?"
            ) from exc

    async def _request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        read_s: float | None = None,
    ) -> httpx.Response:
        limit = httpx.Timeout(read_s, connect=TIMEOUT.connect) if read_s else TIMEOUT
        for attempt in (1, 2):
            base = await self._service_url()
            try:
                response = await self._client().request(
                    method, f"{base}{path}", params=params, timeout=limit
                )
            except httpx.ConnectError as exc:
                if attempt == 1 and not self._configured:
                    self._discovered = ""  # a restarted service listens on a new port
                    continue
                raise ModelLoadError(
                    f"Foundry Local does not answer at {base} ({type(exc).__name__}); start it "
                    "(foundry service start) or fix url under runtimes: foundry-local:"
                ) from exc
            except httpx.HTTPError as exc:
                raise ModelLoadError(
                    f"Foundry Local at {base} failed {method} {path} ({type(exc).__name__}); "
                    "see `foundry service status` and its log"
                ) from exc
            if response.status_code != 200:
                detail = response.text[:300] or "no detail"
                hint = (
                    "the model is not downloaded; the node downloads it on the next load"
                    if "No OpenAIService provider found" in detail
                    else "see the service log (foundry service diag)"
                )
                raise ModelLoadError(
                    f"Foundry Local answered {method} {path} with HTTP "
                    f"{response.status_code}: {detail}; {hint}"
                )
            return response
        raise AssertionError("unreachable")

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=TIMEOUT)
        return self._http


def _field(body: Mapping[str, Any], name: str) -> Any:
    """A field by name in any case: the service writes `Success`, the SDK reads `success`."""
    lowered = name.lower()
    return next((v for k, v in body.items() if k.lower() == lowered), None)


def _runtime_info(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    runtime = entry.get("runtime")
    return runtime if isinstance(runtime, dict) else {}


def _provider(entry: Mapping[str, Any]) -> str:
    return str(_runtime_info(entry).get("executionProvider", ""))


def _device(entry: Mapping[str, Any]) -> str:
    return str(_runtime_info(entry).get("deviceType", "")).upper()


def _version(model_id: str) -> int:
    try:
        return int(model_id.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return -1


def _bytes(variant: _Variant) -> int:
    return variant.file_size_mb * MiB


def _download_failed(model_id: str, detail: str) -> str:
    return (
        f"Foundry Local could not download `{model_id}`: {detail}; try "
        f"`foundry model download {model_id}` on the node to see the full error"
    )
