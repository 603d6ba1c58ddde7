"""`edgectl events [--follow] [--object KIND/NAME] [-o table|json]`: what happened, and happens."""

from __future__ import annotations

import argparse
import re
import time
from typing import Any

from rich.text import Text

from edgefleet.v1 import controller_pb2
from orchestrator.cli.client import CALL_TIMEOUT_S, add_controller_option, connect
from orchestrator.cli.console import Consoles
from orchestrator.cli.output import (
    add_output_option,
    age,
    print_json_line,
    print_table,
    severity,
    styled,
)
from orchestrator.cli.tables import events_table
from orchestrator.errors import UsageError

_OBJECT = re.compile(r"^(node|agent|model|deployment)/[A-Za-z0-9][A-Za-z0-9._-]*$")
# Followed events cannot be measured in advance, so their columns have fixed widths.
_WIDTHS = (5, 8, 18, 28)


def register(commands: Any) -> None:
    """Add the `events` command."""
    parser = commands.add_parser(
        "events",
        help="list events; --follow streams new ones until Ctrl-C",
        description=(
            "List the events the controller keeps, oldest first. With --follow, keep printing "
            "new ones until Ctrl-C. -o json prints one JSON object per line."
        ),
    )
    parser.add_argument("--follow", "-w", action="store_true", help="stream new events")
    parser.add_argument(
        "--object", metavar="KIND/NAME", help="only events about one object, e.g. node/edge-1"
    )
    parser.add_argument(
        "--limit", type=int, default=0, metavar="N", help="at most N stored events (0: all)"
    )
    add_output_option(parser, ("table", "json"))
    add_controller_option(parser)
    parser.set_defaults(run=run)


def event_line(event: controller_pb2.Event, now: float | None = None) -> Text:
    """One followed event as a line with the table's columns."""
    cells = (age(event.time, now), severity(event.severity), event.reason, event.object)
    line = Text()
    for index, (cell, width) in enumerate(zip(cells, _WIDTHS, strict=True)):
        text = f"{cell:<{width}} "
        line.append_text(styled(text) if index == 1 else Text(text))
    line.append(event.message)
    return line


def run(args: argparse.Namespace, consoles: Consoles) -> int:
    """Stored events, then (with --follow) new ones as they happen."""
    if args.object and not _OBJECT.match(args.object):
        raise UsageError(
            f"--object `{args.object}` is not KIND/NAME with KIND one of "
            "node, agent, model, deployment (e.g. node/edge-1)"
        )
    if args.limit < 0:
        raise UsageError("--limit must be 0 or more")
    request = controller_pb2.WatchEventsRequest(
        follow=args.follow, limit=args.limit, object=args.object or ""
    )
    timeout = None if args.follow else CALL_TIMEOUT_S
    with connect(args) as controller:
        stream = controller.stream("WatchEvents", request, controller_pb2.Event, timeout)
        if args.output == "json":
            for event in stream:
                print_json_line(event, consoles)
        elif args.follow:
            header = ("AGE", "TYPE", "REASON", "OBJECT")
            consoles.out.print(
                " ".join(f"{h:<{w}}" for h, w in zip(header, _WIDTHS, strict=True)) + " MESSAGE",
                style="bold",
                markup=False,
            )
            for event in stream:
                consoles.out.print(event_line(event))
        else:
            events = list(stream)
            if events:
                print_table(events_table(events, now=time.time()), consoles)
            else:
                consoles.err.print("no events", markup=False)
    return 0
