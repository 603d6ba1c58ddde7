"""`apply --wait`: follow the applied deployments until their agents are ready.

`assess` is pure (a ClusterStatus and what was applied in, a verdict out); the
loop around it polls GetStatus and shows progress: a live table on a terminal,
one line per change otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from rich.live import Live
from rich.table import Table
from rich.text import Text

from edgefleet.v1 import controller_pb2
from orchestrator.cli.client import Controller
from orchestrator.cli.console import Consoles
from orchestrator.cli.output import agent_state, model_state, new_table, styled
from orchestrator.cli.tables import model_replica_state, replica_nodes

POLL_INTERVAL_S = 0.3
DOWNLOADING = "downloading "
"""How the reason of a model whose blob is downloading begins."""
DEFAULT_TIMEOUT_S = 300.0


@dataclass(frozen=True, slots=True)
class Expected:
    """What was applied: deployment names and the agents their manifests declare."""

    deployments: frozenset[str]
    agents: frozenset[str]


@dataclass(frozen=True, slots=True)
class Row:
    """One line of progress: `model phi-4-mini on edge-1  loading 45%`."""

    kind: str
    name: str
    where: str
    state: str


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a rollout stands."""

    rows: tuple[Row, ...]
    waiting: tuple[str, ...]
    failures: tuple[str, ...] = field(default=())
    agents: int = 0

    @property
    def done(self) -> bool:
        """Nothing is waiting and nothing failed."""
        return not self.waiting and not self.failures


Reword = Callable[[str], str]
"""How a command shows the controller's reasons (e.g. `up`, which started the local node
the scheduler's hint asks to start)."""


def _as_sent(reason: str) -> str:
    return reason


def assess(
    status: controller_pb2.ClusterStatus, expected: Expected, reword: Reword = _as_sent
) -> Progress:
    """The state of the expected agents and their models in one status snapshot."""
    agents = {
        a.name: a
        for a in status.agents
        if a.deployment in expected.deployments or (not a.deployment and a.name in expected.agents)
    }
    model_names = {a.model for a in agents.values()}
    models = [
        m
        for m in status.models
        if m.alias in model_names or expected.deployments.intersection(m.deployments)
    ]
    rows: list[Row] = []
    waiting: list[str] = []
    failures: list[str] = []
    for model in models:
        for replica in model.replicas:
            state = model_state(replica.state)
            text = replica_text(replica)
            rows.append(Row("model", model.alias, replica.node_id, text))
            if state == "failed":
                failures.append(f"model {model.alias} on {replica.node_id} failed: {_why(replica)}")
            elif not expected.agents and state != "ready":
                waiting.append(f"model {model.alias} on {replica.node_id} ({text})")
    for name in sorted(expected.agents | set(agents)):
        agent = agents.get(name)
        if agent is None:
            rows.append(Row("agent", name, "-", "not reported yet"))
            waiting.append(f"agent {name} (not reported yet)")
            continue
        ready = f"{agent.ready_replicas}/{agent.desired_replicas} ready"
        rows.append(Row("agent", name, replica_nodes(agent.replicas), ready))
        failures.extend(
            f"agent {name} on {r.node_id} failed: {_why(r)}"
            for r in agent.replicas
            if agent_state(r.state) == "failed"
        )
        if agent.ready_replicas < max(agent.desired_replicas, 1):
            unplaced = reword(agent.unplaced_reason) if agent.unplaced_reason else ""
            detail = f"{ready}" + (f", {unplaced}" if unplaced else "")
            waiting.append(f"agent {name} ({detail})")
    for deployment in status.deployments:
        if deployment.name in expected.deployments:
            for item in deployment.unplaced:
                reason = reword(item.reason) if item.reason else "-"
                rows.append(Row(item.kind or "work", item.name, "not placed", reason))
    return Progress(tuple(rows), tuple(waiting), tuple(failures), len(agents))


def replica_text(replica: controller_pb2.ModelReplicaView) -> str:
    """A model replica's state, with the download's progress bar while its blob downloads
    (`downloading ███░░ 45% 61.0 MiB/135.2 MiB from peer n2, …`)."""
    downloading = model_state(replica.state) == "loading" and replica.reason.startswith(DOWNLOADING)
    return replica.reason if downloading else model_replica_state(replica)


def _why(replica: controller_pb2.ModelReplicaView | controller_pb2.ReplicaView) -> str:
    return replica.reason or "no reason given"


def progress_table(progress: Progress) -> Table:
    """The live view: one row per model replica and per agent."""
    table = new_table("KIND", "NAME", "WHERE", "STATE")
    for row in progress.rows:
        table.add_row(row.kind, row.name, row.where, styled(row.state))
    return table


class _View:
    """Shows progress: a live table on a terminal, changed rows as lines elsewhere."""

    def __init__(self, consoles: Consoles) -> None:
        self._consoles = consoles
        self._seen: dict[tuple[str, str, str], str] = {}
        self._live: Live | None = None
        if consoles.out.is_terminal:
            self._live = Live(console=consoles.out, refresh_per_second=8, transient=False)

    def __enter__(self) -> Self:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.stop()

    def show(self, progress: Progress) -> None:
        if self._live is not None:
            self._live.update(progress_table(progress))
            return
        for row in progress.rows:
            key = (row.kind, row.name, row.where)
            if self._seen.get(key) != row.state:
                self._seen[key] = row.state
                line = Text(f"{row.kind} {row.name} ")
                if row.where != "-":
                    line.append(f"{row.where}: ")
                line.append_text(styled(row.state))
                self._consoles.out.print(line)


def wait_for_rollout(
    controller: Controller,
    expected: Expected,
    consoles: Consoles,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    reword: Reword = _as_sent,
) -> int:
    """Poll until every expected agent is ready (0), something failed or time is up (1)."""
    deadline = time.monotonic() + timeout
    with _View(consoles) as view:
        while True:
            status = controller.call(
                "GetStatus", controller_pb2.GetStatusRequest(), controller_pb2.ClusterStatus
            )
            progress = assess(status, expected, reword)
            view.show(progress)
            if progress.failures:
                _report(consoles, "rollout failed", progress.failures)
                return 1
            if progress.done:
                consoles.out.print(
                    f"ready: {progress.agents} agent(s) of {_names(expected)}", markup=False
                )
                return 0
            if time.monotonic() >= deadline:
                _report(consoles, f"timed out after {timeout:g}s; not ready", progress.waiting)
                return 1
            time.sleep(POLL_INTERVAL_S)


def _names(expected: Expected) -> str:
    return ", ".join(sorted(expected.deployments))


def _report(consoles: Consoles, title: str, lines: Iterable[str]) -> None:
    consoles.err.print(f"error: {title}:", markup=False)
    for line in lines:
        consoles.err.print(f"  {line}", markup=False)
