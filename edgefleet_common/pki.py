"""Keys, certificate requests and certificates of a cluster, and where they are kept.

The cluster CA and every certificate it issues use ECDSA P-256. A certificate
names what it belongs to in a URI subject-alternative name: `edgefleet://node/ID`
for a node, `edgefleet://controller` for the controller, `edgefleet://admin/NAME`
for an operator of the controller API. A node is also named by
the DNS SAN `ID.node.edgefleet.invalid`, which is what the controller checks when
it dials one (`grpc.ssl_target_name_override`): names under the reserved
`.invalid` domain, so a node certificate can never pass for a real host (the
gateway's), nor for the join endpoint (`join.edgefleet.invalid`, which no node id
can produce: ids have no dots). A controller's API certificate carries
`controller.edgefleet.invalid`, which edgectl checks whatever address it dials.
Private keys are written 0600.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CONTROLLER_URI = "edgefleet://controller"
NODE_URI_PREFIX = "edgefleet://node/"
ADMIN_URI_PREFIX = "edgefleet://admin/"
CONTROLLER_SERVER_NAME = "controller.edgefleet.invalid"
"""The DNS name every controller API certificate carries and edgectl checks."""
DEFAULT_JOIN_PORT = 7441
"""The controller's join endpoint (TLS), where nodes exchange a token for a certificate."""
JOIN_SERVER_NAME = "join.edgefleet.invalid"
"""The DNS name a node checks on the controller's join endpoint (whatever its address)."""

_NODE_ID = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


class PkiError(Exception):
    """A key, request or certificate that cannot be used, with the reason."""


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM (kept in a 0600 file)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    """An ECDSA private key from PEM (PkiError for anything else)."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"not a private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError("the key is not an ECDSA key")
    return key


def cert_pem(cert: x509.Certificate) -> bytes:
    """The certificate as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def self_signed(
    key: ec.EllipticCurvePrivateKey,
    name: x509.Name,
    not_before: datetime,
    not_after: datetime,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> x509.Certificate:
    """A certificate `key` signs for itself (a CA's, or a throwaway one), with
    (extension, critical) pairs."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(key, hashes.SHA256())


def load_cert(pem: bytes) -> x509.Certificate:
    """A certificate from PEM (PkiError when it is not one)."""
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise PkiError(f"not a certificate: {exc}") from exc


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER encoding, lowercase hex (64 characters)."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


NODE_NAME_SUFFIX = ".node.edgefleet.invalid"


def node_server_name(node_id: str) -> str:
    """The DNS name a node's certificate carries and the controller checks."""
    return f"{node_id}{NODE_NAME_SUFFIX}"


def valid_node_id(node_id: str) -> bool:
    """Whether `node_id` can name a node in a certificate (a DNS label)."""
    return bool(_NODE_ID.fullmatch(node_id))


def node_csr(key: ec.EllipticCurvePrivateKey, node_id: str) -> bytes:
    """A certificate signing request for node `node_id`, as PEM."""
    if not valid_node_id(node_id):
        raise PkiError(f"node id {node_id!r} is not a DNS label (a-z, 0-9, '-')")
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


def valid_admin_name(name: str) -> bool:
    """Whether `name` can name an admin in a certificate (the node id rule: a DNS label)."""
    return bool(_NODE_ID.fullmatch(name))


def admin_name_problem(name: str) -> str | None:
    """Why `name` cannot name an admin, or None when it can."""
    if valid_admin_name(name):
        return None
    shown = name if len(name) <= 70 else f"{name[:70]}…"
    return (
        f"admin name {shown!r} is not a DNS label: use 1-63 characters a-z, 0-9 and '-', "
        "starting and ending with a letter or digit (e.g. alice, ops-1)"
    )


def admin_csr(key: ec.EllipticCurvePrivateKey, name: str) -> bytes:
    """A certificate signing request for admin `name`, as PEM."""
    problem = admin_name_problem(name)
    if problem is not None:
        raise PkiError(problem)
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"admin {name}")]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


def load_csr(pem: bytes) -> x509.CertificateSigningRequest:
    """A signing request from PEM, its signature checked (PkiError otherwise)."""
    try:
        request = x509.load_pem_x509_csr(pem)
        signed = request.is_signature_valid
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PkiError(f"not a certificate signing request we can use: {exc}") from exc
    if not signed:
        raise PkiError("the signing request's signature does not match its key")
    if not isinstance(request.public_key(), ec.EllipticCurvePublicKey):
        raise PkiError("the signing request's key is not an ECDSA key")
    return request


def uris(cert: x509.Certificate) -> list[str]:
    """The URI subject-alternative names of a certificate."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(names.get_values_for_type(x509.UniformResourceIdentifier))


def node_id_of(cert: x509.Certificate) -> str | None:
    """The node a certificate was issued to, or None when it is not a node certificate."""
    for uri in uris(cert):
        if uri.startswith(NODE_URI_PREFIX):
            return uri.removeprefix(NODE_URI_PREFIX)
    return None


def admin_name_of(cert: x509.Certificate) -> str | None:
    """The admin a certificate was issued to, or None when it is not an admin certificate."""
    for uri in uris(cert):
        if uri.startswith(ADMIN_URI_PREFIX):
            return uri.removeprefix(ADMIN_URI_PREFIX)
    return None


def is_controller(cert: x509.Certificate) -> bool:
    """Whether a certificate names the controller."""
    return CONTROLLER_URI in uris(cert)


def not_after(cert: x509.Certificate) -> datetime:
    """When the certificate expires (aware, UTC)."""
    return cert.not_valid_after_utc


def not_before(cert: x509.Certificate) -> datetime:
    """When the certificate starts to be valid (aware, UTC)."""
    return cert.not_valid_before_utc


def now() -> datetime:
    """The current time, aware, UTC."""
    return datetime.now(UTC)


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` as a 0600 file in a 0700 folder, atomically (a crash leaves
    the old or the new content)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600, O_EXCL
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


@dataclass(frozen=True)
class Credentials:
    """A certificate with its private key and the CA it chains to, as PEM."""

    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        """The certificate, parsed."""
        return load_cert(self.cert_pem)

    def save(self, folder: Path, stem: str) -> None:
        """Write `STEM.key`, `STEM.crt` and `ca.crt` in `folder` (all 0600)."""
        write_private(folder / f"{stem}.key", self.key_pem)
        write_private(folder / f"{stem}.crt", self.cert_pem)
        write_private(folder / "ca.crt", self.ca_pem)

    @classmethod
    def load(cls, folder: Path, stem: str) -> Credentials | None:
        """What `save` wrote, or None when any of the files is missing."""
        paths = [folder / f"{stem}.key", folder / f"{stem}.crt", folder / "ca.crt"]
        if not all(p.is_file() for p in paths):
            return None
        key, cert, ca = (p.read_bytes() for p in paths)
        return cls(key_pem=key, cert_pem=cert, ca_pem=ca)
