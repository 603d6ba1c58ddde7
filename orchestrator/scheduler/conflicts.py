"""Problems across deployments that no placement can solve."""

from __future__ import annotations

from collections.abc import Sequence

from edgefleet_contract.units import format_size
from orchestrator.manifest.desired import DesiredState, ModelSpec

_COMPARED = ("runtime", "source", "memory_bytes", "parallel", "context", "sha256")
"""What makes two declarations of one alias different models (a node runs one server per
model, so its slots too). A detail only one of them sets is not a conflict: the other
leaves it to the node's catalog."""


def check_conflicts(deployments: Sequence[DesiredState]) -> list[str]:
    """Why these deployments cannot be applied together, one message per problem.

    Agent names must be unique across deployments (gateway clients ask for agents by
    name) and one model alias must mean one model. A node named by several deployments
    is fine: it runs the work of each.
    """
    ordered = sorted(deployments, key=lambda d: d.name)
    problems: list[str] = []
    seen_names: set[str] = set()
    for deployment in ordered:
        if deployment.name in seen_names:
            problems.append(f"deployment `{deployment.name}` is given twice")
        seen_names.add(deployment.name)
    problems += _shared_agent_names(ordered)
    problems += _differing_models(ordered)
    problems += _missing_models(ordered)
    return list(dict.fromkeys(problems))


def _shared_agent_names(deployments: Sequence[DesiredState]) -> list[str]:
    owners: dict[str, list[str]] = {}
    for deployment in deployments:
        for agent in deployment.agents:
            names = owners.setdefault(agent.name, [])
            if deployment.name not in names:
                names.append(deployment.name)
    return [
        f"agent `{agent}` is declared by deployments {_names(names)}: gateway clients ask for "
        "agents by name, so each name must belong to one deployment (rename one)"
        for agent, names in sorted(owners.items())
        if len(names) > 1
    ]


def _differing_models(deployments: Sequence[DesiredState]) -> list[str]:
    declared: dict[str, list[tuple[str, ModelSpec]]] = {}
    for deployment in deployments:
        for model in deployment.models:
            declared.setdefault(model.alias, []).append((deployment.name, model))
    problems = []
    for alias, found in sorted(declared.items()):
        pairs = [(a, b) for i, a in enumerate(found) for b in found[i + 1 :]]
        for (first_name, first), (name, other) in pairs:
            differing = [
                field
                for field in _COMPARED
                if getattr(first, field) is not None
                and getattr(other, field) is not None
                and getattr(first, field) != getattr(other, field)
            ]
            if differing:
                problems.append(
                    f"model `{alias}` means different models in deployments `{first_name}` "
                    f"({_describe(first, differing)}) and `{name}` "
                    f"({_describe(other, differing)}): one alias must be one model on every "
                    "node (use another alias, or declare it the same way)"
                )
    return problems


def _missing_models(deployments: Sequence[DesiredState]) -> list[str]:
    problems = []
    for deployment in deployments:
        aliases = {m.alias for m in deployment.models}
        for agent in deployment.agents:
            if agent.model not in aliases:
                problems.append(
                    f"agent `{agent.name}` of deployment `{deployment.name}` uses model "
                    f"`{agent.model or '(none)'}`, which the deployment does not declare"
                )
    return problems


def _describe(model: ModelSpec, fields: Sequence[str]) -> str:
    words = {
        "runtime": "runtime",
        "source": "source",
        "memory_bytes": "memory",
        "parallel": "parallel",
        "context": "context",
        "sha256": "sha256",
    }
    parts = []
    for field in fields:
        value = getattr(model, field)
        shown = format_size(value) if field == "memory_bytes" else str(value)
        parts.append(f"{words[field]} {shown}")
    return ", ".join(parts)


def _names(names: Sequence[str]) -> str:
    quoted = [f"`{n}`" for n in names]
    return ", ".join(quoted[:-1]) + f" and {quoted[-1]}"
