"""Models reach the nodes: downloads from an origin in its own namespace, resumed after a
cut, verified by hash, kept within a disk budget, and shared between nodes.

Each test builds its own lab (`tests.e2e.model_lab`): the origin host serving the
SmolLM2 GGUF, fresh edge-nodes with empty blob stores, and a controller. The origin's
access log is the witness for what crossed its link.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.control_plane import wait_key_in_force
from tests.e2e.model_lab import (
    RESUME_SLACK,
    ModelDef,
    ModelFleet,
    OriginFiles,
    Sampler,
    manifest,
    model_fleet,
    start_origin,
)
from tests.integration.test_node_daemon import require_model
from tests.netlab import Lab, lab_available

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.model]

ALIAS = "smollm2"
SECOND = "smollm2-padded"
ALL = ("n1", "n2", "n3")
SLOW_LINK_BITS = 16_000_000
"""A link slow enough (2 MB/s) that a 98 MB download leaves time to break it."""
FASTER_LINK_BITS = 64_000_000
"""After the break: the rest in about 11 s, still sampled on its way."""


def build(tmp: Path, nodes: tuple[str, ...] = ALL) -> Iterator[ModelFleet]:
    reason = lab_available()
    if reason is not None:
        pytest.skip(reason)
    require_model()
    with Lab() as lab, model_fleet(lab, tmp, nodes=nodes) as fleet:
        yield fleet


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[ModelFleet]:
    """The origin and three nodes of one site."""
    yield from build(tmp_path)


@pytest.fixture
def one_node(tmp_path: Path) -> Iterator[ModelFleet]:
    """The origin and node n1."""
    yield from build(tmp_path, ("n1",))


def test_the_origin_host_serves_ranges_and_logs_each_request(lab: Lab, tmp_path: Path) -> None:
    origin = start_origin(lab, tmp_path / "files")
    blob = origin.files.smollm2
    offset = blob.size - 1000
    with httpx.Client(timeout=30) as client:
        whole = client.get(origin.url(blob))
        tail = client.get(origin.url(blob), headers={"Range": f"bytes={offset}-"})
        origin.control(corrupt=True)
        corrupt = client.get(origin.url(origin.files.second))
    assert hashlib.sha256(whole.content).hexdigest() == blob.sha256
    assert tail.status_code == 206
    assert tail.content == whole.content[offset:]
    second = origin.files.second
    assert hashlib.sha256(corrupt.content).hexdigest() == OriginFiles.corrupted_sha256(second)
    assert second.sha256 != OriginFiles.corrupted_sha256(second)
    assert [(g.start, g.bytes_sent) for g in origin.gets(blob)] == [(0, blob.size), (offset, 1000)]
    assert origin.bytes_served(blob) == blob.size + 1000
    assert origin.bytes_served(second) == second.size


@pytest.mark.timeout(420)
@pytest.mark.parametrize("layout", ["url", "hf"])
def test_three_nodes_cost_one_origin_download_and_all_answer(
    fleet: ModelFleet, layout: str
) -> None:
    files = fleet.origin.files
    blob = files.smollm2 if layout == "url" else files.hf_smollm2
    source = fleet.origin.url(blob) if layout == "url" else fleet.origin.hf_source(blob)
    placement = {n: [ALIAS] for n in ALL}
    fleet.apply(manifest([ModelDef(ALIAS, source)], placement, fleet.sites), wait=True)
    fleet.wait_state(ALL, ALIAS, "ready", 60)

    gets = fleet.origin.gets(blob)
    served = sum(g.bytes_sent for g in gets)
    print(f"\n{layout}: {len(gets)} GET requests, {served} bytes from the origin")
    assert served == blob.size, (
        f"the origin served {served} bytes of a {blob.size}-byte file to three nodes of one "
        f"site (want exactly one copy)\n{fleet.explain()}"
    )
    for name in ALL:
        status = fleet.model(name, ALIAS)
        assert status is not None, fleet.explain()
        assert status.sha256 == blob.sha256, fleet.explain()
        assert blob.sha256 in fleet.complete_blobs(name), fleet.explain()
    key = fleet.api_key("model delivery")
    wait_key_in_force(fleet, key, ALL)
    for name in ALL:
        assert fleet.ask(name, ALIAS, key), f"{name} gave an empty answer"


@pytest.mark.timeout(420)
def test_a_cut_origin_link_resumes_the_download_where_it_stopped(one_node: ModelFleet) -> None:
    fleet = one_node
    blob = fleet.origin.files.smollm2
    origin = fleet.origin.host
    origin.bandwidth(SLOW_LINK_BITS)
    fleet.apply(manifest([ModelDef(ALIAS, fleet.origin.url(blob))], {"n1": [ALIAS]}, fleet.sites))
    before = fleet.wait_download(
        "n1", ALIAS, lambda p: p.bytes_done >= blob.size // 4, "a quarter downloaded", 120
    )
    origin.link_down()
    try:
        # The node gives the silent connection up after its read timeout, then asks again.
        fleet.nodes["n1"].process.expect(r"blob source failed", 90)
    finally:
        origin.link_up()
    origin.clear_bandwidth()
    fleet.wait_state(["n1"], ALIAS, "ready", 180)

    gets = fleet.origin.gets(blob)
    log = fleet.origin.describe()
    assert len(gets) == 2, f"want the first request and one resumed request\n{log}"
    first, resumed = gets
    assert first.start == 0, log
    assert resumed.start > 0, log
    assert resumed.status == 206, log
    assert resumed.start >= before.bytes_done, (
        f"resumed from {resumed.start}, before the {before.bytes_done} bytes the node had "
        f"reported done\n{log}"
    )
    assert first.bytes_sent >= resumed.start, f"resumed past what was served\n{log}"
    assert resumed.bytes_sent == blob.size - resumed.start, log
    total = first.bytes_sent + resumed.bytes_sent
    print(f"\nresumed at {resumed.start}; origin sent {total - blob.size} bytes beyond the file")
    assert total <= blob.size + RESUME_SLACK, (
        f"the origin served {total} bytes for a {blob.size}-byte file (more than what a cut "
        f"link can swallow, {RESUME_SLACK})\n{log}"
    )
    assert fleet.model("n1", ALIAS).sha256 == blob.sha256  # type: ignore[union-attr]


@pytest.mark.timeout(300)
def test_a_corrupted_file_is_refused_naming_both_hashes(one_node: ModelFleet) -> None:
    fleet = one_node
    blob = fleet.origin.files.smollm2
    actual = fleet.origin.files.corrupted_sha256(blob)
    fleet.origin.control(corrupt=True)
    pinned = ModelDef(ALIAS, fleet.origin.url(blob), sha256=blob.sha256)
    fleet.apply(manifest([pinned], {"n1": [ALIAS]}, fleet.sites))
    status = fleet.wait_state(["n1"], ALIAS, "failed", 120)["n1"]
    print(f"\nfailed: {status.reason}")
    for role, digest in (("expected", blob.sha256), ("actual", actual)):
        assert digest in status.reason, (
            f"the reason names no {role} hash {digest}: {status.reason!r}"
        )
    assert fleet.origin.bytes_served(blob) >= blob.size, "the file was never downloaded"
    assert fleet.nodes["n1"].runtime_servers() == [], "a model server runs a refused file"
    assert not fleet.complete_blobs("n1"), f"a blob was kept\n{fleet.explain()}"
    kept = [p for p in fleet.blob_files("n1") for h in (blob.sha256, actual) if p == f"sha256/{h}"]
    assert not kept, f"the refused download was kept as a blob: {kept}"


@pytest.mark.timeout(480)
def test_a_disk_budget_removes_the_unused_blob_never_the_one_in_use(
    one_node: ModelFleet,
) -> None:
    fleet = one_node
    files = fleet.origin.files
    first, second = files.smollm2, files.second
    budget = max(first.size, second.size) + (min(first.size, second.size) // 2)
    assert budget < first.size + second.size
    resources = {"max_disk_usage": f"{budget}B"}
    model_a = ModelDef(ALIAS, fleet.origin.url(first))
    model_b = ModelDef(SECOND, fleet.origin.url(second))

    fleet.apply(manifest([model_a], {"n1": [ALIAS]}, fleet.sites, resources), wait=True)
    fleet.wait_state(["n1"], ALIAS, "ready", 60)

    # Both wanted: the second does not fit beside the first, which is in use.
    fleet.apply(manifest([model_a, model_b], {"n1": [ALIAS, SECOND]}, fleet.sites, resources))
    reason = fleet.wait_state(["n1"], SECOND, "failed", 180)["n1"].reason
    print(f"\nno room: {reason}")
    assert fleet.state("n1", ALIAS) == "ready", fleet.explain()
    assert first.sha256 in fleet.complete_blobs("n1"), f"a blob in use went\n{fleet.explain()}"
    key = fleet.api_key("budget")
    wait_key_in_force(fleet, key, ("n1",))
    assert fleet.ask("n1", ALIAS, key), "the model in use stopped answering"

    # Only the second wanted: the first is unused now and makes room.
    fleet.apply(manifest([model_b], {"n1": [SECOND]}, fleet.sites, resources))
    fleet.wait_state(["n1"], SECOND, "ready", 240)
    held = fleet.complete_blobs("n1")
    assert second.sha256 in held, fleet.explain()
    assert first.sha256 not in held, f"the unused blob was kept\n{fleet.explain()}"
    on_disk = fleet.blob_files("n1")
    assert not [p for p in on_disk if first.sha256 in p], f"the unused blob is on disk: {on_disk}"
    assert sum(on_disk.values()) <= budget, f"over the {budget}-byte budget: {on_disk}"
    assert fleet.ask("n1", SECOND, key), "the second model gave an empty answer"


@pytest.mark.timeout(480)
def test_a_killed_peer_is_replaced_and_the_download_continues(fleet: ModelFleet) -> None:
    blob = fleet.origin.files.smollm2
    model = ModelDef(ALIAS, fleet.origin.url(blob))
    holders = ["n1", "n3"]
    fleet.apply(manifest([model], {n: [ALIAS] for n in holders}, fleet.sites), wait=True)
    fleet.wait_state(holders, ALIAS, "ready", 60)
    gets_before = len(fleet.origin.gets(blob))
    for name in holders:
        fleet.hosts[name].bandwidth(SLOW_LINK_BITS)

    with Sampler(fleet, "n2", ALIAS) as sampler:
        fleet.apply(manifest([model], {n: [ALIAS] for n in ALL}, fleet.sites))
        at_kill = fleet.wait_download(
            "n2",
            ALIAS,
            lambda p: p.source.startswith("peer ") and p.bytes_done >= blob.size // 10,
            "a tenth fetched from a peer",
            120,
        )
        victim = at_kill.source.removeprefix("peer ")
        assert victim in holders, f"n2 fetches from {at_kill.source!r}, not a holder"
        fleet.kill(victim)
        mark = len(sampler.samples)
        for name in holders:  # the rest comes faster (yet slowly enough to be seen coming)
            if name != victim:
                fleet.hosts[name].bandwidth(FASTER_LINK_BITS)
        fleet.wait_state(["n2"], ALIAS, "ready", 240)
    for name in holders:
        fleet.hosts[name].clear_bandwidth()

    after = sampler.samples[mark:]
    new_gets = fleet.origin.gets(blob)[gets_before:]
    print(
        f"\nn2 fetched from {victim} ({at_kill.bytes_done} bytes seen), killed it; then "
        f"{after[:4]}; origin requests since: {new_gets}"
    )
    went_back = [s for s in after if s[1] < at_kill.bytes_done]
    assert not went_back, f"the download started over after the kill: {went_back}"
    others = {source for source, _ in after} - {at_kill.source}
    assert others or new_gets, f"no other source seen after the kill: {sampler.samples}"
    from_zero = [g for g in new_gets if g.start == 0]
    assert not from_zero, f"the origin was asked for the whole file again\n{fleet.explain()}"
    assert fleet.model("n2", ALIAS).sha256 == blob.sha256  # type: ignore[union-attr]
