"""The one narrow interface every model runtime adapter implements.

The node never branches on which runtime it has: it resolves a manifest alias
to a `ModelSource` (through the catalog), asks the runtime named there to
`load` it, and sends OpenAI chat-completions requests to the `ModelEndpoint`
the runtime gives back. Lifecycle differences (a child process per model for
llama.cpp, `/api/pull` for Ollama, a fixed model for vLLM, nothing at all for
a plain OpenAI URL) stay inside the adapters.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

RuntimeName = Literal["llama.cpp", "ollama", "foundry-local", "vllm", "openai"]
RUNTIME_NAMES: tuple[RuntimeName, ...] = ("llama.cpp", "ollama", "foundry-local", "vllm", "openai")

LoadedState = Literal["loading", "ready", "failed"]


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where a manifest alias comes from, as resolved by the node's catalog."""

    alias: str
    runtime: RuntimeName
    source: str
    """GGUF path or `pkg:DISTRIBUTION` (llama.cpp), tag (Ollama), alias (Foundry Local),
    served model name (vLLM, openai)."""
    memory_bytes: int = 0
    """What the catalog or manifest says the model needs; 0 when unknown."""
    options: Mapping[str, str] = field(default_factory=dict)
    """Runtime-specific settings from the catalog (e.g. `url`, `api_key_env`)."""
    parallel: int = 0
    """Requests the model serves at once, for runtimes that start a server per model
    (llama.cpp); 0: the runtime's setting."""
    context: int = 0
    """Tokens of context per request slot, where the runtime sets it; 0: the runtime's."""


@dataclass(frozen=True, slots=True)
class ModelEndpoint:
    """Where to send OpenAI chat-completions requests for one loaded model."""

    base_url: str
    """Ends in `/v1` (no trailing slash)."""
    model: str
    """The `model` value the runtime expects in requests (not always the alias)."""
    api_key: str = "edgefleet"
    """Local runtimes ignore it; the OpenAI client insists on one."""
    reuse_connections: bool = True
    """False: every request on a connection of its own (`Connection: close`), for a
    runtime that may close a kept-alive connection just as the next request reuses it."""


@dataclass(frozen=True, slots=True)
class LoadProgress:
    """A step of a model load: fraction done when known, and what is happening."""

    message: str
    fraction: float | None = None


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model that serves, and what it costs."""

    endpoint: ModelEndpoint
    memory_bytes: int = 0


@dataclass(frozen=True, slots=True)
class ModelCapacity:
    """How much one loaded model can take on, in the terms every runtime reports.

    None means the runtime does not say; the node then fills in what it knows itself
    (the requests it sent and that have not ended).
    """

    slots_total: int | None = None
    """Requests it runs at once (llama.cpp slots, Ollama's parallel setting)."""
    slots_busy: int | None = None
    """Requests running now."""
    queued: int | None = None
    """Requests waiting inside the runtime for a slot (the node's own queue not counted)."""
    memory_bytes: int | None = None
    """What the model takes in the runtime."""


MessagePreparer = Callable[[Any, list[dict[str, Any]]], list[dict[str, Any]]]
"""A per-runtime rewrite of outgoing chat messages (Agent Framework's `message_preparer`)."""


@dataclass(frozen=True, slots=True)
class ToolSupport:
    """How a loaded model takes the tools an agent offers it, as its runtime knows."""

    native_calls: bool = True
    """The runtime shows the offered tools to the model and parses the calls it makes.
    False: the model never sees them (its chat template has none); a call the request
    demands (tool_choice `required` or a function's name) is then asked for as JSON that
    a grammar holds to the functions' schemas."""
    named_choice: bool = True
    """The runtime takes a function's name as tool_choice. False: the node offers that
    function alone with tool_choice `required`, which means the same."""
    message_preparer: MessagePreparer | None = None
    """A rewrite of outgoing chat messages the model needs (e.g. tool turns its template
    cannot render)."""


@dataclass(frozen=True, slots=True)
class RuntimeHealth:
    """Whether a runtime can serve, with a line saying why not or what it is."""

    available: bool
    detail: str


ProgressCallback = Callable[[LoadProgress], None]
StateListener = Callable[[str, LoadedState, str], None]
"""Called by a runtime when a loaded model changes on its own: (alias, state, reason).
E.g. a llama.cpp child died (`loading`: restarting) and came back (`ready`)."""


class Runtime(abc.ABC):
    """A model runtime adapter: start or attach, load and unload models, serve them."""

    name: RuntimeName
    parallel_requests: int | None = None
    """How many requests one loaded model serves at once, unless `slots` says otherwise
    for a model. None: as many as arrive (the runtime queues or batches them itself)."""

    def __init__(self, listener: StateListener | None = None) -> None:
        self._listener = listener

    def notify(self, alias: str, state: LoadedState, reason: str = "") -> None:
        """Tell the node that a loaded model changed state on its own."""
        if self._listener is not None:
            self._listener(alias, state, reason)

    @abc.abstractmethod
    async def start(self) -> None:
        """Start the runtime, or attach to one that runs already."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Unload what this node loaded and let go of the runtime."""

    @abc.abstractmethod
    async def load(self, source: ModelSource, progress: ProgressCallback) -> LoadedModel:
        """Make a model serve; reports progress; raises ModelLoadError with what to do."""

    @abc.abstractmethod
    async def unload(self, alias: str) -> None:
        """Free a model's memory (a no-op where the runtime cannot)."""

    @abc.abstractmethod
    async def loaded(self) -> list[str]:
        """Aliases this runtime serves right now."""

    @abc.abstractmethod
    async def health(self) -> RuntimeHealth:
        """Whether the runtime can serve now."""

    @abc.abstractmethod
    def endpoint(self, alias: str) -> ModelEndpoint:
        """Where requests for a loaded model go (NotFound when it is not loaded)."""

    @abc.abstractmethod
    async def memory_used(self) -> int:
        """Bytes the models this node loaded take in this runtime (0 when unknown)."""

    def slots(self, alias: str) -> int | None:
        """How many requests the model serves at once; the node queues the rest where it
        can count and bound them. None: as many as arrive."""
        return self.parallel_requests

    async def capacity(self, alias: str) -> ModelCapacity:
        """Busy and free capacity of a loaded model, as the runtime reports it now.

        Never raises for a runtime that does not answer: the figures are then unknown.
        """
        return ModelCapacity(slots_total=self.slots(alias))

    def message_preparer(self) -> MessagePreparer | None:
        """A rewrite of outgoing chat messages this runtime needs, or None."""
        return None

    def tool_support(self, alias: str) -> ToolSupport:
        """How a loaded model takes tools (the runtime's message preparer included)."""
        return ToolSupport(message_preparer=self.message_preparer())

    def cached_models(self) -> list[str]:
        """Sources this runtime can load without a download (for node info)."""
        return []
