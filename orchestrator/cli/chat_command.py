"""`edgectl chat AGENT [MESSAGE]`: talk to an agent (or a model alias) through the controller.

The reply goes to stdout as it streams; tool calls and which node served go to
stderr, dimmed, so `edgectl chat a "…" > reply.txt` keeps only the reply.
Without MESSAGE: a conversation, kept as history, until `/exit` or Ctrl-D.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from typing import Any

from edgefleet.v1 import common_pb2, controller_pb2, node_pb2
from orchestrator.cli.client import (
    Controller,
    ControllerRefused,
    add_controller_option,
    connect,
    error_text,
)
from orchestrator.cli.console import Consoles
from orchestrator.errors import UsageError

EXIT_WORDS = ("/exit", "/quit")
_SHOWN_CHARS = 120

Phase = node_pb2.ToolEvent.Phase


def register(commands: Any) -> None:
    """Add the `chat` command."""
    parser = commands.add_parser(
        "chat",
        help="talk to an agent; without MESSAGE, a conversation until /exit or Ctrl-D",
        description=(
            "Send a message to an agent (or a model alias) and stream the reply. Without "
            "MESSAGE, keep a conversation going until /exit or Ctrl-D."
        ),
    )
    parser.add_argument("agent", metavar="AGENT", help="agent name or model alias")
    parser.add_argument("message", nargs="?", metavar="MESSAGE", help="one message to send")
    parser.add_argument("--system", metavar="TEXT", help="a system message to start with")
    parser.add_argument("--max-tokens", type=int, default=0, metavar="N")
    parser.add_argument("--temperature", type=float, metavar="T")
    parser.add_argument(
        "--tool-choice", default="", metavar="CHOICE", help="auto, none, required or a tool name"
    )
    add_controller_option(parser)
    parser.set_defaults(run=run)


def _options(args: argparse.Namespace) -> common_pb2.GenerationOptions:
    if args.max_tokens < 0:
        raise UsageError("--max-tokens must be 0 (the runtime's default) or more")
    options = common_pb2.GenerationOptions(max_tokens=args.max_tokens, tool_choice=args.tool_choice)
    if args.temperature is not None:
        options.temperature = args.temperature
    return options


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


def tool_line(tool: node_pb2.ToolEvent) -> str | None:
    """`[tool time {"zone": "UTC"}]`, `[tool time → 14:02]`, `[tool email refused: …]`."""
    if tool.phase == Phase.PHASE_STARTED:
        arguments = _clip(tool.arguments_json) if tool.arguments_json.strip() != "{}" else ""
        return f"[tool {tool.tool} {arguments}]" if arguments else f"[tool {tool.tool}]"
    if tool.phase == Phase.PHASE_FINISHED:
        return f"[tool {tool.tool} → {_clip(tool.result)}]"
    if tool.phase == Phase.PHASE_REFUSED:
        return f"[tool {tool.tool} refused: {_clip(tool.result)}]"
    return None


def stream_reply(
    controller: Controller, request: controller_pb2.ChatRequest, consoles: Consoles
) -> str:
    """Print the reply as it arrives; returns its text."""
    out, err = consoles.out, consoles.err
    content: list[str] = []
    node, finish, usage = "", "", None
    mid_line = False
    for chunk in controller.stream("Chat", request, node_pb2.InvokeAgentChunk):
        node = node or chunk.node_id
        if chunk.HasField("tool") and (line := tool_line(chunk.tool)) is not None:
            if mid_line:
                out.print()
                mid_line = False
            err.print(line, style="dim", markup=False)
        if chunk.delta:
            out.print(
                chunk.delta, end="", markup=False, highlight=False, emoji=False, soft_wrap=True
            )
            content.append(chunk.delta)
            mid_line = not chunk.delta.endswith("\n")
        finish = chunk.finish_reason or finish
        if chunk.HasField("usage"):
            usage = chunk.usage
    if mid_line:
        out.print()
    details = [f"served by {node or 'unknown node'}"]
    if finish:
        details.append(f"finish: {finish}")
    if usage is not None and (usage.prompt_tokens or usage.completion_tokens):
        details.append(f"{usage.prompt_tokens} prompt + {usage.completion_tokens} reply tokens")
    err.print(f"({', '.join(details)})", style="dim", markup=False)
    return "".join(content)


def _converse(
    controller: Controller,
    agent: str,
    options: common_pb2.GenerationOptions,
    history: list[common_pb2.ChatMessage],
    consoles: Consoles,
) -> int:
    with contextlib.suppress(ImportError):
        importlib.import_module("readline")  # line editing and recall for input()
    consoles.err.print(
        f"chatting with {agent}; /exit or Ctrl-D to leave", style="dim", markup=False
    )
    # A prompt is for a person typing; piped input gets none, so stdout stays the replies.
    prompt = "> " if sys.stdin.isatty() else ""
    while True:
        try:
            text = input(prompt)
        except EOFError:
            consoles.out.print()
            return 0
        if text.strip() in EXIT_WORDS:
            return 0
        if not text.strip():
            continue
        turn = [*history, common_pb2.ChatMessage(role="user", content=text)]
        request = controller_pb2.ChatRequest(agent=agent, messages=turn, options=options)
        try:
            reply = stream_reply(controller, request, consoles)
        except ControllerRefused as exc:
            # One refused turn (e.g. every replica busy) does not end the conversation.
            consoles.err.print(error_text(exc), markup=False)
            continue
        history[:] = [*turn, common_pb2.ChatMessage(role="assistant", content=reply)]


def run(args: argparse.Namespace, consoles: Consoles) -> int:
    """One message, or a conversation."""
    options = _options(args)
    history = [common_pb2.ChatMessage(role="system", content=args.system)] if args.system else []
    with connect(args) as controller:
        if args.message is None:
            return _converse(controller, args.agent, options, history, consoles)
        messages = [*history, common_pb2.ChatMessage(role="user", content=args.message)]
        request = controller_pb2.ChatRequest(agent=args.agent, messages=messages, options=options)
        stream_reply(controller, request, consoles)
    return 0
