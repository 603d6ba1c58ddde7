"""What the controller and the edge-node share: version, logging, gRPC transport settings."""

from edgefleet_common.version import __version__

__all__ = ["__version__"]
