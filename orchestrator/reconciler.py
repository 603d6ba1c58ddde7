"""The control loop: desired (latest revisions) + observed (node status) → plan → pushes.

Level-triggered and idempotent: every pass reads the whole desired state and
the whole fleet and decides, without side effects, what changes
(`reconcile_decision.decide`); then it carries the decision out: stores the
assignment (a new generation for each node whose work changed), records the
plan steps as events and tells each link what its node should run. Nothing
remembers events; a missed one is healed by the next pass, and a periodic
resync makes a pass even when nothing seems to have happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from edgefleet_contract.desired import NodeDesired
from orchestrator.blob_peers import plan_peers, with_peers
from orchestrator.blob_records import BlobRecords
from orchestrator.events import EventLog
from orchestrator.fleet.fleet import Fleet
from orchestrator.manifest.desired import CoordinationSpec, DesiredState
from orchestrator.reconcile_decision import (
    Decision,
    NodeReport,
    Stored,
    decide,
    needs_push,
    stamped,
)
from orchestrator.scheduler import schedule
from orchestrator.scheduler.model import KnownBlob, PlanStep, Schedule
from orchestrator.store import StateStore

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


class Reconciler:
    """Drives every node towards what the current revisions ask of it."""

    def __init__(
        self,
        store: StateStore,
        fleet: Fleet,
        events: EventLog,
        *,
        local_node: str,
        on_pass: Callable[[], None] = lambda: None,
    ) -> None:
        """`on_pass()` runs after every pass (the routing table follows what it saw)."""
        self._store = store
        self._on_pass = on_pass
        self._fleet = fleet
        self._events = events
        self._local_node = local_node
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._parsed: dict[str, DesiredState] = {}
        self.blob_records = BlobRecords(store)
        """The hash and size learned per remote model source."""
        self.assignment: dict[str, NodeDesired] = self._load_assignment()
        self._saved_content = {node: d.content_key() for node, d in self.assignment.items()}
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
            deployments,
            self._fleet.scheduler_views(),
            self.assignment,
            local_node=self._local_node,
            known=self._known(deployments),
        )

    def _known(self, deployments: Sequence[DesiredState]) -> dict[str, KnownBlob]:
        """What the fleet learned of the blobs behind the deployments' remote sources."""
        return self.blob_records.lookup(
            {m.source for d in deployments for m in d.models if m.source}
        )

    def _learn_blobs(self, deployments: Sequence[DesiredState]) -> None:
        """Record the hashes nodes report for sources without one; tell disagreements."""
        pins = {m.source: m.sha256 for d in deployments for m in d.models if m.source and m.sha256}
        for found in self.blob_records.learn(self._fleet.blob_reports(), pins):
            self._events.record(
                "warning",
                "BlobMismatch",
                f"node/{found.node}",
                found.message(),
                node_id=found.node,
            )

    def reload_assignment(self) -> None:
        """Take the assignment from the store again: another controller (the leader)
        wrote it, or this one is about to lead and must start from what was decided."""
        self.assignment = self._load_assignment()
        self._saved_content = {node: d.content_key() for node, d in self.assignment.items()}
        self.blob_records.forget()

    def _load_assignment(self) -> dict[str, NodeDesired]:
        return {
            node: stamped(
                NodeDesired.model_validate_json(row.desired_json),
                row.generation,
                self._store.controller_id,
            )
            for node, row in self._store.assignment().items()
        }

    # -- the loop --------------------------------------------------------------------

    def trigger(self) -> None:
        """Ask for a pass soon."""
        self._wake.set()

    @property
    def running(self) -> bool:
        """Whether passes run (on the leader only)."""
        return self._task is not None

    def start(self) -> None:
        """Run passes in the background (again, after `close`)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="reconciler")

    async def close(self) -> None:
        """Stop running passes."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

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
            self._on_pass()

    async def reconcile_once(self) -> Schedule:
        """One pass: decide (pure), then store what changed and hand each node its state."""
        deployments = self.deployments()
        self.failure_timeout_s = self._failure_timeout(deployments)
        await self._add_manifest_nodes(deployments)
        self._learn_blobs(deployments)
        stored = Stored(self.assignment, self._saved_content)
        decision = decide(
            deployments,
            self._fleet.scheduler_views(),
            stored,
            self._reports(),
            local_node=self._local_node,
            known=self._known(deployments),
        )
        self._carry_out(decision, stored)
        return decision.schedule

    def _reports(self) -> dict[str, NodeReport]:
        """What every node that has reported last said."""
        return {
            link.node_id: NodeReport(
                generation=link.observed_generation,
                runs_work=bool(link.status.models or link.status.agents),
            )
            for link in self._fleet.links()
            if link.status is not None
        }

    def _carry_out(self, decision: Decision, stored: Stored) -> None:
        """Persist the renewed nodes, record their steps, push every node's state."""
        if decision.renew:
            if decision.generation_floor:
                self._store.raise_generation_floor(decision.generation_floor)
            contents = decision.contents()
            # The store numbers only what differs from what it holds (or is forced).
            generations = self._store.save_assignment(contents, force=decision.force)
            self.assignment = decision.assignment(stored, generations, self._store.controller_id)
            for node in generations:
                self._saved_content[node] = contents[node]
            for step in decision.steps:
                if step.node in generations:
                    self._record_step(step)
        self.last_schedule = decision.schedule
        self._push()

    def _push(self) -> None:
        """Hand every link its node's state, with the peers to fetch model blobs from.

        Peers are not part of what is stored or numbered: a node learns them with the
        next state it is sent, or at once while it is still downloading.
        """
        sources = self._fleet.peer_nodes()
        peers = plan_peers(self.assignment, sources)
        for node, desired in self.assignment.items():
            node_link = self._fleet.get(node)
            if node_link is None:
                continue
            wanted = with_peers(desired, peers.get(node, {}))
            source = sources.get(node)
            downloading = source is not None and bool(source.fetching)
            if needs_push(node_link.desired, wanted, downloading=downloading):
                node_link.want(wanted)

    async def _add_manifest_nodes(self, deployments: Sequence[DesiredState]) -> None:
        for deployment in deployments:
            for node in deployment.nodes:
                if node.address and self._fleet.get(node.id) is None:
                    await self._fleet.add(node.id, node.address, "manifest")

    def _record_step(self, step: PlanStep) -> None:
        reason, text = _STEP_WORDS[step.action]
        kind = "model" if "model" in step.action else "agent"
        message = text.format(name=step.name, node=step.node)
        if step.reason:
            message += f" ({step.reason})"
        self._events.record("info", reason, f"{kind}/{step.name}", message, node_id=step.node)
