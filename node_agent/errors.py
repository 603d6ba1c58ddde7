"""The edge-node's exception tree, mapped once to gRPC status codes by the server."""

from __future__ import annotations


class NodeError(Exception):
    """Base of every error the edge-node raises on purpose."""


class InvalidRequest(NodeError):
    """A request is malformed or names something that does not exist (INVALID_ARGUMENT)."""


class NotFound(NodeError):
    """An agent, model or item named by a request is not on this node (NOT_FOUND)."""


class StaleGeneration(NodeError):
    """Work from an older generation than the node has already accepted (FAILED_PRECONDITION)."""


class StaleLeaderTerm(NodeError):
    """A push from a controller whose leader term is older than the one the node follows: a
    newer leader took over (FAILED_PRECONDITION)."""


class QueueFull(NodeError):
    """A bounded queue is full; the caller should retry later or elsewhere (RESOURCE_EXHAUSTED)."""


class RuntimeUnavailable(NodeError):
    """A model runtime cannot be reached or started (UNAVAILABLE)."""


class NodeStopping(NodeError):
    """The node is shutting down; ask another node (UNAVAILABLE)."""


class ModelLoadError(NodeError):
    """A model could not be loaded; the message says what to do about it."""


class UnknownModel(ModelLoadError):
    """No runtime in the catalog can serve a model alias."""


class ToolError(NodeError):
    """A tool refused a call or failed while running it."""


class ToolNotAllowed(ToolError):
    """An agent asked for a tool its manifest does not list (PERMISSION_DENIED)."""


class ToolConfigError(ToolError):
    """An agent's `tool_config` for a tool is invalid; the message names the setting."""
