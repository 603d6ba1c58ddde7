"""`edgectl admin create|list|revoke` against the controller API test double."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefleet_common.pki import admin_name_of, load_cert, load_csr
from orchestrator.cli.client_config import load_client_config
from orchestrator.cli.main import main
from tests.fakes.controller_api import FakeControllerApi


@pytest.fixture
def api() -> Iterator[FakeControllerApi]:
    with FakeControllerApi.serving() as fake:
        yield fake


def edgectl(api: FakeControllerApi, *args: str) -> int:
    return main(["--controller", api.address, *args])


def test_create_writes_a_config_whose_key_was_made_here(
    api: FakeControllerApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.controller_addresses = ["10.0.0.1:7440", "0.0.0.0:7440"]
    path = tmp_path / "alice.yaml"
    assert edgectl(api, "admin", "create", "alice", "-o", str(path)) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"wrote {path}: admin alice, certificate ")
    assert f"use it with: edgectl --config {path} status" in out
    assert path.stat().st_mode & 0o777 == 0o600
    config = load_client_config(path)
    # The wildcard address is replaced by the host edgectl reached.
    assert config.controllers == ("10.0.0.1:7440", "127.0.0.1:7440")
    assert admin_name_of(load_cert(config.cert_pem)) == "alice"
    (request,) = api.requests("CreateAdmin")
    assert "PRIVATE KEY" not in request.csr_pem
    assert (
        load_csr(request.csr_pem.encode()).public_key() == load_cert(config.cert_pem).public_key()
    )


def test_create_lists_the_flagged_controllers_or_the_one_reached(
    api: FakeControllerApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert edgectl(api, "admin", "create", "bob") == 0
    assert load_client_config(tmp_path / "bob.edgefleet.yaml").controllers == (api.address,)
    flagged = ["admin", "create", "carol", "--controllers", "h1:7440, h2:7440"]
    assert edgectl(api, *flagged) == 0
    assert load_client_config(tmp_path / "carol.edgefleet.yaml").controllers == (
        "h1:7440",
        "h2:7440",
    )


def test_create_never_overwrites_a_file(
    api: FakeControllerApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "taken.yaml"
    path.write_text("mine\n")
    assert edgectl(api, "admin", "create", "dave", "-o", str(path)) == 2
    assert "exists; remove it or write elsewhere with -o FILE" in capsys.readouterr().err
    assert path.read_text() == "mine\n"
    assert api.requests("CreateAdmin") == []


def test_a_bad_name_is_refused_before_any_call(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "admin", "create", "Not_Valid") == 2
    assert "admin name 'Not_Valid' is not a DNS label" in capsys.readouterr().err
    assert api.requests("CreateAdmin") == []


def test_list_and_revoke(
    api: FakeControllerApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "admin", "create", "erin", "-o", str(tmp_path / "e.yaml")) == 0
    capsys.readouterr()
    assert edgectl(api, "admin", "revoke", "erin") == 0
    assert capsys.readouterr().out == "admin erin: 1 certificate(s) revoked\n"
    assert edgectl(api, "admin", "list") == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert re.split(r"\s{3,}", lines[0].strip()) == [
        "NAME",
        "SERIAL",
        "ISSUED",
        "EXPIRES",
        "REVOKED",
    ]
    cells = re.split(r"\s{3,}", lines[1].strip())
    assert cells[0] == "erin"
    assert cells[4] != "no"
    assert edgectl(api, "admin", "revoke", "nobody") == 1
    assert "no admin named nobody" in capsys.readouterr().err
