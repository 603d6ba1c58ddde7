"""Admin client certificates: what the CA puts in them, what the store records, which
names are refused, and the guard that admits callers of the controller API."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from edgefleet_common.pki import (
    CONTROLLER_SERVER_NAME,
    PkiError,
    admin_csr,
    admin_name_of,
    load_cert,
    load_csr,
    new_key,
    node_csr,
    uris,
)
from orchestrator.api_auth import (
    HOW_TO_ADMIT,
    AdminGuard,
    Caller,
    caller_of,
    reachable_address,
    write_local_admin_config,
)
from orchestrator.api_errors import classify
from orchestrator.cli.client_config import load_client_config
from orchestrator.store import SqliteStore, StoreError
from orchestrator.trust.admin_certs import AdminCerts, local_admin_name
from orchestrator.trust.ca import ClusterCa
from orchestrator.trust.cluster_trust import ClusterTrust
from tests import cluster_pki
from tests.cluster_pki import controller_identity


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore.open(tmp_path / "controller.db")
    yield opened
    opened.close()


def request_for(name: str) -> x509.CertificateSigningRequest:
    return load_csr(admin_csr(new_key(), name))


def test_an_admin_certificate_names_the_admin_for_client_use_only() -> None:
    key = new_key()
    issued = cluster_pki.test_ca().issue_admin(load_csr(admin_csr(key, "alice")), "alice")
    cert = load_cert(issued.pem)
    assert uris(cert) == ["edgefleet://admin/alice"]
    assert admin_name_of(cert) == "alice"
    usages = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert usages == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.public_key() == key.public_key()
    assert issued.node_id == "admin/alice"
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(days=365) <= life <= timedelta(days=365, minutes=10)
    assert cluster_pki.test_ca().issued_by_me(cert)


def test_the_lifetime_is_an_option_within_bounds() -> None:
    issued = cluster_pki.test_ca().issue_admin(request_for("bob"), "bob", timedelta(days=7))
    cert = load_cert(issued.pem)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= timedelta(days=7, minutes=5)
    with pytest.raises(PkiError, match="1 to 3650 days"):
        cluster_pki.test_ca().issue_admin(request_for("bob"), "bob", timedelta(days=4000))


@pytest.mark.parametrize("name", ["", "Alice", "a.b", "-x", "x-", "a" * 64, "ad min", "é"])
def test_a_bad_admin_name_is_refused_with_the_rule(name: str) -> None:
    with pytest.raises(PkiError, match=r"is not a DNS label: use 1-63 characters a-z, 0-9"):
        cluster_pki.test_ca().issue_admin(request_for("ok"), name)
    with pytest.raises(PkiError, match="is not a DNS label"):
        admin_csr(new_key(), name)


def test_the_api_server_certificate_carries_the_name_edgectl_checks() -> None:
    made = cluster_pki.test_ca().api_server_credentials(["10.0.0.5", "box.lan"], timedelta(days=1))
    names = made.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert CONTROLLER_SERVER_NAME in names.get_values_for_type(x509.DNSName)
    assert "box.lan" in names.get_values_for_type(x509.DNSName)
    usages = list(made.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert usages == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_issued_certificates_are_recorded_revoked_and_listed(store: SqliteStore) -> None:
    admins = AdminCerts(cluster_pki.test_ca(), store)
    first = admins.issue("alice", admin_csr(new_key(), "alice"))
    second = admins.issue("alice", admin_csr(new_key(), "alice"))
    other = admins.issue("bob", admin_csr(new_key(), "bob"))
    assert [r.owner for r in admins.rows()] == ["admin/alice", "admin/alice", "admin/bob"]
    assert admins.known("alice")
    assert not admins.known("carol")
    assert admins.revoke("alice") == 2
    assert admins.revoke("alice") == 0
    assert store.certificate_revoked(first.serial) is True
    assert store.certificate_revoked(second.serial) is True
    assert store.certificate_revoked(other.serial) is False


def test_a_request_that_is_not_one_is_refused(store: SqliteStore) -> None:
    admins = AdminCerts(cluster_pki.test_ca(), store)
    with pytest.raises(PkiError, match="not a certificate signing request"):
        admins.issue("alice", b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n")
    assert admins.rows() == []


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def guard_for(store: SqliteStore, tmp_path: Path, clock: Clock) -> AdminGuard:
    trust = ClusterTrust.__new__(ClusterTrust)  # only `store` is read by the guard
    trust.store = store
    return AdminGuard(trust, recheck_s=1.0, clock=clock)


def test_the_guard_admits_admins_and_controllers_only(store: SqliteStore, tmp_path: Path) -> None:
    clock = Clock()
    guard = guard_for(store, tmp_path, clock)
    issued = AdminCerts(cluster_pki.test_ca(), store).issue("alice", admin_csr(new_key(), "alice"))
    assert guard.refusal(caller_of([issued.pem])) is None
    assert guard.refusal(caller_of([controller_identity().cert_pem])) is None
    code, message = guard.refusal(None) or (None, "")
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert message == f"no client certificate: {HOW_TO_ADMIT}"
    node = cluster_pki.test_ca().issue_node(
        load_csr(node_csr(new_key(), "edge-1")), "edge-1", timedelta(1)
    )
    code, message = guard.refusal(caller_of([node.pem])) or (None, "")
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert message.startswith("node `edge-1` may not drive the controller API")
    assert "edgectl --config DATA_DIR/admin.conf admin create NAME" in message


def test_a_revocation_is_seen_once_the_recheck_interval_passed(
    store: SqliteStore, tmp_path: Path
) -> None:
    clock = Clock()
    guard = guard_for(store, tmp_path, clock)
    issued = AdminCerts(cluster_pki.test_ca(), store).issue("alice", admin_csr(new_key(), "alice"))
    caller = caller_of([issued.pem])
    assert guard.refusal(caller) is None
    store.revoke_certificates("admin/alice")
    clock.now += 0.5
    assert guard.refusal(caller) is None  # the answer is kept up to a second
    clock.now += 0.6
    code, message = guard.refusal(caller) or (None, "")
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert f"admin certificate of alice (serial {issued.serial:x}) is revoked" in message


def test_an_admin_certificate_the_store_never_recorded_is_refused(
    store: SqliteStore, tmp_path: Path
) -> None:
    guard = guard_for(store, tmp_path, Clock())
    issued = cluster_pki.test_ca().issue_admin(request_for("mallory"), "mallory")
    code, message = guard.refusal(Caller("admin", "mallory", issued.serial)) or (None, "")
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "was not issued by this cluster's controllers" in message


def test_store_errors_answer_unavailable_with_the_stores_message() -> None:
    message = "the etcd cluster at h1:2379 does not answer (quorum lost?)"
    assert classify(StoreError(message)) == (grpc.StatusCode.UNAVAILABLE, message)
    assert classify(ValueError("boom")) is None


def test_the_local_admin_config_is_made_once_0600_and_usable(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "pki").mkdir(parents=True)
    ClusterCa.load_or_create(data / "pki", "default")
    with SqliteStore.open(data / "controller.db") as store:
        trust = ClusterTrust(data, store)
        path = write_local_admin_config(trust, "0.0.0.0:7440")
        assert path == data / "admin.conf"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        config = load_client_config(path)
        assert config.controllers == ("127.0.0.1:7440",)
        assert config.ca_pem.strip() == trust.ca.cert_pem.strip()
        name = local_admin_name(store.controller_id)
        assert admin_name_of(load_cert(config.cert_pem)) == name
        assert [r.owner for r in store.certificates("admin/")] == [f"admin/{name}"]
        before = path.read_bytes()
        write_local_admin_config(trust, "0.0.0.0:7440")
        assert path.read_bytes() == before
        assert len(store.certificates("admin/")) == 1


def test_a_wildcard_address_is_reached_on_loopback() -> None:
    assert reachable_address("0.0.0.0:7440") == "127.0.0.1:7440"
    assert reachable_address("[::]:7440") == "127.0.0.1:7440"
    assert reachable_address("10.0.0.5:7440") == "10.0.0.5:7440"
