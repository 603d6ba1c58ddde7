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
from orchestrator.manifest.desired import DesiredState
from orchestrator.scheduler import schedule
from orchestrator.scheduler.model import Plan, PlanStep, Schedule
from orchestrator.store import Store

log = logging.getLogger(__name__)

RESYNC_S = 5.0
"""A full pass at least this often, whatever happened."""
DEFAULT_FAILURE_TIMEOUT_S = 3.0

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


def _is_empty(desired: NodeDesired) -> bool:
    return not desired.models and not desired.agents


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
        self.last_schedule: Schedule | None = None
        self.passes = 0
        self.failure_timeout_s = self._failure_timeout(self.deployments())
        """The shortest failure timeout the current deployments ask for (read often, by
        the fleet's health checks; refreshed on every pass)."""

    # -- desired state ---------------------------------------------------------------

    def deployments(self) -> list[DesiredState]:
        """The desired state of every current deployment, by name."""
        found: list[DesiredState] = []
        for revision in self._store.current():
            parsed = self._parsed.get(revision.digest)
            if parsed is None:
                parsed = DesiredState.model_validate_json(revision.desired_json)
                self._parsed[revision.digest] = parsed
            found.append(parsed)
        return found

    @staticmethod
    def _failure_timeout(deployments: Sequence[DesiredState]) -> float:
        timeouts = [
            d.coordination.failure_timeout_s for d in deployments if d.type == "distributed-edge"
        ]
        return min(timeouts, default=DEFAULT_FAILURE_TIMEOUT_S)

    def preview(self, deployments: Sequence[DesiredState]) -> Schedule:
        """What a pass would decide if `deployments` were the current ones (no side effects)."""
        return schedule(
            deployments, self._fleet.views(), self.assignment, local_node=self._local_node
        )

    def _load_assignment(self) -> dict[str, NodeDesired]:
        return {
            node: NodeDesired.model_validate_json(row.desired_json).model_copy(
                update={"generation": row.generation, "controller_id": self._store.controller_id}
            )
            for node, row in self._store.assignment().items()
        }

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
        self.passes += 1
        deployments = self.deployments()
        self.failure_timeout_s = self._failure_timeout(deployments)
        await self._add_static_nodes(deployments)
        result = self.preview(deployments)
        wanted = dict(result.assignment)
        for link in self._fleet.links():
            # A node that runs work nobody assigned it (a stray, or one left over from
            # another controller) is told to run nothing.
            status = link.status
            if link.node_id not in wanted and status and (status.models or status.agents):
                wanted[link.node_id] = NodeDesired()
        changed = {
            node: _content(desired)
            for node, desired in wanted.items()
            if node not in self.assignment or _content(self.assignment[node]) != _content(desired)
        }
        ahead = self._nodes_ahead(wanted)
        if ahead:
            self._store.raise_generation_floor(max(ahead.values()))
            for node in ahead:
                changed.setdefault(node, _content(wanted[node]))
        if changed:
            generations = self._store.save_assignment(changed, force=tuple(ahead))
            for node, generation in generations.items():
                self.assignment[node] = wanted[node].model_copy(
                    update={"generation": generation, "controller_id": self._store.controller_id}
                )
            self._record_plan(result.plan, set(generations))
        self.last_schedule = result
        for node, desired in self.assignment.items():
            target = self._fleet.get(node)
            if target is not None and target.desired != desired:
                target.want(desired)
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

    async def _add_static_nodes(self, deployments: Sequence[DesiredState]) -> None:
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
