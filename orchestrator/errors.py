"""The controller's exception tree; the CLI maps it once to exit codes."""

from __future__ import annotations


class EdgeFleetError(Exception):
    """Base of every error the controller and edgectl raise on purpose."""

    exit_code = 1


class UsageError(EdgeFleetError):
    """The command line asks for something that cannot be done as written."""

    exit_code = 2


class ControllerUnavailable(EdgeFleetError):
    """The controller could not be reached at the address edgectl looked at."""

    exit_code = 3


class PlacementError(EdgeFleetError):
    """Desired work cannot be placed on any node; the message says why."""


class NodeUnavailable(EdgeFleetError):
    """A node did not answer or refused a command."""
