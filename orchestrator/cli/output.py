"""How edgectl prints: `-o table|wide|json|yaml`, state words, ages and sizes.

JSON and YAML are the protos' own JSON mapping (field names as in the .proto,
every field present), so scripts can rely on them and parse them back with
`google.protobuf.json_format.ParseDict`. Tables are for people.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

import yaml
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from edgefleet.v1 import common_pb2, controller_pb2
from orchestrator.cli.console import Consoles

LIST_FORMATS = ("table", "wide", "json", "yaml")

_STYLES = {
    "ready": "green",
    "active": "green",
    "revoked": "red",
    "expired": "dim",
    "pending": "yellow",
    "loading": "yellow",
    "starting": "yellow",
    "suspect": "yellow",
    "warning": "yellow",
    "unloading": "dim",
    "stopping": "dim",
    "draining": "dim",
    "cordoned": "dim",
    "superseded": "dim",
    "unknown": "dim",
    "failed": "red",
    "not-ready": "red",
    "untrusted": "red",
    "error": "red",
}


def add_output_option(
    parser: argparse.ArgumentParser, choices: Sequence[str] = LIST_FORMATS
) -> None:
    """`-o/--output`, defaulting to the first choice."""
    parser.add_argument(
        "-o", "--output", choices=tuple(choices), default=choices[0], help="output format"
    )


def _word(name: str, prefix: str) -> str:
    word = name.removeprefix(prefix).lower().replace("_", "-")
    return "unknown" if word == "unspecified" else word


def node_state(value: int) -> str:
    """`NODE_STATE_NOT_READY` -> `not-ready`."""
    return _word(common_pb2.NodeState.Name(value), "NODE_STATE_")


def model_state(value: int) -> str:
    """`MODEL_STATE_LOADING` -> `loading`."""
    return _word(common_pb2.ModelState.Name(value), "MODEL_STATE_")


def agent_state(value: int) -> str:
    """`AGENT_STATE_SUPERSEDED` -> `superseded`."""
    return _word(common_pb2.AgentState.Name(value), "AGENT_STATE_")


def node_state_text(node: controller_pb2.NodeView) -> Text:
    """A node's state and, when it says more, its mark: `ready`, `draining` (a ready node
    being emptied), `ready, cordoned`, `not-ready, draining`; each word coloured."""
    state = node_state(node.state)
    text = styled(state)
    if node.mark and node.mark != state:
        text.append(", ")
        text.append_text(styled(node.mark))
    return text


def severity(value: int) -> str:
    """`SEVERITY_WARNING` -> `warning`."""
    return _word(controller_pb2.Event.Severity.Name(value), "SEVERITY_")


def styled(word: str) -> Text:
    """A state word coloured by what it means (no colour off a terminal)."""
    # "failed: out of memory" is coloured as "failed".
    return Text(word, style=_STYLES.get(word.split(" ", 1)[0].rstrip(":,"), ""))


def is_set(stamp: Timestamp) -> bool:
    """Whether a timestamp carries a time (proto3 leaves unset ones at zero)."""
    return bool(stamp.seconds or stamp.nanos)


def age(stamp: Timestamp, now: float | None = None) -> str:
    """kubectl-style age: `5s`, `3m`, `2h`, `4d`; `-` for never."""
    if not is_set(stamp):
        return "-"
    seconds = max(0, int((time.time() if now is None else now) - stamp.ToSeconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 120 * 60:
        return f"{seconds // 60}m"
    if seconds < 48 * 3600:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def size(count: int) -> str:
    """Bytes in binary units: `512MiB`, `1.5GiB`; `-` for zero (unknown)."""
    if count <= 0:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    number = f"{value:.0f}" if unit == "B" or value >= 100 else f"{value:.1f}".removesuffix(".0")
    return f"{number}{unit}"


def millis(value: float) -> str:
    """A latency: `120ms`, `1.4s`; `-` for none measured."""
    if value <= 0:
        return "-"
    return f"{value:.0f}ms" if value < 1000 else f"{value / 1000:.1f}s"


def as_dict(message: Message) -> dict[str, Any]:
    """The proto JSON mapping of a message, with proto field names and every field."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def print_document(message: Message, fmt: str, consoles: Consoles) -> None:
    """Write a message as JSON or YAML to stdout, exactly (no markup, no wrapping)."""
    data = as_dict(message)
    if fmt == "json":
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    else:
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    consoles.out.file.write(text)
    consoles.out.file.flush()


def print_json_line(message: Message, consoles: Consoles) -> None:
    """One message as one compact JSON line (for streams)."""
    consoles.out.file.write(json.dumps(as_dict(message), ensure_ascii=False) + "\n")
    consoles.out.file.flush()


def new_table(*headers: str) -> Table:
    """A kubectl-like table: upper-case headers, no borders."""
    table = Table(box=None, pad_edge=False, padding=(0, 3, 0, 0), header_style="bold")
    for header in headers:
        table.add_column(header, no_wrap=True)
    return table


def print_table(table: Table, consoles: Consoles, *, indent: int = 0) -> None:
    """A table at its natural width, like kubectl: whole lines in pipes, files and terminals."""
    console = consoles.out
    unbounded = console.options.update(max_width=1_000_000)
    needed = Measurement.get(console, unbounded, table).maximum + indent
    # print() never renders wider than the console, so widen it for this one table.
    width = console.width
    console.width = max(width, needed)
    try:
        with console.capture() as captured:
            console.print(Padding(table, (0, 0, 0, indent), expand=False), crop=False)
    finally:
        console.width = width
    # Cells are padded to their column's width; lines should not end in that padding.
    console.file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
    console.file.flush()


def joined(items: Sequence[str]) -> str:
    """A list for a table cell; `-` when empty."""
    return ", ".join(items) if items else "-"
