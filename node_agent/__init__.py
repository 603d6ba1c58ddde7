"""EdgeFleet edge-node daemon: runtimes, models, agents, tools and local state."""

from orchestrator import __version__

__all__ = ["__version__"]
