"""The routing table's generation: one counter, kept with the content it numbered.

A restarted controller that makes the same table again hands out the same
generation (nodes keep routing undisturbed); a table that differs, or one that
must outrank what a node holds, gets the next number above both.
"""

from __future__ import annotations

import sqlite3


def routes_generation(conn: sqlite3.Connection) -> tuple[int, str]:
    """(the last generation handed out, the content key it numbered)."""
    generation, content = conn.execute(
        "SELECT generation, content_key FROM routes WHERE id = 1"
    ).fetchone()
    return int(generation), str(content)


def number_routes(conn: sqlite3.Connection, content_key: str, *, floor: int = 0) -> int:
    """The generation of a table with this content: the stored one when the content is the
    same and it is at least `floor`; otherwise a new one above both."""
    generation, stored = routes_generation(conn)
    if stored == content_key and generation >= floor:
        return generation
    generation = max(generation, floor) + 1
    conn.execute(
        "UPDATE routes SET generation = ?, content_key = ? WHERE id = 1",
        (generation, content_key),
    )
    return generation
