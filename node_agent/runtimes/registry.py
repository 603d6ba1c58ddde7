"""The one place that maps a runtime name to its adapter class.

The node creates runtimes through `create_runtime` and never looks at their
names again. Each adapter class declares the settings it accepts in `SETTINGS`
(the keys allowed under `runtimes: NAME:` in the node's catalog file, with
their types); the constructor takes them as keyword arguments.

An adapter's module is imported when its runtime is first named: a node pays for
the HTTP clients of the runtimes it uses, not of all five.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any, cast

from node_agent.errors import RuntimeUnavailable
from node_agent.runtimes.base import RUNTIME_NAMES, Runtime, RuntimeName, StateListener

_ADAPTERS: Mapping[RuntimeName, str] = {
    "llama.cpp": "node_agent.runtimes.llamacpp:LlamaCppRuntime",
    "ollama": "node_agent.runtimes.ollama:OllamaRuntime",
    "foundry-local": "node_agent.runtimes.foundry_local:FoundryLocalRuntime",
    "vllm": "node_agent.runtimes.vllm:VLLMRuntime",
    "openai": "node_agent.runtimes.openai_url:OpenAIURLRuntime",
}
"""Each runtime's adapter class, as `module:Class`."""


class _AdapterClasses(Mapping[RuntimeName, type[Runtime]]):
    """Runtime name to adapter class, importing each adapter's module on first use."""

    def __getitem__(self, name: RuntimeName) -> type[Runtime]:
        module, _, attribute = _ADAPTERS[name].partition(":")
        cls: type[Runtime] = getattr(importlib.import_module(module), attribute)
        return cls

    def __iter__(self) -> Iterator[RuntimeName]:
        return iter(_ADAPTERS)

    def __len__(self) -> int:
        return len(_ADAPTERS)


RUNTIME_CLASSES: Mapping[RuntimeName, type[Runtime]] = _AdapterClasses()

_TYPE_WORDS = {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}


def runtime_class(name: str) -> type[Runtime]:
    """The adapter class for a runtime name; RuntimeUnavailable names the known ones."""
    if name not in _ADAPTERS:
        raise RuntimeUnavailable(
            f"no model runtime is called `{name}`; use one of: {', '.join(RUNTIME_NAMES)}"
        )
    return RUNTIME_CLASSES[cast(RuntimeName, name)]


def settings_schema(name: str) -> Mapping[str, type]:
    """The settings a runtime accepts, by key, with their types."""
    schema: Mapping[str, type] = getattr(runtime_class(name), "SETTINGS", {})
    return schema


def check_settings(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """`settings` checked against the runtime's schema; ValueError says which key is wrong.

    Whole numbers are accepted where a number is expected (YAML writes `30` for 30.0).
    """
    schema = settings_schema(name)
    checked: dict[str, Any] = {}
    for key, value in settings.items():
        expected = schema.get(key)
        if expected is None:
            known = ", ".join(sorted(schema)) or "none"
            raise ValueError(f"`{key}` is not a setting of runtime `{name}` (known: {known})")
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        # bool is an int in Python; `threads: true` is still a mistake.
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise ValueError(f"`{key}` of runtime `{name}` must be {_TYPE_WORDS[expected]}")
        checked[key] = value
    return checked


def create_runtime(
    name: str,
    listener: StateListener | None = None,
    settings: Mapping[str, Any] | None = None,
) -> Runtime:
    """A new, not yet started, runtime adapter called `name`, built from its settings.

    Raises RuntimeUnavailable for an unknown name or settings the runtime refuses.
    """
    cls = runtime_class(name)
    try:
        return cls(listener, **check_settings(name, settings or {}))
    except ValueError as exc:
        raise RuntimeUnavailable(
            f"runtime `{name}` cannot start: {exc}; fix `runtimes: {name}:` in the node's "
            "catalog (edge-node run --catalog FILE)"
        ) from exc
