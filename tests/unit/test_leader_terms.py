"""The node's leader term: the highest seen, kept across restarts, raised by a newer leader,
and older leaders' pushes refused (counted, changing nothing)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from node_agent.errors import StaleLeaderTerm
from node_agent.leader_terms import LEADER_TERM_FILE, LeaderTerms


def test_a_new_node_follows_no_term_and_takes_any_push(tmp_path: Path) -> None:
    terms = LeaderTerms.load(tmp_path)
    assert terms.term == 0
    asyncio.run(terms.admit(0, "c1", "generation 1"))
    assert terms.term == 0
    assert not (tmp_path / LEADER_TERM_FILE).exists()


def test_a_higher_term_is_followed_and_kept_across_a_restart(tmp_path: Path) -> None:
    changes: list[None] = []
    terms = LeaderTerms.load(tmp_path, lambda: changes.append(None))
    asyncio.run(terms.admit(3, "c1", "generation 1"))
    asyncio.run(terms.observe(7, "c2"))
    assert terms.term == 7
    assert len(changes) == 2
    assert LeaderTerms.load(tmp_path).term == 7


def test_a_lower_term_is_refused_naming_both_terms_and_the_controller(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    terms = LeaderTerms.load(tmp_path)
    asyncio.run(terms.admit(7, "c2", "generation 4"))
    with (
        caplog.at_level(logging.WARNING, "node_agent.leader_terms"),
        pytest.raises(StaleLeaderTerm) as refused,
    ):
        asyncio.run(terms.admit(5, "c1", "generation 5"))
    message = str(refused.value)
    for words in ("`c1`", "term 5", "term 7"):
        assert words in message
    assert "a newer leader took over" in message
    assert terms.refused == 1
    assert terms.term == 7
    [record] = caplog.records
    assert (record.push_term, record.leader_term) == (5, 7)  # type: ignore[attr-defined]


def test_term_zero_is_refused_once_a_term_was_seen(tmp_path: Path) -> None:
    terms = LeaderTerms.load(tmp_path)
    asyncio.run(terms.admit(2, "c1", "routing table 1"))
    with pytest.raises(StaleLeaderTerm, match="term 0"):
        asyncio.run(terms.admit(0, "old", "routing table 2"))
    assert terms.refused == 1


def test_the_same_term_is_taken_and_observers_change_nothing(tmp_path: Path) -> None:
    terms = LeaderTerms.load(tmp_path)
    asyncio.run(terms.admit(4, "c1", "generation 1"))
    asyncio.run(terms.admit(4, "c1", "generation 2"))
    asyncio.run(terms.observe(0, "standby"))
    asyncio.run(terms.observe(2, "old"))
    assert (terms.term, terms.refused) == (4, 0)
    assert LeaderTerms.load(tmp_path).term == 4


def test_an_unreadable_saved_term_is_set_aside_and_none_is_followed(tmp_path: Path) -> None:
    (tmp_path / LEADER_TERM_FILE).write_bytes(b'{"leader_term": "seven"}')
    assert LeaderTerms.load(tmp_path).term == 0
    assert not (tmp_path / LEADER_TERM_FILE).exists()
    [aside] = tmp_path.glob(f"{LEADER_TERM_FILE}.unreadable-*")
    assert aside.read_bytes() == b'{"leader_term": "seven"}'
