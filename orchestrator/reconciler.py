"""The control loop: desired (latest revisions) + observed (node status) → plan → pushes.

Level-triggered and idempotent: every pass reads the whole desired state and
the whole fleet, computes a schedule, stores the assignment (a new generation
for each node whose work changed) and tells each link what its node should run.
Nothing remembers events; a missed one is healed by the next pass, and a
periodic resync makes a pass even when nothing seems to have happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from node_agent.desired import NodeDesired
from orchestrator.events import EventLog
from orchestrator.fleet.fleet import Fleet
from orchestrator.manifest.desired import CoordinationSpec, DesiredState
from orchestrator.scheduler import schedule
from orchestrator.scheduler.model import Plan, PlanStep, Schedule
from orchestrator.store import Store

log = logging.getLogger(__name__)

RESYNC_S = 5.0
"""A full pass at least this often, whatever happened."""
DEFAULT_FAILURE_TIMEOUT_S = CoordinationSpec().failure_timeout_s

_STEP_WORDS = {
    "load-model": ("ModelLoading", "loading {name} on {node}"),
    "unload-model": ("ModelUnloading", "unloading {name} from {node}"),
    "evict-model": ("ModelEvicting", "evicting {name} from {node}"),
    "start-agent": ("AgentStarting", "starting agent {name} on {node}"),
    "stop-agent": ("AgentStopping", "stopping agent {name} on {node}"),
    "update-agent": ("AgentUpdating", "updating agent {name} on {node}"),
}


def _content(desired: NodeDesired) -> str:
    """A node's desired state without its generation: what the store compares."""
    return desired.model_copy(update={"generation": 0, "controller_id": ""}).model_dump_json()


class Reconciler:
    """Drives every node towards what the current revisions ask of it."""

    def __init__(self, store: Store, fleet: Fleet, events: EventLog, *, local_node: str) -> None:
        self._store = store
        self._fleet = fleet
        self._events = events
        self._local_node = local_node
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._parsed: dict[str, DesiredState] = {}
        self.assignment: dict[str, NodeDesired] = self._load_assignment()
        self._saved_content = {node: _content(d) for node, d in self.assignment.items()}
        """Each node's assignment as stored, without its generation (what passes compare)."""
        self.last_schedule: Schedule | None = None
        self.failure_timeout_s = self._failure_timeout(self.deployments())
        """The shortest failure timeout the current deployments ask for (read often, by
        the fleet's health checks; refreshed on every pass)."""

    # -- desired state ---------------------------------------------------------------

    def deployments(self) -> list[DesiredState]:
        """The desired state of every current deployment, by name."""
        current = self._store.current()
        if len(self._parsed) != len(current) or any(r.digest not in self._parsed for r in current):
            # Parsed once per revision; only the current ones are kept.
            self._parsed = {
                r.digest: self._parsed.get(r.digest)
                or DesiredState.model_validate_json(r.desired_json)
                for r in current
            }
        return [self._parsed[r.digest] for r in current]

    @staticmethod
    def _failure_timeout(deployments: Sequence[DesiredState]) -> float:
        timeouts = [
            d.coordination.failure_timeout_s for d in deployments if d.type == "distributed-edge"
        ]
        return min(timeouts, default=DEFAULT_FAILURE_TIMEOUT_S)

    def preview(self, deployments: Sequence[DesiredState]) -> Schedule:
        """What a pass would decide if `deployments` were the current ones (no side effects)."""
        return schedule(
            deployments, self._fleet.scheduler_views(), self.assignment, local_node=self._local_node
        )

    def _load_assignment(self) -> dict[str, NodeDesired]:
        return {
            node: self._stamped(NodeDesired.model_validate_json(row.desired_json), row.generation)
            for node, row in self._store.assignment().items()
        }

    def _stamped(self, desired: NodeDesired, generation: int) -> NodeDesired:
        """`desired` as sent to its node: with its generation and this controller's id."""
        return desired.model_copy(
            update={"generation": generation, "controller_id": self._store.controller_id}
        )

    # -- the loop --------------------------------------------------------------------

    def trigger(self) -> None:
        """Ask for a pass soon."""
        self._wake.set()

    def start(self) -> None:
        """Run passes in the background."""
        self._task = asyncio.create_task(self._run(), name="reconciler")

    async def close(self) -> None:
        """Stop running passes."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), RESYNC_S)
            self._wake.clear()
            # Let a burst of triggers (one apply touches many nodes) settle into one pass.
            await asyncio.sleep(0.01)
            self._wake.clear()
            try:
                await self.reconcile_once()
            except Exception:
                log.exception("reconcile pass failed; the next pass retries")

    async def reconcile_once(self) -> Schedule:
        """One pass: schedule, store what changed, and hand each node its desired state."""
        deployments = self.deployments()
        self.failure_timeout_s = self._failure_timeout(deployments)
        await self._add_manifest_nodes(deployments)
        result = self.preview(deployments)
        wanted = dict(result.assignment)
        for link in self._fleet.links():
            # A node that runs work nobody assigned it (a stray, or one left over from
            # another controller) is told to run nothing.
            status = link.status
            if link.node_id not in wanted and status and (status.models or status.agents):
                wanted[link.node_id] = NodeDesired()
        contents = {node: _content(desired) for node, desired in wanted.items()}
        changed = {
            node: content
            for node, content in contents.items()
            if self._saved_content.get(node) != content
        }
        ahead = self._nodes_ahead(wanted)
        if ahead:
            self._store.raise_generation_floor(max(ahead.values()))
            for node in ahead:
                changed.setdefault(node, contents[node])
        if changed:
            generations = self._store.save_assignment(changed, force=tuple(ahead))
            for node, generation in generations.items():
                self.assignment[node] = self._stamped(wanted[node], generation)
                self._saved_content[node] = contents[node]
            self._record_plan(result.plan, set(generations))
        self.last_schedule = result
        for node, desired in self.assignment.items():
            node_link = self._fleet.get(node)
            if node_link is not None and node_link.desired != desired:
                node_link.want(desired)
        return result

    def _nodes_ahead(self, wanted: dict[str, NodeDesired]) -> dict[str, int]:
        """Nodes that report a newer generation than the store gave them (store restored
        from a backup, or another controller): they need a generation above theirs."""
        ahead: dict[str, int] = {}
        for node in wanted:
            link = self._fleet.get(node)
            current = self.assignment.get(node)
            if link is None or link.status is None:
                continue
            if link.observed_generation > (current.generation if current else 0):
                ahead[node] = link.observed_generation
        return ahead

    async def _add_manifest_nodes(self, deployments: Sequence[DesiredState]) -> None:
        for deployment in deployments:
            for node in deployment.nodes:
                if node.address and self._fleet.get(node.id) is None:
                    await self._fleet.add(node.id, node.address, "manifest")

    def _record_plan(self, plan: Plan, nodes: set[str]) -> None:
        for step in plan.steps:
            if step.node in nodes:
                self._record_step(step)

    def _record_step(self, step: PlanStep) -> None:
        reason, text = _STEP_WORDS[step.action]
        kind = "model" if "model" in step.action else "agent"
        message = text.format(name=step.name, node=step.node)
        if step.reason:
            message += f" ({step.reason})"
        self._events.record("info", reason, f"{kind}/{step.name}", message, node_id=step.node)
