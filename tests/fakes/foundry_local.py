"""A stand-in for the Foundry Local service's REST API and its `foundry` CLI.

Imitates the API of docs/reference/reference-rest.md and what the Python SDK
(`foundry-local-sdk`) calls: `GET /openai/status` (`Endpoints`, `ModelDirPath`,
`PipeName`); `GET /foundry/list` (catalog entries: `name` is the model id,
`alias`, `runtime.deviceType`/`executionProvider`, `fileSizeMb`, ...);
`GET /openai/models` (downloaded ids); `POST /openai/download` with the catalog
entry as `model`, streaming `("file", fraction)` progress lines and a final
`{"success": ..., "errorMessage": ...}`; `GET /openai/load/{id}` (HTTP 500
"No OpenAIService provider found" for a model not downloaded),
`GET /openai/unload/{id}`, `GET /openai/loadedmodels`; and the
OpenAI-compatible `/v1/chat/completions` for loaded models.

`write_foundry_cli` writes a stand-in `foundry` command whose `service status`
prints the line the real CLI prints when the service runs.
"""

from __future__ import annotations

import json
import stat
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tests.fakes.openai_api import chat_completions
from tests.fakes.server import FakeServer, Reply, Request


def catalog_entry(
    model_id: str, alias: str, device: str, provider: str, size_mb: int
) -> dict[str, Any]:
    """One `/foundry/list` entry, with the fields the SDK's FoundryListResponseModel reads."""
    return {
        "name": model_id,
        "displayName": model_id.split(":")[0],
        "modelType": "ONNX",
        "providerType": "AzureFoundry",
        "uri": f"azureml://registries/azureml/models/{model_id.split(':')[0]}/versions/1",
        "version": model_id.rsplit(":", 1)[-1],
        "promptTemplate": {
            "system": "<|system|>{Content}<|end|>",
            "user": "<|user|>{Content}<|end|>",
        },
        "publisher": "Microsoft",
        "task": "chat-completion",
        "runtime": {"deviceType": device, "executionProvider": provider},
        "fileSizeMb": size_mb,
        "modelSettings": {"parameters": []},
        "alias": alias,
        "supportsToolCalling": False,
        "license": "MIT",
        "licenseDescription": "MIT license",
        "parentModelUri": "",
        "maxOutputTokens": 1024,
        "minFLVersion": "0.5.0",
    }


class FakeFoundryLocal(FakeServer):
    """Foundry Local with a catalog, a cache of downloaded models and loaded models."""

    def __init__(self, catalog: Iterable[dict[str, Any]], cached: Iterable[str] = ()) -> None:
        super().__init__()
        self.catalog = list(catalog)
        self.cached = list(cached)
        self.loaded: list[str] = []
        self.downloads: list[dict[str, Any]] = []
        """Bodies of `POST /openai/download`, in order."""
        self.fail_download = ""
        """When set, downloads fail with this error message."""

    def handle(self, request: Request) -> Reply:
        """Route a request to the endpoint it names."""
        route = (request.method, request.path)
        if route == ("GET", "/openai/status"):
            return Reply.json(
                {
                    "Endpoints": [self.url],
                    "ModelDirPath": "/var/lib/foundry/models",
                    "PipeName": "inference_agent",
                }
            )
        if route == ("GET", "/foundry/list"):
            return Reply.json(self.catalog)
        if route == ("GET", "/openai/models"):
            return Reply.json(self.cached)
        if route == ("GET", "/openai/loadedmodels"):
            return Reply.json(self.loaded)
        if route == ("POST", "/openai/download"):
            return self._download(request.json() or {})
        if request.method == "GET" and request.path.startswith("/openai/load/"):
            model_id = request.path.removeprefix("/openai/load/")
            if model_id not in self.cached:
                return Reply.text(f"No OpenAIService provider found for modelName {model_id}", 500)
            if model_id not in self.loaded:
                self.loaded.append(model_id)
            return Reply(body=b"")
        if request.method == "GET" and request.path.startswith("/openai/unload/"):
            model_id = request.path.removeprefix("/openai/unload/")
            if model_id in self.loaded:
                self.loaded.remove(model_id)
            return Reply(body=b"")
        if route == ("POST", "/v1/chat/completions"):
            return chat_completions(request, self.loaded, "foundry-local")
        return super().handle(request)

    def _download(self, body: dict[str, Any]) -> Reply:
        self.downloads.append(body)
        model = body.get("model") or {}
        model_id = model.get("Name") if isinstance(model, dict) else None
        known = {e["name"] for e in self.catalog}

        def lines() -> Iterator[bytes]:
            if self.fail_download or model_id not in known:
                error = self.fail_download or f"Model {model_id} not found"
                yield json.dumps({"Success": False, "ErrorMessage": error}).encode()
                return
            for name, fraction in (
                ("genai_config.json", 0.01),
                ("model.onnx.data", 0.5),
                ("model.onnx.data", 0.78),
                ("", 1),
            ):
                yield f'("{name}", {fraction})\n'.encode()
            self.cached.append(str(model_id))
            yield json.dumps({"Success": True, "ErrorMessage": None}).encode()

        return Reply.stream(lines(), "text/plain")


def write_foundry_cli(folder: Path, url: str) -> Path:
    """A stand-in `foundry` command: `service status` prints the running service's URL."""
    path = folder / "foundry"
    path.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "if sys.argv[1:3] == ['service', 'status'] or sys.argv[1:3] == ['service', 'start']:\n"
        f"    print('\\U0001F7E2 Model management service is running on {url}/openai/status')\n"
        "else:\n"
        "    sys.exit(2)\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path
