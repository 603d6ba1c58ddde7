"""EdgeFleet edge-node daemon: runtimes, models, agents, tools and local state."""

from edgefleet_common.version import __version__

__all__ = ["__version__"]
