"""A controller killed with SIGKILL at random moments reopens a consistent store.

A child process writes in a loop: an assignment batch for every node (each
node's JSON carries the batch number, so a half-written batch would show as two
numbers), two revisions and an event. It prints what each call committed; the
parent kills it at a random moment, reopens the store and checks that nothing
is torn and nothing acknowledged is lost. The next child carries on from the
reopened state, so recovery is exercised too.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orchestrator.store import SqliteStore
from tests.conftest import REPO

NODES = tuple(f"edge-{n}" for n in range(8))
DEPLOYMENTS = ("chat", "vision")
MAX_EVENTS = 30
KILLS = 10

CHILD = f"""
import hashlib, json, sys
from pathlib import Path
from orchestrator.store import SqliteStore

NODES = {NODES!r}
store = SqliteStore.open(Path(sys.argv[1]), max_events={MAX_EVENTS})
saved = store.assignment()
batch = max((json.loads(a.desired_json)["batch"] for a in saved.values()), default=0)
print("ready", flush=True)
while True:
    batch += 1
    filler = "x" * (batch % 7 * 1500)  # rows of varying size, some spanning pages
    generations = store.save_assignment(
        {{n: json.dumps({{"batch": batch, "node": n, "filler": filler}}) for n in NODES}}
    )
    print("assignment", batch, max(generations.values()), flush=True)
    for deployment in {DEPLOYMENTS!r}:
        manifest = f"deployment: {{deployment}}\\nbatch: {{batch}}\\n{{filler}}"
        revision = store.add_revision(
            deployment,
            source="loop",
            manifest=manifest,
            desired_json=json.dumps({{"batch": batch}}),
            digest=hashlib.sha256(manifest.encode()).hexdigest(),
            cause=f"batch {{batch}}",
        )
        print("revision", deployment, revision.number, flush=True)
    store.add_event(severity="info", reason="Tick", object="loop", message=str(batch))
"""


@dataclass
class Acknowledged:
    """The last of each kind of write the child reported as committed."""

    batch: int = 0
    generation: int = 0
    revisions: dict[str, int] = field(default_factory=dict)

    def read(self, output: str) -> None:
        # The last line may be cut short by the kill: only whole lines count.
        for line in output.split("\n")[:-1]:
            words = line.split()
            if words[0] == "assignment":
                self.batch, self.generation = int(words[1]), int(words[2])
            elif words[0] == "revision":
                self.revisions[words[1]] = int(words[2])


def run_and_kill(path: Path, delay: float) -> str:
    """Start a writer, let it write for `delay` seconds, SIGKILL it; return its output."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        first = child.stdout.readline()
        assert first == "ready\n", f"the writer did not start: {first!r}"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        output, errors = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL, f"the writer died on its own: {errors}"
    return output


def check_consistent(path: Path, acknowledged: Acknowledged) -> None:
    """The invariants a killed writer must leave behind."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()

    with SqliteStore.open(path, max_events=MAX_EVENTS) as store:
        # Assignment: one whole batch, never a mix; nothing acknowledged lost.
        assignment = store.assignment()
        batches = {json.loads(a.desired_json)["batch"] for a in assignment.values()}
        if acknowledged.batch:
            assert set(assignment) == set(NODES)
        assert len(batches) <= 1, f"a torn assignment batch: {sorted(batches)}"
        batch = batches.pop() if batches else 0
        assert acknowledged.batch <= batch <= acknowledged.batch + 1
        generations = sorted(a.generation for a in assignment.values())
        assert len(set(generations)) == len(generations)
        if generations:
            # Each batch takes the next block of the counter, in node order.
            assert store.last_generation() == generations[-1]
            assert generations == list(range(generations[-1] - len(NODES) + 1, generations[-1] + 1))
        assert store.last_generation() >= acknowledged.generation

        # Revisions: numbered 1..n without gaps, each whole, the current one the newest.
        current = {r.deployment: r for r in store.current()}
        for deployment in DEPLOYMENTS:
            history = store.revisions(deployment)
            numbers = [r.number for r in history]
            assert numbers == list(range(len(history), 0, -1))
            assert len(history) >= acknowledged.revisions.get(deployment, 0)
            for revision in history:
                assert revision.digest == hashlib.sha256(revision.manifest.encode()).hexdigest()
                assert f"batch: {json.loads(revision.desired_json)['batch']}\n" in (
                    revision.manifest
                )
            if history:
                assert current[deployment] == history[0]

        # Events: trimmed, ordered, never more than the limit.
        ids = [e.id for e in store.events()]
        assert len(ids) <= MAX_EVENTS
        assert ids == sorted(ids)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_store_killed_at_random_moments_reopens_consistent(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    path = tmp_path / "store.sqlite"
    acknowledged = Acknowledged()
    for kill in range(KILLS):
        output = run_and_kill(path, delay=rng.uniform(0.02, 0.3))
        acknowledged.read(output)
        try:
            check_consistent(path, acknowledged)
        except AssertionError as exc:
            raise AssertionError(f"after kill {kill + 1} (seed {seed}): {exc}") from exc
    # The writers made real progress, so the kills landed mid-stream.
    assert acknowledged.batch > KILLS
