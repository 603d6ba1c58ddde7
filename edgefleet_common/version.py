"""The installed EdgeFleet version."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgefleet")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0.0.0"
