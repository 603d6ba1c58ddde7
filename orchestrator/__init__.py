"""EdgeFleet controller: manifests, scheduling, reconciliation, gateway and the edgectl CLI."""

from edgefleet_common.version import __version__

__all__ = ["__version__"]
