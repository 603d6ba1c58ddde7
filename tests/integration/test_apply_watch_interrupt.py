"""Ctrl-C stops a real `edgectl apply --watch` process, whatever it is doing at that moment.

Each test starts edgectl as a shell without job control starts a background job:
with SIGINT ignored, which Python then leaves ignored unless the program installs
its own handler. The controller is the API test double, served in this process,
with an Apply that can be held in flight; a silent socket stands in for a
controller that accepts connections and never answers.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgefleet.v1 import controller_pb2
from tests.conftest import MANIFESTS
from tests.fakes.controller_api import FakeControllerApi
from tests.integration.node_process import environment
from tests.netlab import Proc
from tests.polling import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

EXIT_WITHIN_S = 15.0
"""A bound on waiting for the exit, far above what it takes (this is not a timing test)."""


class HeldApi(FakeControllerApi):
    """The API double whose Apply calls wait until `release` is set (once `hold` is)."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = threading.Event()
        self.release = threading.Event()
        self.held = threading.Event()
        """Set when an Apply call arrived and is being held."""

    def Apply(self, request: Any, context: Any) -> controller_pb2.ApplyResponse:
        if self.hold.is_set():
            self.held.set()
            self.release.wait(60)
        return super().Apply(request, context)


@pytest.fixture
def api() -> Iterator[HeldApi]:
    with HeldApi.serving() as fake:
        assert isinstance(fake, HeldApi)
        try:
            yield fake
        finally:
            fake.release.set()  # never leave a server thread waiting


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    target = tmp_path / "manifests"
    target.mkdir()
    shutil.copy(MANIFESTS / "quickstart.yaml", target / "quickstart.yaml")
    return target


def _ignore_sigint() -> None:
    """What a shell without job control does to a background job before exec."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture
def start_watch(folder: Path) -> Iterator[Any]:
    started: list[Proc] = []

    def start(controller: str) -> Proc:
        process = Proc(
            [
                sys.executable,
                "-m",
                "orchestrator.cli.main",
                "--controller",
                controller,
                "apply",
                "--watch",
                str(folder),
            ],
            label="edgectl apply --watch",
            env=environment({"COLUMNS": "200", "NO_COLOR": "1"}),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=_ignore_sigint,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill_group()
        process.reap()


def assert_stops_on_ctrl_c(process: Proc) -> None:
    """SIGINT ends it with exit 0 and a clean message (no traceback)."""
    process.send_signal(signal.SIGINT)
    try:
        code = process.wait(EXIT_WITHIN_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"still running {EXIT_WITHIN_S:g}s after SIGINT\n{process.tail()}"
        ) from None
    process.reap()
    assert code == 0, process.tail()
    output = "\n".join(process.lines)
    assert "stopped watching" in output, process.tail()
    assert "Traceback" not in output, process.tail()


def test_ctrl_c_while_watching_stops_it(api: HeldApi, start_watch: Any) -> None:
    process = start_watch(api.address)
    process.expect(r"watching .* for changes", 30)
    assert_stops_on_ctrl_c(process)


def test_ctrl_c_during_an_apply_in_flight_stops_it(api: HeldApi, start_watch: Any) -> None:
    api.hold.set()
    process = start_watch(api.address)
    wait_for("an Apply call held in flight", api.held.is_set, 30, process.tail)
    assert_stops_on_ctrl_c(process)


def test_ctrl_c_right_after_an_edit_stops_it(api: HeldApi, start_watch: Any, folder: Path) -> None:
    process = start_watch(api.address)
    process.expect(r"watching .* for changes", 30)
    # The edit's apply is held: the signal lands in the debounce wait or in that call.
    api.hold.set()
    manifest = folder / "quickstart.yaml"
    manifest.write_text(manifest.read_text().replace("concise, friendly", "brief, kind"))
    assert_stops_on_ctrl_c(process)


def test_ctrl_c_while_connecting_to_a_silent_controller_stops_it(start_watch: Any) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        host, port = silent.getsockname()[:2]
        process = start_watch(f"{host}:{port}")
        silent.settimeout(30)
        connection, _ = silent.accept()  # it is connecting now; nothing will answer
        with connection:
            assert_stops_on_ctrl_c(process)
