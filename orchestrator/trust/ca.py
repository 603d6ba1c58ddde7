"""The cluster CA: made on the controller's first start, it issues every certificate.

Kept in `DATA_DIR/pki/` (`ca.key` 0600, `ca.crt`). Its SHA-256 fingerprint is
the first half of every join token, so a joining node can check it is talking
to this controller before it sends the token's secret. The CA certificate also
serves the join endpoint's TLS (its key never leaves the controller, and a node
that fetched it can compare it with the fingerprint it was given as is).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgefleet_common.pki import (
    ADMIN_URI_PREFIX,
    CONTROLLER_SERVER_NAME,
    CONTROLLER_URI,
    JOIN_SERVER_NAME,
    NODE_URI_PREFIX,
    Credentials,
    PkiError,
    admin_name_problem,
    cert_pem,
    fingerprint,
    key_pem,
    load_cert,
    load_key,
    new_key,
    node_server_name,
    now,
    self_signed,
    valid_node_id,
    write_private,
)

CA_LIFETIME = timedelta(days=3650)
CONTROLLER_CERT_LIFETIME = timedelta(days=365)
DEFAULT_NODE_CERT_LIFETIME = timedelta(hours=24)
DEFAULT_ADMIN_CERT_LIFETIME = timedelta(days=365)
MAX_ADMIN_CERT_LIFETIME = timedelta(days=3650)
CLOCK_SKEW = timedelta(minutes=5)
"""Certificates start this long before they are issued (at most a tenth of their life), for
boxes with a slow clock."""


@dataclass(frozen=True)
class IssuedCert:
    """A certificate the CA signed, as the store records it."""

    serial: int
    node_id: str
    not_after: datetime
    pem: bytes


class ClusterCa:
    """The CA's key and certificate, and the certificates it signs."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self._key = key
        self.cert = cert
        self.cert_pem = cert_pem(cert)
        self.fingerprint = fingerprint(cert)

    @classmethod
    def load_or_create(cls, folder: Path, cluster: str) -> ClusterCa:
        """The CA in `folder` (`ca.key`, `ca.crt`), made there first if absent."""
        key_path, cert_path = folder / "ca.key", folder / "ca.crt"
        if key_path.is_file() and cert_path.is_file():
            key, cert = load_key(key_path.read_bytes()), load_cert(cert_path.read_bytes())
            if key.public_key() != cert.public_key():
                raise PkiError(f"{key_path} does not belong to {cert_path}")
            return cls(key, cert)
        if key_path.exists() or cert_path.exists():
            raise PkiError(f"{folder} holds half a CA (ca.key or ca.crt missing); restore both")
        key = new_key()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "EdgeFleet"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"EdgeFleet cluster {cluster} CA"),
            ]
        )
        start = now() - CLOCK_SKEW
        cert = self_signed(
            key,
            name,
            start,
            start + CA_LIFETIME,
            [
                (x509.BasicConstraints(ca=True, path_length=0), True),
                (_usage(cert_sign=True), True),
                (x509.SubjectAlternativeName([x509.DNSName(JOIN_SERVER_NAME)]), False),
                (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),
            ],
        )
        write_private(key_path, key_pem(key))
        write_private(cert_path, cert_pem(cert))
        return cls(key, cert)

    @property
    def key_pem(self) -> bytes:
        """The CA's private key (for the join endpoint's TLS only)."""
        return key_pem(self._key)

    def issue_node(
        self, request: x509.CertificateSigningRequest, node_id: str, lifetime: timedelta
    ) -> IssuedCert:
        """A node certificate for the key in `request`, bound to `node_id`."""
        if not valid_node_id(node_id):
            raise PkiError(f"node id {node_id!r} is not a DNS label (a-z, 0-9, '-')")
        public = request.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise PkiError("the signing request's key is not an ECDSA key")
        names: list[x509.GeneralName] = [
            x509.DNSName(node_server_name(node_id)),
            x509.UniformResourceIdentifier(NODE_URI_PREFIX + node_id),
        ]
        cert = self._sign(public, node_id, names, lifetime, server=True)
        return IssuedCert(cert.serial_number, node_id, cert.not_valid_after_utc, cert_pem(cert))

    def issue_admin(
        self,
        request: x509.CertificateSigningRequest,
        name: str,
        lifetime: timedelta = DEFAULT_ADMIN_CERT_LIFETIME,
    ) -> IssuedCert:
        """An admin client certificate (`edgefleet://admin/NAME`, client use only) for the
        key in `request`; `node_id` of the result is `admin/NAME`, as the store records it."""
        problem = admin_name_problem(name)
        if problem is not None:
            raise PkiError(problem)
        if not timedelta(0) < lifetime <= MAX_ADMIN_CERT_LIFETIME:
            raise PkiError(
                f"an admin certificate lives 1 to {MAX_ADMIN_CERT_LIFETIME.days} days, "
                f"not {lifetime}"
            )
        public = request.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise PkiError("the signing request's key is not an ECDSA key")
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(ADMIN_URI_PREFIX + name)]
        cert = self._sign(public, f"admin {name}", names, lifetime)
        owner = f"admin/{name}"
        return IssuedCert(cert.serial_number, owner, cert.not_valid_after_utc, cert_pem(cert))

    def api_server_credentials(self, hosts: list[str], lifetime: timedelta) -> Credentials:
        """A serving certificate for the controller API: `hosts` (names or addresses) and the
        name every controller's API certificate carries, which edgectl checks."""
        return self.server_credentials([*hosts, CONTROLLER_SERVER_NAME], lifetime)

    def controller_credentials(self, folder: Path) -> Credentials:
        """The controller's client certificate (kept in `folder`), renewed at half-life."""
        found = Credentials.load(folder, "controller")
        if found is not None and found.ca_pem == self.cert_pem:
            cert = found.cert
            left = cert.not_valid_after_utc - now()
            if left > CONTROLLER_CERT_LIFETIME / 2:
                return found
        key = new_key()
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(CONTROLLER_URI)]
        cert = self._sign(key.public_key(), "controller", names, CONTROLLER_CERT_LIFETIME)
        made = Credentials(key_pem=key_pem(key), cert_pem=cert_pem(cert), ca_pem=self.cert_pem)
        made.save(folder, "controller")
        return made

    def server_credentials(self, hosts: list[str], lifetime: timedelta) -> Credentials:
        """A serving certificate for `hosts` (names or addresses), e.g. for the gateway."""
        key = new_key()
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        cert = self._sign(key.public_key(), hosts[0], names, lifetime, server=True, client=False)
        return Credentials(key_pem=key_pem(key), cert_pem=cert_pem(cert), ca_pem=self.cert_pem)

    def _sign(
        self,
        public: ec.EllipticCurvePublicKey,
        common_name: str,
        names: list[x509.GeneralName],
        lifetime: timedelta,
        *,
        server: bool = False,
        client: bool = True,
    ) -> x509.Certificate:
        skew = min(CLOCK_SKEW, lifetime / 10)
        start = now() - skew
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        )
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + skew + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )

    def issued_by_me(self, cert: x509.Certificate) -> bool:
        """Whether this CA signed `cert` (signature checked, not the dates)."""
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
