"""The edgectl config file: it round-trips, and every problem names FILE:LINE."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet_common.pki import admin_csr, key_pem, load_csr, new_key
from orchestrator.cli.client_config import (
    ClientConfig,
    ConfigError,
    load_client_config,
    parse_client_config,
)
from orchestrator.cli.main import main
from tests import cluster_pki


def made_config(controllers: tuple[str, ...] = ("10.0.0.1:7440", "10.0.0.2:7440")) -> ClientConfig:
    key = new_key()
    issued = cluster_pki.test_ca().issue_admin(load_csr(admin_csr(key, "alice")), "alice")
    return ClientConfig(
        cluster="default",
        controllers=controllers,
        ca_pem=cluster_pki.test_ca().cert_pem,
        cert_pem=issued.pem,
        key_pem=key_pem(key),
    )


def test_a_written_config_reads_back_the_same(tmp_path: Path) -> None:
    config = made_config()
    path = tmp_path / "alice.edgefleet.yaml"
    config.write(path, "for alice\nkeep it private")
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    assert text.startswith('# for alice\n# keep it private\ncluster: "default"\n')
    loaded = load_client_config(path)
    assert loaded.controllers == config.controllers
    assert loaded.cluster == "default"
    assert loaded.key_pem.strip() == config.key_pem.strip()
    assert loaded.cert_pem.strip() == config.cert_pem.strip()
    assert loaded.source == str(path)


def replaced(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


def test_bad_yaml_names_the_line() -> None:
    text = made_config().render()
    broken = replaced(text, "controllers:\n", "controllers: [\n")
    with pytest.raises(ConfigError, match=r"^c\.yaml:\d+: not valid YAML: "):
        parse_client_config(broken, "c.yaml")


def test_a_missing_field_is_named_with_what_it_holds() -> None:
    text = made_config().render()
    without = "\n".join(line for line in text.splitlines() if not line.startswith("cluster:"))
    with pytest.raises(ConfigError) as caught:
        parse_client_config(without, "c.yaml")
    assert str(caught.value) == "c.yaml:1: missing `cluster` (the cluster's name)"


def test_an_unknown_field_names_its_line() -> None:
    text = made_config().render() + "colour: blue\n"
    line = text.splitlines().index("colour: blue") + 1
    with pytest.raises(ConfigError, match=rf"^c\.yaml:{line}: unknown field 'colour'; the fields"):
        parse_client_config(text, "c.yaml")


def test_a_bad_controller_address_names_its_line() -> None:
    text = replaced(made_config().render(), '  - "10.0.0.2:7440"', "  - nohost")
    with pytest.raises(ConfigError) as caught:
        parse_client_config(text, "c.yaml")
    assert str(caught.value) == (
        "c.yaml:4: controller address 'nohost' is not HOST:PORT, e.g. 10.0.0.1:7440"
    )


def test_no_controllers_is_an_error() -> None:
    text = replaced(made_config().render(), "controllers:\n", "controllers: []\n")
    text = "\n".join(line for line in text.splitlines() if not line.startswith("  - "))
    with pytest.raises(ConfigError, match=r"^c\.yaml:2: `controllers` must list at least one"):
        parse_client_config(text, "c.yaml")


def test_pem_that_is_not_a_certificate_names_the_field_line() -> None:
    text = made_config().render()
    lines = text.splitlines()
    ca_line = lines.index("ca: |") + 1
    spoiled = replaced(text, lines[ca_line + 1], "  garbage")
    with pytest.raises(ConfigError, match=rf"^c\.yaml:{ca_line}: `ca`: not a certificate"):
        parse_client_config(spoiled, "c.yaml")


def test_a_key_of_another_certificate_is_refused() -> None:
    config = made_config()
    other = ClientConfig(
        config.cluster, config.controllers, config.ca_pem, config.cert_pem, key_pem(new_key())
    )
    with pytest.raises(ConfigError, match="`key` does not belong to `certificate`"):
        parse_client_config(other.render(), "c.yaml")


def test_a_config_that_is_not_a_mapping_says_what_it_should_be() -> None:
    with pytest.raises(ConfigError, match=r"^c\.yaml:1: an edgectl config is a mapping"):
        parse_client_config("- a\n- b\n", "c.yaml")


def test_edgectl_reports_a_bad_config_as_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("cluster: x\n")
    assert main(["--config", str(path), "status"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}:1: missing `controllers`")


def test_the_environment_names_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEFLEET_CONFIG", str(tmp_path / "absent.yaml"))
    assert main(["status"]) == 2
    assert "cannot read the edgectl config" in capsys.readouterr().err
