"""The routing index of the current deployments: what every gateway routes by.

Built from the current manifest revisions, and rebuilt only when they change (a
new revision applied, a deployment deleted or rolled back).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from edgefleet_contract.routing import (
    AgentRoute,
    DeploymentRoutes,
    EscalationEndpoint,
    ModelRoute,
    RoutingIndex,
)
from orchestrator.manifest.desired import DesiredState


def deployment_routes(desired: DesiredState) -> DeploymentRoutes:
    """One deployment as the gateway sees it."""
    escalation = desired.escalation
    return DeploymentRoutes(
        name=desired.name,
        distributed=desired.type == "distributed-edge",
        strategy=desired.coordination.strategy,
        session_affinity=desired.coordination.session_affinity,
        agents=tuple(AgentRoute(name=a.name, instructions=a.instructions) for a in desired.agents),
        models=tuple(
            ModelRoute(alias=m.alias, tasks=m.tasks, primary=m.role == "primary")
            for m in desired.models
        ),
        escalation=None
        if escalation is None
        else EscalationEndpoint(
            base_url=escalation.base_url,
            model=escalation.model,
            api_key_env=escalation.api_key_env,
            timeout_s=escalation.timeout_s,
        ),
    )


def routing_index(deployments: Sequence[DesiredState]) -> RoutingIndex:
    """The routing index of these deployments, in their order."""
    return RoutingIndex(deployments=tuple(deployment_routes(d) for d in deployments))


class CurrentRoutingIndex:
    """The routing index of the current deployments, built once per set of revisions."""

    def __init__(self, deployments: Callable[[], Sequence[DesiredState]]) -> None:
        """`deployments()` gives the current revisions' desired states; it returns the
        same objects while they stay current (the reconciler parses each revision once)."""
        self._deployments = deployments
        self._built_from: tuple[DesiredState, ...] = ()
        self._index = RoutingIndex()

    def __call__(self) -> RoutingIndex:
        """The index now."""
        current = tuple(self._deployments())
        if len(current) != len(self._built_from) or any(
            now is not before for now, before in zip(current, self._built_from, strict=True)
        ):
            # Holding the desired states keeps their identities from being reused.
            self._index, self._built_from = routing_index(current), current
        return self._index
