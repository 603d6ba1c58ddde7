"""A node's membership of a cluster: joining with a token, its certificate, renewal, and the
TLS its API serves.

Joining: the node fetches the certificate the controller's join endpoint serves
(the cluster CA's), compares its SHA-256 with the fingerprint in the token, and
only then opens a verified TLS channel to send the token's secret with a signing
request for a key made here (the key never leaves the box). A node may be given
several join endpoints (one per controller): it tries them in turn. The
certificate, key and CA go to `DATA_DIR/pki/` (0600), with the join addresses
for renewals (one a line, the one that answered first).

Serving: the node API requires a client certificate signed by the cluster CA,
and `caller_roles` admits each call by the certificate's role (the controller
may command the node; another node may only send it requests). The certificate
is renewed after two thirds of its lifetime; new connections get the new one at
once, and its other users (the gateway's HTTPS, channels to peers) take it up.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgefleet.v1 import trust_pb2, trust_pb2_grpc
from edgefleet_common.backoff import Backoff
from edgefleet_common.grpc_transport import client_options
from edgefleet_common.join_token import JoinToken
from edgefleet_common.pki import (
    JOIN_SERVER_NAME,
    Credentials,
    PkiError,
    cert_pem,
    fingerprint,
    key_pem,
    load_cert,
    load_key,
    new_key,
    node_csr,
    node_id_of,
    now,
    self_signed,
    write_private,
)

log = logging.getLogger(__name__)

PKI_DIR = "pki"
STEM = "node"
CONTROLLER_FILE = "controller-address"
JOIN_TIMEOUT_S = 15.0
RENEW_RETRY_MIN_S = 1.0
RENEW_RETRY_MAX_S = 60.0
MIN_RENEW_WAIT_S = 1.0

T = TypeVar("T")


class JoinError(Exception):
    """Joining or renewing failed; the message says why and what to do."""


def pki_dir(data_dir: Path) -> Path:
    """Where a node keeps its key, certificate, CA and the controller's join address."""
    return data_dir / PKI_DIR


def fetch_served_cert(address: str, timeout: float = JOIN_TIMEOUT_S) -> x509.Certificate:
    """The certificate a TLS endpoint presents, unverified (it is checked by fingerprint)."""
    host, _, port = address.rpartition(":")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=JOIN_SERVER_NAME) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ValueError) as exc:
        raise JoinError(f"cannot reach the controller's join endpoint at {address}: {exc}") from exc
    if not der:
        raise JoinError(f"{address} presented no certificate")
    return x509.load_der_x509_certificate(der)


def join(node_id: str, token: JoinToken, addresses: Sequence[str], data_dir: Path) -> Credentials:
    """Join the cluster whose CA the token names, through the first of its join endpoints
    at `addresses` (HOST:PORT each) that takes the node."""
    if isinstance(addresses, str) or not addresses:
        raise ValueError("join needs a list of one or more join endpoint addresses")
    credentials, address = _first_answer(addresses, lambda a: _join_at(node_id, token, a))
    folder = pki_dir(data_dir)
    credentials.save(folder, STEM)
    ordered = [address, *(a for a in addresses if a != address)]
    write_private(folder / CONTROLLER_FILE, "".join(f"{a}\n" for a in ordered).encode())
    return credentials


def _join_at(node_id: str, token: JoinToken, address: str) -> Credentials:
    served = fetch_served_cert(address)
    if fingerprint(served) != token.ca_fingerprint:
        raise JoinError(
            f"the controller at {address} is not the one this token is for (its CA "
            f"fingerprint is {fingerprint(served)[:16]}…, the token names "
            f"{token.ca_fingerprint[:16]}…); nothing was sent"
        )
    ca_pem = served.public_bytes(serialization.Encoding.PEM)
    key = new_key()
    request = trust_pb2.JoinRequest(
        node_id=node_id, credential=token.credential, csr_pem=node_csr(key, node_id)
    )
    answer = _call(address, ca_pem, None, lambda stub: stub.Join(request, timeout=JOIN_TIMEOUT_S))
    return _accept(answer, key, node_id, ca_pem)


def saved_join_addresses(data_dir: Path) -> list[str]:
    """The join endpoints saved when the node joined (one a line; a file from an older
    node holds a single address)."""
    address_file = pki_dir(data_dir) / CONTROLLER_FILE
    if not address_file.is_file():
        raise JoinError(f"{address_file} is missing: join again with --join")
    addresses = address_file.read_text().split()
    if not addresses:
        raise JoinError(f"{address_file} names no controller: join again with --join")
    return addresses


def _first_answer(addresses: Sequence[str], attempt: Callable[[str], T]) -> tuple[T, str]:
    """`attempt(address)` for each address in turn, until one succeeds; a JoinError that
    names every failure when none does."""
    failures: list[JoinError] = []
    for address in addresses:
        try:
            return attempt(address), address
        except JoinError as exc:
            if len(addresses) > 1:
                log.warning("a controller did not take the request", extra={"error": str(exc)})
            failures.append(exc)
    if len(failures) == 1:
        raise failures[0]
    raise JoinError(
        f"none of the {len(addresses)} controllers took the request: "
        + "; ".join(str(f) for f in failures)
    )


def renew(node_id: str, current: Credentials, data_dir: Path) -> Credentials:
    """A new key and certificate, proven by the current ones (through the first saved join
    endpoint that answers); saved over them."""
    addresses = saved_join_addresses(data_dir)
    renewed, _ = _first_answer(addresses, lambda a: _renew_at(node_id, current, a))
    renewed.save(pki_dir(data_dir), STEM)
    return renewed


def _renew_at(node_id: str, current: Credentials, address: str) -> Credentials:
    key = new_key()
    csr = node_csr(key, node_id)
    signature = load_key(current.key_pem).sign(csr, ec.ECDSA(hashes.SHA256()))
    request = trust_pb2.RenewRequest(
        certificate_pem=current.cert_pem, csr_pem=csr, signature=signature
    )
    answer = _call(
        address, current.ca_pem, current, lambda stub: stub.Renew(request, timeout=JOIN_TIMEOUT_S)
    )
    return _accept(answer, key, node_id, current.ca_pem)


def load_credentials(data_dir: Path, node_id: str) -> Credentials | None:
    """The node's saved credentials, if it has joined (PkiError if they are not its own)."""
    found = Credentials.load(pki_dir(data_dir), STEM)
    if found is not None and node_id_of(found.cert) != node_id:
        raise PkiError(
            f"{pki_dir(data_dir)} holds the certificate of node {node_id_of(found.cert)!r}, "
            f"not {node_id!r}"
        )
    return found


def unjoined_credentials(node_id: str) -> Credentials:
    """A throwaway self-signed certificate for a node that has not joined: it serves TLS
    that no controller trusts and trusts no client, so the controller lists it
    `untrusted` (with the reason) and it receives nothing."""
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{node_id} (not joined)")])
    start = now()
    pem = cert_pem(self_signed(key, name, start, start + timedelta(days=1)))
    return Credentials(key_pem=key_pem(key), cert_pem=pem, ca_pem=pem)


def _call(
    address: str,
    ca_pem: bytes,
    client: Credentials | None,
    call: Callable[[trust_pb2_grpc.JoinServiceStub], trust_pb2.JoinResponse],
) -> trust_pb2.JoinResponse:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca_pem,
        private_key=client.key_pem if client else None,
        certificate_chain=client.cert_pem if client else None,
    )
    options = [*client_options(), ("grpc.ssl_target_name_override", JOIN_SERVER_NAME)]
    try:
        with grpc.secure_channel(address, credentials, options=options) as channel:
            return call(trust_pb2_grpc.JoinServiceStub(channel))
    except grpc.RpcError as exc:
        raise JoinError(f"the controller at {address} refused: {exc.details()}") from None


def _accept(
    answer: trust_pb2.JoinResponse, key: ec.EllipticCurvePrivateKey, node_id: str, ca_pem: bytes
) -> Credentials:
    cert = load_cert(answer.certificate_pem)
    if node_id_of(cert) != node_id or cert.public_key() != key.public_key():
        raise JoinError("the controller answered with a certificate that is not for this node")
    if answer.ca_pem != ca_pem:
        raise JoinError("the controller answered with another CA than the one it serves")
    return Credentials(key_pem=key_pem(key), cert_pem=answer.certificate_pem, ca_pem=ca_pem)


class ServingCredentials:
    """The node API's TLS: the current certificate, swapped in when it is renewed."""

    def __init__(self, credentials: Credentials, *, joined: bool = True) -> None:
        """`joined=False`: a throwaway certificate of a node that is no member (nothing to
        renew)."""
        self._lock = threading.Lock()
        self._current = credentials
        self._changed = False
        self._listeners: list[Callable[[Credentials], None]] = []
        self.joined = joined

    @property
    def current(self) -> Credentials:
        """The certificate in use."""
        with self._lock:
            return self._current

    def replace(self, credentials: Credentials) -> None:
        """Serve `credentials` on new connections from now on (and tell the listeners)."""
        with self._lock:
            self._current, self._changed = credentials, True
        for listener in list(self._listeners):
            try:
                listener(credentials)
            except Exception:  # one user of the certificate must not stop its renewal
                log.exception("taking a renewed certificate into use failed")

    def on_replace(self, listener: Callable[[Credentials], None]) -> None:
        """Call `listener(credentials)` whenever the certificate is replaced (renewed)."""
        self._listeners.append(listener)

    def server_credentials(self) -> grpc.ServerCredentials:
        """Credentials for `add_secure_port`: client certificates required and verified."""
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(self.current),
            self._fetch,
            require_client_authentication=True,
        )

    def _fetch(self) -> Any:
        # Called by gRPC (on its own thread) before each handshake: None keeps the config.
        with self._lock:
            if not self._changed:
                return None
            self._changed = False
            return self._configuration(self._current)

    @staticmethod
    def _configuration(credentials: Credentials) -> Any:
        return grpc.ssl_server_certificate_configuration(
            [(credentials.key_pem, credentials.cert_pem)], root_certificates=credentials.ca_pem
        )


def renew_at(credentials: Credentials) -> float:
    """Seconds from now until the certificate should be renewed (two thirds of its life)."""
    cert = credentials.cert
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    due = cert.not_valid_before_utc + life * 2 / 3
    return max((due - now()) / timedelta(seconds=1), MIN_RENEW_WAIT_S)


async def keep_renewed(
    node_id: str,
    data_dir: Path,
    serving: ServingCredentials,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Renew the certificate whenever it is due, for as long as the node runs."""
    retry = Backoff(RENEW_RETRY_MIN_S, RENEW_RETRY_MAX_S)
    while True:
        await sleep(renew_at(serving.current))
        try:
            renewed = await asyncio.to_thread(renew, node_id, serving.current, data_dir)
        except (JoinError, PkiError, OSError) as exc:
            left = (serving.current.cert.not_valid_after_utc - now()).total_seconds()
            delay = retry.next()
            log.warning(
                "certificate renewal failed; retrying",
                extra={"error": str(exc), "expires_in_s": round(left), "retry_s": delay},
            )
            await sleep(delay)
            continue
        retry.reset()
        serving.replace(renewed)
        log.info(
            "certificate renewed",
            extra={"not_after": f"{renewed.cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"},
        )
