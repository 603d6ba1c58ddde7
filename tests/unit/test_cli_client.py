"""edgectl reaching the controller: where it looks, the unreachable path, error mapping."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
import pytest

from orchestrator.cli import client
from orchestrator.cli.client import ControllerRefused, error_text, resolve_address
from orchestrator.cli.main import main
from orchestrator.errors import UsageError
from orchestrator.manifest import Diagnostic, ManifestError
from tests.conftest import MANIFESTS, REPO
from tests.fakes.controller_api import FakeControllerApi


@pytest.fixture
def api() -> Iterator[FakeControllerApi]:
    with FakeControllerApi.serving() as fake:
        yield fake


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_the_flag_wins_over_the_environment_which_wins_over_the_default() -> None:
    env = {"EDGEFLEET_CONTROLLER": "10.0.0.5:7440"}
    assert resolve_address("box:7000", env).target == "box:7000"
    assert resolve_address("box:7000", env).origin == "from --controller"
    assert resolve_address(None, env).target == "10.0.0.5:7440"
    assert resolve_address(None, env).origin == "from EDGEFLEET_CONTROLLER"
    default = resolve_address(None, {})
    assert default.target == "127.0.0.1:7440"
    assert default.unreachable() == (
        "cannot reach the controller at 127.0.0.1:7440 (from the default; set --controller "
        "or EDGEFLEET_CONTROLLER, or start one with `edgectl controller`)"
    )


@pytest.mark.parametrize("target", ["[::1]:7440", "controller.local:7440", "10.1.2.3:1"])
def test_host_port_forms_are_accepted(target: str) -> None:
    assert resolve_address(target, {}).target == target


@pytest.mark.parametrize("target", ["nohost", "box:", "box:99999", "http://box:7440"])
def test_a_malformed_address_is_a_usage_error(target: str) -> None:
    with pytest.raises(UsageError, match="is not HOST:PORT"):
        resolve_address(target, {})


def test_a_malformed_address_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--controller", "nohost", "get", "nodes"]) == 2
    assert "is not HOST:PORT" in capsys.readouterr().err


def test_unreachable_controller_is_one_line_on_stderr_and_exit_3(closed_port: int) -> None:
    # A real process: the C core's own logging would land on stderr too.
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli.main", "get", "nodes"],
        env={**os.environ, "EDGEFLEET_CONTROLLER": f"127.0.0.1:{closed_port}"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: cannot reach the controller at 127.0.0.1:{closed_port} (from "
        "EDGEFLEET_CONTROLLER; set --controller or EDGEFLEET_CONTROLLER, or start one with "
        "`edgectl controller`)"
    ]
    # A refused connection is final: no waiting out the connect deadline.
    assert time.monotonic() - started < client.CONNECT_TIMEOUT_S


def test_a_silent_listener_times_out_as_unreachable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(client, "CONNECT_TIMEOUT_S", 0.5)
    with socket.socket() as silent:  # accepts TCP, never speaks HTTP/2
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        assert main(["status", "--controller", address]) == 3
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach the controller at {address} (from --controller;")
    assert len(err.splitlines()) == 1


def test_controller_option_is_accepted_after_the_command(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["get", "nodes", "--controller", api.address]) == 0
    assert "edge-1" in capsys.readouterr().out


def test_the_environment_names_the_controller(
    api: FakeControllerApi, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EDGEFLEET_CONTROLLER", api.address)
    assert main(["get", "models"]) == 0
    assert "phi-4-mini" in capsys.readouterr().out


def test_not_found_exits_1_with_the_controllers_message(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--controller", api.address, "delete", "nope"]) == 1
    assert capsys.readouterr().err == "error: no deployment named nope; known: none\n"


def test_failed_precondition_exits_1(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    quickstart = str(MANIFESTS / "quickstart.yaml")
    assert main(["--controller", api.address, "apply", "-f", quickstart]) == 0
    assert main(["--controller", api.address, "rollback", "quickstart"]) == 1
    err = capsys.readouterr().err
    assert err == "error: deployment quickstart has no revision before 1\n"


def test_a_controller_whose_store_is_read_only_is_a_refusal_not_a_lost_controller(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    read_only = (
        "the etcd cluster at 10.0.0.1:2379 does not answer (quorum lost?): the control "
        "plane is read-only until it is back"
    )
    api.refuse["Apply"] = (grpc.StatusCode.UNAVAILABLE, read_only)
    quickstart = str(MANIFESTS / "quickstart.yaml")
    assert main(["--controller", api.address, "apply", "-f", quickstart]) == 1
    assert capsys.readouterr().err == f"error: {read_only}\n"


def test_located_diagnostics_print_as_they_are() -> None:
    diagnostic = Diagnostic("a.yaml", 3, 5, "deployment.type", "bad", hint="use x")
    assert error_text(ManifestError([diagnostic])) == diagnostic.render()
    remote = ControllerRefused(diagnostic.render(), "INVALID_ARGUMENT")
    assert error_text(remote) == diagnostic.render()
    assert error_text(ControllerRefused("revision 9 does not exist", "NOT_FOUND")) == (
        "error: revision 9 does not exist"
    )
