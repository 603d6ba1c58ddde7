"""The sampling options of one agent request, as the node API carries them."""

from __future__ import annotations

from dataclasses import dataclass

from edgefleet.v1 import common_pb2
from edgefleet_contract.wire import float32


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Sampling options of one request; None or empty means the runtime's default."""

    max_tokens: int | None = None
    """Per model call (each tool round is one)."""
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    user: str = ""
    tool_choice: str = ""
    """Empty or `auto`, `none`, `required`, or the name of one of the agent's functions."""

    @classmethod
    def from_proto(cls, options: common_pb2.GenerationOptions) -> RunOptions:
        """The options of a gRPC request, where zero values mean "the runtime's default"."""
        return cls(
            max_tokens=options.max_tokens or None,
            temperature=float32(options.temperature) if options.HasField("temperature") else None,
            top_p=float32(options.top_p) if options.HasField("top_p") else None,
            stop=tuple(options.stop),
            seed=options.seed if options.HasField("seed") else None,
            user=options.user,
            tool_choice=options.tool_choice,
        )
