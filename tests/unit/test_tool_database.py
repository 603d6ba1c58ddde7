"""The database tool against real SQLite files: reads work, nothing else does."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from node_agent.errors import ToolConfigError, ToolError
from node_agent.tools.base import ToolContext, ToolFunction
from node_agent.tools.database import DatabaseTool

PATIENTS = 300


def call_sync(fn: ToolFunction, arguments: dict[str, Any]) -> str:
    """Run one tool function to completion (ToolFunction.call is any awaitable)."""

    async def go() -> str:
        return await fn.call(arguments)

    return asyncio.run(go())


@pytest.fixture
def context(tmp_path: Path) -> ToolContext:
    return ToolContext(data_dir=tmp_path, agent="records-lookup")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "clinic.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE patients (id INTEGER PRIMARY KEY, name TEXT NOT NULL, born TEXT, photo BLOB);
        CREATE TABLE visits (id INTEGER PRIMARY KEY, patient_id INTEGER NOT NULL, day TEXT);
        CREATE INDEX visits_by_patient ON visits (patient_id);
        CREATE VIEW recent AS SELECT * FROM visits WHERE day > '2025-01-01';
        """
    )
    conn.executemany(
        "INSERT INTO patients (name, born, photo) VALUES (?, ?, ?)",
        [(f"patient {i}", f"19{i % 100:02d}-01-01", b"\x89PNG") for i in range(PATIENTS)],
    )
    conn.commit()
    conn.close()
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def query(tool: DatabaseTool, sql: str, params: list[Any] | None = None) -> dict[str, Any]:
    fn = {f.name: f for f in tool.functions()}["database_query"]
    arguments: dict[str, Any] = {"sql": sql}
    if params is not None:
        arguments["params"] = params
    result: dict[str, Any] = json.loads(call_sync(fn, arguments))
    return result


def test_parameterised_select_returns_columns_and_rows(db: Path, context: ToolContext) -> None:
    tool = DatabaseTool({"path": str(db)}, context)
    result = query(tool, "SELECT id, name, photo FROM patients WHERE id IN (?, ?)", [2, 7])
    assert result == {
        "columns": ["id", "name", "photo"],
        "rows": [[2, "patient 1", "<blob, 4 bytes>"], [7, "patient 6", "<blob, 4 bytes>"]],
        "row_count": 2,
    }


def test_rows_are_truncated_at_max_rows_with_a_note(db: Path, context: ToolContext) -> None:
    tool = DatabaseTool({"path": str(db), "max_rows": 50}, context)
    result = query(tool, "SELECT id FROM patients ORDER BY id")
    assert result["row_count"] == 50
    assert result["rows"] == [[i] for i in range(1, 51)]
    assert result["truncated"] is True
    assert "first 50 rows" in result["note"]
    exact = query(tool, "SELECT id FROM patients LIMIT 50")
    assert "truncated" not in exact


def test_the_default_limit_is_100_rows(db: Path, context: ToolContext) -> None:
    result = query(DatabaseTool({"path": str(db)}, context), "SELECT id FROM patients")
    assert result["row_count"] == 100


def test_long_text_cells_are_cut(db: Path, context: ToolContext) -> None:
    result = query(DatabaseTool({"path": str(db)}, context), "SELECT printf('%.5000c', 'x')")
    (cell,) = result["rows"][0]
    assert cell.startswith("x" * 2000)
    assert cell.endswith("(3000 more characters)")


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM patients",
        "UPDATE patients SET name = 'x'",
        "INSERT INTO patients (name) VALUES ('x')",
        "REPLACE INTO patients (id, name) VALUES (1, 'x')",
        "DROP TABLE visits",
        "CREATE TABLE t (a)",
        "CREATE TEMP TABLE t (a)",
        "CREATE INDEX i ON patients (name)",
        "ALTER TABLE patients ADD COLUMN x",
        "PRAGMA writable_schema=1",
        "PRAGMA query_only=0",
        "PRAGMA journal_mode=DELETE",
        "BEGIN",
        "SAVEPOINT s",
        "VACUUM",
        "REINDEX",
        "REINDEX visits_by_patient",
        "ANALYZE",
        "SELECT load_extension('/tmp/x')",
        "WITH gone AS (SELECT 1) DELETE FROM patients",
    ],
)
def test_anything_but_reading_is_refused(db: Path, context: ToolContext, sql: str) -> None:
    tool = DatabaseTool({"path": str(db)}, context)
    before = digest(db)
    with pytest.raises(ToolError, match="only reading is allowed"):
        query(tool, sql)
    assert digest(db) == before
    assert sorted(p.name for p in db.parent.iterdir()) == ["clinic.db"]


def test_attach_is_refused_and_creates_no_file(db: Path, context: ToolContext) -> None:
    tool = DatabaseTool({"path": str(db)}, context)
    other = db.parent / "other.db"
    with pytest.raises(ToolError, match="only reading is allowed"):
        query(tool, f"ATTACH DATABASE '{other}' AS other")
    with pytest.raises(ToolError, match="only reading is allowed"):
        query(tool, f"VACUUM INTO '{other}'")
    assert not other.exists()


def test_only_one_statement_runs(db: Path, context: ToolContext) -> None:
    tool = DatabaseTool({"path": str(db)}, context)
    before = digest(db)
    with pytest.raises(ToolError, match="exactly one SQL statement"):
        query(tool, "SELECT 1; DELETE FROM patients")
    with pytest.raises(ToolError, match="exactly one SQL statement"):
        query(tool, "SELECT 1; SELECT 2")
    assert digest(db) == before
    assert query(tool, "SELECT 1; -- a trailing comment")["rows"] == [[1]]


def test_pragmas_that_describe_the_schema_are_allowed(db: Path, context: ToolContext) -> None:
    tool = DatabaseTool({"path": str(db)}, context)
    assert [row[1] for row in query(tool, "PRAGMA table_info(visits)")["rows"]] == [
        "id",
        "patient_id",
        "day",
    ]
    assert [row[1] for row in query(tool, "PRAGMA index_list(visits)")["rows"]] == [
        "visits_by_patient"
    ]


def test_a_runaway_recursive_query_stops_at_the_timeout(db: Path, context: ToolContext) -> None:
    tool = DatabaseTool({"path": str(db), "timeout": 0.3}, context)
    started = time.monotonic()
    with pytest.raises(ToolError, match=r"longer than 0.3 s and was stopped"):
        query(
            tool,
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) "
            "SELECT count(*) FROM n",
        )
    assert 0.3 <= time.monotonic() - started < 3


def test_an_endless_row_stream_is_cut_at_max_rows_without_waiting(
    db: Path, context: ToolContext
) -> None:
    tool = DatabaseTool({"path": str(db), "max_rows": 10, "timeout": 30}, context)
    started = time.monotonic()
    result = query(
        tool, "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT x FROM n"
    )
    assert result["rows"] == [[i] for i in range(1, 11)]
    assert result["truncated"] is True
    assert time.monotonic() - started < 3


def test_a_slow_query_does_not_block_the_event_loop(db: Path, context: ToolContext) -> None:
    tool = DatabaseTool({"path": str(db), "timeout": 0.5}, context)
    fn = {f.name: f for f in tool.functions()}["database_query"]
    slow = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n"

    async def scenario() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.02)
                ticks += 1

        task = asyncio.create_task(ticker())
        with pytest.raises(ToolError):
            await fn.call({"sql": slow})
        task.cancel()
        return ticks

    assert asyncio.run(scenario()) >= 10


def test_sql_errors_are_reported_to_the_model(db: Path, context: ToolContext) -> None:
    tool = DatabaseTool({"path": str(db)}, context)
    with pytest.raises(ToolError, match="SQL error: no such table: appointments"):
        query(tool, "SELECT * FROM appointments")
    with pytest.raises(ToolError, match="SQL error: Incorrect number of bindings"):
        query(tool, "SELECT * FROM patients WHERE id = ?")
    with pytest.raises(ToolError, match="invalid arguments for database_query: argument `sql`"):
        query(tool, "")


def test_schema_lists_tables_views_and_columns(db: Path, context: ToolContext) -> None:
    tool = DatabaseTool({"path": str(db)}, context)
    fn = {f.name: f for f in tool.functions()}["database_schema"]
    assert json.loads(call_sync(fn, {})) == {
        "tables": [
            {
                "name": "patients",
                "type": "table",
                "columns": [
                    "id INTEGER PRIMARY KEY",
                    "name TEXT NOT NULL",
                    "born TEXT",
                    "photo BLOB",
                ],
            },
            {
                "name": "recent",
                "type": "view",
                "columns": ["id INTEGER", "patient_id INTEGER", "day TEXT"],
            },
            {
                "name": "visits",
                "type": "table",
                "columns": ["id INTEGER PRIMARY KEY", "patient_id INTEGER NOT NULL", "day TEXT"],
            },
        ]
    }


def test_paths_resolve_against_the_data_folder(db: Path, context: ToolContext) -> None:
    assert DatabaseTool({"path": "clinic.db"}, context).path == db
    default = DatabaseTool({}, context)
    assert default.path == context.data_dir / "tools" / "database.sqlite"
    with pytest.raises(ToolError, match="database is not available"):
        query(default, "SELECT 1")
    assert not default.path.exists()


def test_a_file_that_is_not_a_database_is_an_error_not_a_crash(
    tmp_path: Path, context: ToolContext
) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ToolError, match="SQL error: file is not a database"):
        query(DatabaseTool({"path": str(junk)}, context), "SELECT 1 FROM sqlite_master")


@pytest.mark.parametrize(
    ("config", "setting"),
    [
        ({"max_rows": 0}, "max_rows"),
        ({"max_rows": 10_001}, "max_rows"),
        ({"max_rows": "50"}, "max_rows"),
        ({"timeout": 0}, "timeout"),
        ({"path": 7}, "path"),
        ({"readonly": False}, "readonly"),
    ],
)
def test_bad_settings_name_the_setting(
    context: ToolContext, config: dict[str, Any], setting: str
) -> None:
    with pytest.raises(ToolConfigError, match=rf"tool_config\.database\.{setting}\b"):
        DatabaseTool(config, context)
