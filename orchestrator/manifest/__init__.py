"""The manifest language: load, validate and normalise `deployment:` documents.

>>> from orchestrator.manifest import load_text
>>> m = load_text("deployment: {type: single-device, models: [{alias: m}]}")
>>> m.desired.models[0].alias
'm'
"""

from orchestrator.manifest.desired import (
    LOCAL_NODE,
    AgentSpec,
    CoordinationSpec,
    DesiredState,
    EscalationSpec,
    ModelSpec,
    NodeSpec,
    ResourceLimits,
)
from orchestrator.manifest.diagnostics import Diagnostic, ManifestError
from orchestrator.manifest.loader import LoadedManifest, load_file, load_text

__all__ = [
    "LOCAL_NODE",
    "AgentSpec",
    "CoordinationSpec",
    "DesiredState",
    "Diagnostic",
    "EscalationSpec",
    "LoadedManifest",
    "ManifestError",
    "ModelSpec",
    "NodeSpec",
    "ResourceLimits",
    "load_file",
    "load_text",
]
