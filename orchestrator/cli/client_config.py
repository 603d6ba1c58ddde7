"""The edgectl config file: which cluster, its controllers, and the admin certificate to
show them, like a kubeconfig.

    cluster: default
    controllers: [10.0.0.1:7440, 10.0.0.2:7440, 10.0.0.3:7440]
    ca: |            # the cluster CA certificate, PEM
      -----BEGIN CERTIFICATE-----
    certificate: |   # the admin's client certificate, PEM
    key: |           # its private key, PEM (the file is 0600)

`edgectl admin create NAME` writes one; `edgectl --config FILE` or `$EDGEFLEET_CONFIG`
reads it. Every problem is reported as `FILE:LINE: what is wrong`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from edgefleet_common.pki import PkiError, load_cert, load_key, write_private
from orchestrator.errors import UsageError

CONFIG_ENV = "EDGEFLEET_CONFIG"
FIELDS = {
    "cluster": "the cluster's name",
    "controllers": "the controller API addresses, HOST:PORT each",
    "ca": "the cluster CA certificate, PEM",
    "certificate": "the admin client certificate, PEM",
    "key": "the admin certificate's private key, PEM",
}
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


def valid_address(text: str) -> bool:
    """Whether `text` is HOST:PORT with a port in 1-65535."""
    match = _HOST_PORT.match(text)
    return match is not None and 0 < int(match.group(2)) < 65536


class ConfigError(UsageError):
    """A config file edgectl cannot use; the message starts with FILE:LINE."""


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """What edgectl needs to reach a cluster's controllers over mutual TLS."""

    cluster: str
    controllers: tuple[str, ...]
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    source: str = "<config>"

    def render(self, comment: str = "") -> str:
        """The config as YAML text (PEM as block literals)."""
        lines = [f"# {line}" for line in comment.splitlines()]
        lines.append(f"cluster: {json.dumps(self.cluster)}")
        lines.append("controllers:")
        lines.extend(f"  - {json.dumps(address)}" for address in self.controllers)
        for field, pem in (
            ("ca", self.ca_pem),
            ("certificate", self.cert_pem),
            ("key", self.key_pem),
        ):
            lines.append(f"{field}: |")
            lines.extend(f"  {line}" for line in pem.decode().strip().splitlines())
        return "\n".join(lines) + "\n"

    def write(self, path: Path, comment: str = "") -> None:
        """Write the config to `path`, 0600 (it holds a private key)."""
        write_private(path, self.render(comment).encode())


def load_client_config(path: Path) -> ClientConfig:
    """Read and check a config file (ConfigError with FILE:LINE for any problem)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the edgectl config {path}: {exc.strerror or exc}") from exc
    return parse_client_config(text, str(path))


def parse_client_config(text: str, source: str) -> ClientConfig:
    """A config from its YAML text; `source` names it in messages."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError(f"{source}:{line}: not valid YAML: {exc.problem or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}:1: not valid YAML: {exc}") from exc
    if not isinstance(root, MappingNode):
        line = root.start_mark.line + 1 if root is not None else 1
        raise ConfigError(
            f"{source}:{line}: an edgectl config is a mapping with the fields "
            f"{', '.join(FIELDS)} (`edgectl admin create NAME` writes one)"
        )
    fields = _fields(root, source)
    missing = [name for name in FIELDS if name not in fields]
    if missing:
        described = "; ".join(f"`{name}` ({FIELDS[name]})" for name in missing)
        raise ConfigError(f"{source}:{root.start_mark.line + 1}: missing {described}")
    config = ClientConfig(
        cluster=_text(fields["cluster"], source, "cluster"),
        controllers=_addresses(fields["controllers"], source),
        ca_pem=_text(fields["ca"], source, "ca").encode(),
        cert_pem=_text(fields["certificate"], source, "certificate").encode(),
        key_pem=_text(fields["key"], source, "key").encode(),
        source=source,
    )
    _check_pem(config, fields, source)
    return config


def _fields(root: MappingNode, source: str) -> dict[str, Node]:
    fields: dict[str, Node] = {}
    for key, value in root.value:
        name = key.value if isinstance(key, ScalarNode) else None
        line = key.start_mark.line + 1
        if name not in FIELDS:
            raise ConfigError(
                f"{source}:{line}: unknown field {name!r}; the fields are {', '.join(FIELDS)}"
            )
        if name in fields:
            raise ConfigError(f"{source}:{line}: `{name}` appears twice")
        fields[name] = value
    return fields


def _text(node: Node, source: str, name: str) -> str:
    if not isinstance(node, ScalarNode) or not str(node.value).strip():
        raise ConfigError(
            f"{source}:{node.start_mark.line + 1}: `{name}` must be text ({FIELDS[name]})"
        )
    return str(node.value)


def _addresses(node: Node, source: str) -> tuple[str, ...]:
    line = node.start_mark.line + 1
    items = node.value if isinstance(node, SequenceNode) else None
    if not items:
        raise ConfigError(
            f"{source}:{line}: `controllers` must list at least one HOST:PORT address"
        )
    addresses = []
    for item in items:
        text = str(item.value).strip() if isinstance(item, ScalarNode) else ""
        if not valid_address(text):
            raise ConfigError(
                f"{source}:{item.start_mark.line + 1}: controller address {text or item.tag!r} "
                "is not HOST:PORT, e.g. 10.0.0.1:7440"
            )
        addresses.append(text)
    return tuple(addresses)


def _check_pem(config: ClientConfig, fields: dict[str, Node], source: str) -> None:
    """The certificates and key parse, and the key belongs to the certificate."""

    def where(name: str) -> str:
        return f"{source}:{fields[name].start_mark.line + 1}"

    try:
        load_cert(config.ca_pem)
    except PkiError as exc:
        raise ConfigError(f"{where('ca')}: `ca`: {exc}") from exc
    try:
        cert = load_cert(config.cert_pem)
    except PkiError as exc:
        raise ConfigError(f"{where('certificate')}: `certificate`: {exc}") from exc
    try:
        key = load_key(config.key_pem)
    except PkiError as exc:
        raise ConfigError(f"{where('key')}: `key`: {exc}") from exc
    if key.public_key() != cert.public_key():
        raise ConfigError(
            f"{where('key')}: `key` does not belong to `certificate`; "
            "make a new config with `edgectl admin create NAME`"
        )
