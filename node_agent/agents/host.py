"""The agents a node hosts: their replicas' states, and running requests on them.

An agent replica is `pending` while its model is not ready, `starting` while its
tools are being built, `ready` when it can serve (a model unloaded while idle
loads again on the first request, so its agents stay ready), `failed` when its
tools cannot be built or its model failed, and `stopping` while a newer desired
state removes it and requests already running finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edgefleet_contract.desired import AgentWant
from node_agent.admission import Admission
from node_agent.agents.run_events import RunEvent, RunFinished, TextDelta, ToolStarted
from node_agent.agents.run_options import RunOptions
from node_agent.errors import NodeError, NotFound, RuntimeUnavailable
from node_agent.metrics import NodeMetrics
from node_agent.models import ModelManager
from node_agent.runtimes.base import ModelEndpoint
from node_agent.tools.base import Tool, ToolContext
from node_agent.tools.registry import AllowList, build_tools

if TYPE_CHECKING:
    # Agent Framework (and the OpenAI client under it) loads with the first agent request:
    # a node that hosts no agent does not pay for it in memory.
    from node_agent.agents.runner import AgentRunner

log = logging.getLogger(__name__)

AgentState = Literal["pending", "starting", "ready", "stopping", "failed"]

STOP_GRACE_S = 30.0
"""How long a removed agent's running requests may take to finish."""


@dataclass(slots=True)
class AgentReplica:
    """One agent on this node, with what it needs to serve."""

    want: AgentWant
    tools: list[Tool] = field(default_factory=list)
    allow: AllowList | None = None
    setup_error: str = ""
    stopping: bool = False
    runner: AgentRunner | None = None
    built: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once its tools are built (or failed to build)."""

    async def close(self) -> None:
        """Release the runner's connections and the tools' files."""
        if self.runner is not None:
            await self.runner.close()
            self.runner = None
        for tool in self.tools:
            with contextlib.suppress(Exception):
                await tool.close()


class AgentHost:
    """Hosts the desired agents and runs requests on them."""

    def __init__(
        self,
        models: ModelManager,
        admission: Admission,
        metrics: NodeMetrics,
        data_dir: Path,
        on_change: Callable[[], None],
    ) -> None:
        self._models = models
        self._admission = admission
        self._metrics = metrics
        self._data_dir = data_dir
        self._on_change = on_change
        self._replicas: dict[str, AgentReplica] = {}
        self._draining: dict[str, AgentReplica] = {}
        self._background: set[asyncio.Task[None]] = set()

    # -- desired state ---------------------------------------------------------------

    async def reconcile(self, wants: Sequence[AgentWant]) -> None:
        """Make `wants` the agents of this node; removed agents drain in the background."""
        wanted = {w.name: w for w in wants}
        for name in [n for n in self._replicas if n not in wanted]:
            self._drain(self._replicas.pop(name))
        for name, want in wanted.items():
            current = self._replicas.get(name)
            if current is not None and current.want == want:
                continue
            if current is not None:
                self._drain(current)
            replica = AgentReplica(want=want)
            self._replicas[name] = replica
            self._on_change()
            await self._build(replica)
        self._on_change()

    async def _build(self, replica: AgentReplica) -> None:
        want = replica.want
        context = ToolContext(data_dir=self._data_dir, agent=want.name)
        try:
            # Building a tool may open files; keep the event loop free.
            replica.tools = await asyncio.to_thread(
                build_tools, want.tools, want.tool_config, context
            )
            replica.allow = AllowList(want.name, want.tools, replica.tools)
        except NodeError as exc:
            replica.setup_error = str(exc)
            log.warning("agent cannot start", extra={"agent": want.name, "reason": str(exc)})
        finally:
            replica.built.set()
        self._on_change()

    def _drain(self, replica: AgentReplica) -> None:
        replica.stopping = True
        self._draining[replica.want.name] = replica
        task = asyncio.create_task(self._finish(replica), name=f"stop {replica.want.name}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _finish(self, replica: AgentReplica) -> None:
        name = replica.want.name
        deadline = time.monotonic() + STOP_GRACE_S
        # Polled: requests end in several places, and this runs only while an agent drains.
        while self._admission.load(name).in_flight and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await replica.close()
        if self._draining.get(name) is replica:
            del self._draining[name]
            if name not in self._replicas:
                self._admission.forget(name)
        log.info("agent stopped", extra={"agent": name})
        self._on_change()

    # -- state -----------------------------------------------------------------------

    def names(self) -> list[str]:
        """Agents this node hosts or is stopping, by name."""
        return sorted({*self._replicas, *self._draining})

    def state(self, name: str) -> tuple[AgentState, str]:
        """An agent's state and the reason for it."""
        replica = self._replicas.get(name)
        if replica is None:
            if name in self._draining:
                return "stopping", "removed from the desired state; finishing running requests"
            raise NotFound(f"agent `{name}` is not on this node")
        if replica.setup_error:
            return "failed", replica.setup_error
        if not replica.built.is_set():
            return "starting", "building tools"
        model = replica.want.model
        slot = self._models.slot(model)
        if slot is None:
            return "failed", f"model `{model}` is not in this node's desired state"
        if slot.state == "failed":
            return "failed", f"model `{model}` failed: {slot.reason}"
        if slot.state == "ready":
            return "ready", ""
        if slot.state == "pending" and slot.task is None and slot.reason:
            # Unloaded while idle or evicted: it loads again on the first request.
            return "ready", f"model `{model}` is unloaded; it loads on the first request"
        progress = f" ({slot.progress:.0%})" if slot.state == "loading" and slot.progress else ""
        return "pending", f"waiting for model `{model}`: {slot.state}{progress}"

    def model_of(self, name: str) -> str:
        """The model alias a hosted (or stopping) agent runs on; empty if unknown."""
        replica = self._replicas.get(name) or self._draining.get(name)
        return replica.want.model if replica else ""

    def want(self, name: str) -> AgentWant:
        """The desired spec of a hosted agent."""
        replica = self._replicas.get(name)
        if replica is None:
            raise NotFound(f"agent `{name}` is not on this node")
        return replica.want

    # -- serving ---------------------------------------------------------------------

    async def invoke(
        self,
        name: str,
        messages: Sequence[Mapping[str, Any]],
        options: RunOptions,
        timeout: float,
    ) -> AsyncIterator[RunEvent]:
        """Run one request on an agent: yields its events; bounded by `timeout` seconds."""
        replica = self._replicas.get(name)
        if replica is None:
            if name in self._draining:
                raise NotFound(f"agent `{name}` is stopping on this node")
            raise NotFound(f"agent `{name}` is not on this node")
        deadline = time.monotonic() + timeout
        if not replica.built.is_set():
            # A new or updated agent is building its tools: wait, as for a loading model.
            try:
                await asyncio.wait_for(replica.built.wait(), timeout)
            except TimeoutError:
                raise RuntimeUnavailable(
                    f"agent `{name}` is still starting (building its tools)"
                ) from None
        state, reason = self.state(name)
        if state == "failed":
            raise RuntimeUnavailable(f"agent `{name}` failed: {reason}")
        model = replica.want.model
        outcome = "error"
        async with self._admission.admit(name, model, agent=True) as load:
            self._metrics.queue_depth.labels(name).set(self._admission.load(name).waiting)
            self._metrics.in_flight.labels(name).inc()
            started = time.monotonic()
            first = True
            try:
                async with self._models.use(model, max(deadline - time.monotonic(), 0)) as at:
                    runner = await self._runner(replica, at)
                    async for event in runner.run(messages, options):
                        if first and isinstance(event, TextDelta | ToolStarted):
                            first = False
                            waited = time.monotonic() - started
                            load.observe_latency(waited * 1000)
                            self._metrics.first_token.labels(name).observe(waited)
                        if isinstance(event, RunFinished):
                            self._count_tokens(name, event)
                        yield event
                outcome = "ok"
            except asyncio.CancelledError:
                outcome = "cancelled"
                raise
            finally:
                self._metrics.in_flight.labels(name).dec()
                self._metrics.requests.labels(name, outcome).inc()
                self._metrics.latency.labels(name).observe(time.monotonic() - started)

    async def _runner(self, replica: AgentReplica, endpoint: ModelEndpoint) -> AgentRunner:
        # A runner talks to one endpoint; a model reloaded elsewhere (new port) needs a
        # new one. Building is cheap next to a model call.
        if replica.runner is not None and replica.runner.endpoint == endpoint:
            return replica.runner
        if replica.runner is not None:
            await replica.runner.close()
        from node_agent.agents.runner import AgentRunner  # see TYPE_CHECKING above

        runtime = await self._models.runtime_for(replica.want.model)
        assert replica.allow is not None  # set whenever setup_error is empty
        replica.runner = AgentRunner(
            replica.want.name,
            replica.want.instructions,
            endpoint,
            replica.allow.functions,
            tool_support=runtime.tool_support(replica.want.model),
        )
        return replica.runner

    def _count_tokens(self, name: str, finished: RunFinished) -> None:
        if finished.prompt_tokens is not None:
            self._metrics.tokens.labels(name, "prompt").inc(finished.prompt_tokens)
        if finished.completion_tokens is not None:
            self._metrics.tokens.labels(name, "completion").inc(finished.completion_tokens)

    async def close(self) -> None:
        """Stop every agent now (running requests are cancelled by the server first)."""
        for task in list(self._background):
            task.cancel()
        for replica in [*self._replicas.values(), *self._draining.values()]:
            await replica.close()
        self._replicas.clear()
        self._draining.clear()
