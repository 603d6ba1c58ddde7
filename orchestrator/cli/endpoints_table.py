"""The table of `edgectl get endpoints`: every OpenAI gateway of the fleet."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text

from edgefleet.v1 import controller_pb2
from orchestrator.cli.output import new_table, styled


def routes_text(endpoint: controller_pb2.Endpoint, current: int) -> Text:
    """How the gateway's routing table compares with the current one: `current`,
    `behind (N)` or `ahead (N)` (N: the generation it routes with), `none` when it has
    none yet, `unknown` when it never said."""
    if not endpoint.routes_reported:
        return styled("unknown")
    have = endpoint.routes_generation
    if have == current:
        return Text("current", style="green")
    if have == 0:
        return Text("none", style="red")
    word = "behind" if have < current else "ahead"
    return Text(f"{word} ({have})", style="yellow")


def endpoints_table(
    endpoints: Sequence[controller_pb2.Endpoint], current: int, *, wide: bool = False
) -> Table:
    """NAME, KIND, URL, STATE, ROUTES; wide adds the node's API ADDRESS, the GENERATION
    it routes with of the current one, and where the URL came from (SOURCE)."""
    headers = ["NAME", "KIND", "URL", "STATE", "ROUTES"]
    if wide:
        headers += ["ADDRESS", "GENERATION", "SOURCE"]
    table = new_table(*headers)
    for endpoint in endpoints:
        row: list[str | Text] = [
            endpoint.name,
            endpoint.kind,
            endpoint.url or "-",
            styled(endpoint.state or "unknown"),
            routes_text(endpoint, current),
        ]
        if wide:
            have = str(endpoint.routes_generation) if endpoint.routes_reported else "-"
            row += [endpoint.address or "-", f"{have}/{current}", endpoint.url_source or "-"]
        table.add_row(*row)
    return table
