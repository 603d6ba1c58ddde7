"""The routing index: what a gateway needs to know of the current deployments.

Per deployment: its agents and model aliases, how requests to them are balanced,
and where what the edge cannot serve escalates. The controller builds it from the
current manifest revisions; any gateway answers requests from it alone. Plain,
frozen data (JSON in and out with pydantic), so it can travel to every node.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgefleet_contract.frozen import Frozen

Strategy = Literal["round-robin", "least-outstanding", "peak-ewma"]
"""How requests spread over a target's ready replicas."""
TargetKind = Literal["agent", "model"]
"""What a request names: an agent, or a model alias."""
DEFAULT_STRATEGY: Strategy = "peak-ewma"


class AgentRoute(Frozen):
    """An agent a deployment declares."""

    name: str
    instructions: str = ""
    """Sent ahead of the conversation when the agent's request escalates."""


class ModelRoute(Frozen):
    """A model alias a deployment declares."""

    alias: str
    tasks: tuple[str, ...] = ()
    primary: bool = False


class EscalationEndpoint(Frozen):
    """The OpenAI-compatible endpoint that takes what the edge cannot serve."""

    base_url: str
    model: str
    api_key_env: str | None = None
    """The environment variable of the gateway's host that holds the API key."""
    timeout_s: float = Field(30.0, gt=0)


class Coordination(Frozen):
    """How a target's requests are balanced."""

    strategy: Strategy | None = DEFAULT_STRATEGY
    """None: no balancing (the first ready replica by node id serves)."""
    session_affinity: bool = False


class DeploymentRoutes(Frozen):
    """One deployment as the gateway sees it."""

    name: str
    distributed: bool = False
    """Whether coordination applies (a single-device deployment has one replica)."""
    strategy: Strategy | None = DEFAULT_STRATEGY
    session_affinity: bool = False
    agents: tuple[AgentRoute, ...] = ()
    models: tuple[ModelRoute, ...] = ()
    escalation: EscalationEndpoint | None = None

    def declares(self, name: str) -> bool:
        """Whether an agent or a model alias of this deployment has this name."""
        return any(a.name == name for a in self.agents) or any(m.alias == name for m in self.models)

    @property
    def coordination(self) -> Coordination:
        """How the deployment's targets are balanced."""
        if not self.distributed:
            return Coordination(strategy=None, session_affinity=False)
        return Coordination(strategy=self.strategy, session_affinity=self.session_affinity)


class Listed(Frozen):
    """One entry of the gateway's model listing."""

    name: str
    kind: TargetKind
    deployment: str


class RoutingIndex(Frozen):
    """Every current deployment's routes, by deployment name."""

    deployments: tuple[DeploymentRoutes, ...] = ()

    def deployment_of(self, name: str) -> DeploymentRoutes | None:
        """The deployment that declares an agent or a model alias of this name."""
        return next((d for d in self.deployments if d.declares(name)), None)

    def agent(self, name: str) -> AgentRoute | None:
        """The agent of this name, in whichever deployment declares it."""
        return next((a for d in self.deployments for a in d.agents if a.name == name), None)

    def kind_of(self, name: str) -> TargetKind | None:
        """Whether a name is an agent or a model alias (an agent wins); None: neither."""
        if self.agent(name) is not None:
            return "agent"
        if any(m.alias == name for d in self.deployments for m in d.models):
            return "model"
        return None

    def names(self) -> list[str]:
        """Every agent name and model alias, sorted."""
        return sorted({entry.name for entry in self.listing()})

    def models_for_task(self, task: str) -> list[ModelRoute]:
        """The models whose `tasks` list this task, by alias (a later declaration of an
        alias stands for it)."""
        models = {m.alias: m for d in self.deployments for m in d.models}
        return [models[alias] for alias in sorted(models) if task in models[alias].tasks]

    def escalation(self, target: str, kind: TargetKind) -> tuple[EscalationEndpoint | None, str]:
        """(escalation endpoint, agent instructions) of the deployment that declares the
        target; (None, "") when none does."""
        for deployment in self.deployments:
            if kind == "agent":
                for agent in deployment.agents:
                    if agent.name == target:
                        return deployment.escalation, agent.instructions
            elif any(model.alias == target for model in deployment.models):
                return deployment.escalation, ""
        return None, ""

    def coordination(self, target: str) -> Coordination:
        """How the target's requests are balanced (the default for an unknown one)."""
        deployment = self.deployment_of(target)
        return Coordination() if deployment is None else deployment.coordination

    def listing(self) -> list[Listed]:
        """Every agent and model alias once, in declaration order (a deployment's agents,
        then its models): what `/v1/models` lists."""
        found: list[Listed] = []
        seen: set[str] = set()
        for deployment in self.deployments:
            entries: list[tuple[str, TargetKind]] = [(a.name, "agent") for a in deployment.agents]
            entries += [(m.alias, "model") for m in deployment.models]
            for name, kind in entries:
                if name not in seen:
                    seen.add(name)
                    found.append(Listed(name=name, kind=kind, deployment=deployment.name))
        return found
