"""The node's saved desired state: atomic replacement, and what happens to a bad file."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from edgefleet_contract.desired import AgentWant, ModelWant, NodeDesired, NodeLimits
from node_agent.state_file import STATE_FILE, StateFile

FIRST = NodeDesired(
    generation=1,
    controller_id="ctrl",
    models=(ModelWant(alias="smol", memory_bytes=300 * 2**20),),
    agents=(
        AgentWant(
            name="triage",
            model="smol",
            tools=("database",),
            tool_config={"database": {"path": "t.sqlite"}},
        ),
    ),
    limits=NodeLimits(max_queue_per_agent=4, auto_unload_idle_models=True),
)
SECOND = NodeDesired(generation=2, controller_id="ctrl", models=(ModelWant(alias="phi"),))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != STATE_FILE)


def test_a_saved_state_loads_back_equal(tmp_path: Path) -> None:
    saved = StateFile(tmp_path / "node")  # the folder is created on first save
    assert saved.load() is None, "nothing saved yet"
    saved.save(FIRST)
    assert StateFile(tmp_path / "node").load() == FIRST
    saved.save(SECOND)
    assert StateFile(tmp_path / "node").load() == SECOND
    assert leftovers(tmp_path / "node") == [], "no temporary files stay behind"


def test_a_save_that_fails_midway_leaves_the_old_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = StateFile(tmp_path)
    saved.save(FIRST)

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        saved.save(SECOND)
    monkeypatch.undo()
    assert saved.load() == FIRST
    assert leftovers(tmp_path) == []


def test_the_file_is_replaced_never_rewritten_in_place(tmp_path: Path) -> None:
    saved = StateFile(tmp_path)
    saved.save(FIRST)
    before = os.stat(saved.path).st_ino
    saved.save(SECOND)
    # A new inode: readers see the old file or the new one, never a half-written one.
    assert os.stat(saved.path).st_ino != before


@pytest.mark.parametrize(
    "content",
    [
        b'{"generation": 3, "models": [',  # torn write of an older, non-atomic writer
        b'{"generation": 3, "agents": [{"name": "a", "model": "nowhere"}]}',
        b'{"generation": "three"}',
        b"\xff\xfe\x00\x00 not text at all",
        b"",
    ],
)
def test_an_unreadable_file_is_set_aside_and_the_node_starts_empty(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    saved = StateFile(tmp_path)
    saved.path.write_bytes(content)
    with caplog.at_level(logging.ERROR, logger="node_agent.state_file"):
        assert saved.load() is None
    assert not saved.path.exists()
    (aside,) = leftovers(tmp_path)
    assert aside.startswith(STATE_FILE)
    assert "unreadable" in aside
    assert (tmp_path / aside).read_bytes() == content, "kept as it was, for inspection"
    assert "saved state is unreadable" in caplog.text

    saved.save(FIRST)  # the next apply saves normally
    assert saved.load() == FIRST


def test_a_second_unreadable_file_does_not_overwrite_the_first(tmp_path: Path) -> None:
    saved = StateFile(tmp_path)
    for content in (b"first {", b"second {"):
        saved.path.write_bytes(content)
        assert saved.load() is None
    kept = sorted((tmp_path / name).read_bytes() for name in leftovers(tmp_path))
    assert kept == [b"first {", b"second {"]


def test_a_folder_that_cannot_be_read_is_reported_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    saved = StateFile(tmp_path)
    saved.path.mkdir()  # a folder where the file should be: reading fails with an OSError
    with caplog.at_level(logging.WARNING, logger="node_agent.state_file"):
        assert saved.load() is None
    assert "cannot read saved state" in caplog.text
