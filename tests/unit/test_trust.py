"""Cluster trust, in process: join tokens, the token book, the CA, and the join service over
real gRPC with TLS on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from edgefleet.v1 import trust_pb2, trust_pb2_grpc
from edgefleet_common.join_token import JoinToken, TokenFormatError, split_credential
from edgefleet_common.pki import (
    JOIN_SERVER_NAME,
    Credentials,
    PkiError,
    fingerprint,
    is_controller,
    key_pem,
    load_csr,
    new_key,
    node_csr,
    node_id_of,
)
from edgefleet_common.ports import free_port
from node_agent import node_trust
from orchestrator.events import EventLog
from orchestrator.store import SqliteStore
from orchestrator.trust.ca import ClusterCa
from orchestrator.trust.cluster_trust import ClusterTrust
from orchestrator.trust.credential_book import CredentialBook, CredentialRejected


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore.open(tmp_path / "controller.db") as opened:
        yield opened


# -- tokens ---------------------------------------------------------------------------------


def test_a_token_round_trips_and_bad_ones_say_what_is_wrong_without_echoing() -> None:
    token = JoinToken.new("ab" * 32)
    assert JoinToken.parse(f"  {token}\n") == token
    assert split_credential(token.credential) == (token.token_id, token.secret)
    for bad in ("", "K10abc::x", f"EF1{'ab' * 32}::nothex.{'0' * 48}", str(token)[:-1]):
        with pytest.raises(TokenFormatError) as refused:
            JoinToken.parse(bad)
        assert token.secret not in str(refused.value)


def test_the_book_keeps_digests_checks_expiry_and_revocation(store: SqliteStore) -> None:
    clock = Clock()
    book = CredentialBook(store, "cd" * 32, clock=clock)
    row, shown = book.create("join-token", "for the kiosk", ttl_s=60)
    token = JoinToken.parse(shown)
    assert token.secret not in row.secret_sha256
    assert book.check_join(token.credential).id == row.id
    with pytest.raises(CredentialRejected, match="unknown"):
        book.check_join(f"{token.token_id}.{'0' * 48}")
    clock.now += 61
    with pytest.raises(CredentialRejected, match="expired"):
        book.check_join(token.credential)

    _, key = book.create("api-key")
    assert book.check_api_key(key).kind == "api-key"
    with pytest.raises(CredentialRejected):
        book.check_join(key)  # an API key is not a join token
    assert book.revoke("api-key", key.split("_")[1])
    assert not book.revoke("api-key", key.split("_")[1])
    with pytest.raises(CredentialRejected, match="revoked"):
        book.check_api_key(key)
    assert [r.last_used_at is not None for r in book.list("api-key")] == [True]


# -- the CA -----------------------------------------------------------------------------------


def test_the_ca_is_made_once_and_binds_node_certificates_to_their_ids(tmp_path: Path) -> None:
    ca = ClusterCa.load_or_create(tmp_path / "pki", "shop")
    again = ClusterCa.load_or_create(tmp_path / "pki", "shop")
    assert again.fingerprint == ca.fingerprint == fingerprint(ca.cert)
    assert oct((tmp_path / "pki" / "ca.key").stat().st_mode & 0o777) == "0o600"
    key = new_key()
    issued = ca.issue_node(load_csr(node_csr(key, "kiosk-1")), "kiosk-1", timedelta(hours=1))
    cert = Credentials(key_pem(key), issued.pem, ca.cert_pem).cert
    assert node_id_of(cert) == "kiosk-1"
    # Its only DNS name is under the reserved .invalid domain: it cannot pass for a real
    # host, nor for the join endpoint.
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["kiosk-1.node.edgefleet.invalid"]
    assert ca.issued_by_me(cert)
    assert not ClusterCa.load_or_create(tmp_path / "other", "x").issued_by_me(cert)
    assert is_controller(ca.controller_credentials(tmp_path / "pki").cert)
    with pytest.raises(PkiError):
        ca.issue_node(load_csr(node_csr(key, "kiosk-1")), "Not A Label", timedelta(hours=1))
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "ca.crt").write_bytes(ca.cert_pem)
    with pytest.raises(PkiError, match="half a CA"):
        ClusterCa.load_or_create(tmp_path / "half", "shop")


# -- the join service over gRPC and TLS -------------------------------------------------------


class JoinEndpoint:
    """A join endpoint on loopback, driven from a worker thread like a node would."""

    def __init__(self, tmp_path: Path, store: SqliteStore, lifetime: timedelta) -> None:
        self.trust = ClusterTrust(tmp_path / "ctl", store, node_cert_lifetime=lifetime)
        self.token = JoinToken.parse(self.trust.ensure_token_file().read_text())
        self.tmp_path = tmp_path
        self.store = store

    async def run(self, scenario: object) -> None:
        server, port = await self.trust.serve_join("127.0.0.1:0", EventLog(self.store), print)
        self.address = f"127.0.0.1:{port}"
        try:
            await asyncio.to_thread(scenario)  # type: ignore[arg-type]
        finally:
            await server.stop(0)


def _renew_call(address: str, ca_pem: bytes, request: trust_pb2.RenewRequest) -> grpc.StatusCode:
    options = [("grpc.ssl_target_name_override", JOIN_SERVER_NAME)]
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    with grpc.secure_channel(address, credentials, options=options) as channel:
        try:
            trust_pb2_grpc.JoinServiceStub(channel).Renew(request, timeout=10)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_join_renew_and_every_refusal_over_tls(tmp_path: Path, store: SqliteStore) -> None:
    endpoint = JoinEndpoint(tmp_path, store, timedelta(hours=1))

    def scenario() -> None:
        address = endpoint.address
        joined = node_trust.join("edge-1", endpoint.token, [address], tmp_path / "node")
        assert node_id_of(joined.cert) == "edge-1"
        assert node_trust.load_credentials(tmp_path / "node", "edge-1") == joined
        renewed = node_trust.renew("edge-1", joined, tmp_path / "node")
        assert renewed.cert.serial_number != joined.cert.serial_number

        wrong_secret = JoinToken(endpoint.token.ca_fingerprint, endpoint.token.token_id, "1" * 48)
        with pytest.raises(node_trust.JoinError, match="unknown join token"):
            node_trust.join("edge-2", wrong_secret, [address], tmp_path / "n2")
        other_ca = JoinToken("0" * 64, endpoint.token.token_id, endpoint.token.secret)
        with pytest.raises(node_trust.JoinError, match="nothing was sent"):
            node_trust.join("edge-3", other_ca, [address], tmp_path / "n3")

        # A renewal signed by another key than the certificate's is refused.
        stranger = new_key()
        csr = node_csr(new_key(), "edge-1")
        forged = trust_pb2.RenewRequest(
            certificate_pem=renewed.cert_pem,
            csr_pem=csr,
            signature=stranger.sign(csr, ec.ECDSA(hashes.SHA256())),
        )
        ca_pem = renewed.ca_pem
        assert _renew_call(address, ca_pem, forged) == grpc.StatusCode.UNAUTHENTICATED
        assert _renew_call(address, ca_pem, trust_pb2.RenewRequest()) == (
            grpc.StatusCode.INVALID_ARGUMENT
        )

        # Nobody takes over the id of a node that holds a valid certificate.
        with pytest.raises(node_trust.JoinError, match="already holds a valid certificate"):
            node_trust.join("edge-1", endpoint.token, [address], tmp_path / "thief")

        store.revoke_node("edge-1", "box stolen")
        with pytest.raises(node_trust.JoinError, match="was revoked"):
            node_trust.renew("edge-1", renewed, tmp_path / "node")
        # A revoked id stays revoked, even for a holder of a valid token.
        with pytest.raises(node_trust.JoinError, match="stays revoked"):
            node_trust.join("edge-1", endpoint.token, [address], tmp_path / "node")

    asyncio.run(endpoint.run(scenario))


def test_a_node_joins_and_renews_through_whichever_controller_answers(
    tmp_path: Path, store: SqliteStore
) -> None:
    endpoint = JoinEndpoint(tmp_path, store, timedelta(hours=1))
    dead = f"127.0.0.1:{free_port()}"

    def scenario() -> None:
        live = endpoint.address
        joined = node_trust.join("edge-1", endpoint.token, [dead, live], tmp_path / "node")
        assert node_id_of(joined.cert) == "edge-1"
        # The one that answered is tried first next time; the others are kept.
        assert node_trust.saved_join_addresses(tmp_path / "node") == [live, dead]
        renewed = node_trust.renew("edge-1", joined, tmp_path / "node")
        assert renewed.cert.serial_number != joined.cert.serial_number
        with pytest.raises(node_trust.JoinError) as refused:
            node_trust.join(
                "edge-2", endpoint.token, [dead, f"127.0.0.1:{free_port()}"], tmp_path / "n2"
            )
        assert dead in str(refused.value)

    asyncio.run(endpoint.run(scenario))


def test_an_old_single_address_file_still_renews(tmp_path: Path, store: SqliteStore) -> None:
    endpoint = JoinEndpoint(tmp_path, store, timedelta(hours=1))

    def scenario() -> None:
        joined = node_trust.join("edge-1", endpoint.token, [endpoint.address], tmp_path / "node")
        saved = node_trust.pki_dir(tmp_path / "node") / "controller-address"
        saved.write_text(endpoint.address)  # as written before a node knew several
        assert node_trust.saved_join_addresses(tmp_path / "node") == [endpoint.address]
        assert node_trust.renew("edge-1", joined, tmp_path / "node").cert is not None

    asyncio.run(endpoint.run(scenario))


def test_renewal_is_due_at_two_thirds_of_the_lifetime(tmp_path: Path) -> None:
    ca = ClusterCa.load_or_create(tmp_path / "pki", "shop")
    key = new_key()
    issued = ca.issue_node(load_csr(node_csr(key, "edge-1")), "edge-1", timedelta(hours=3))
    due = node_trust.renew_at(Credentials(key_pem(key), issued.pem, ca.cert_pem))
    # Two thirds of its validity (which starts 5 minutes early, for slow clocks).
    valid = 3 * 3600 + 300
    assert valid * 2 / 3 - 300 - 5 < due < valid * 2 / 3 - 300 + 5
