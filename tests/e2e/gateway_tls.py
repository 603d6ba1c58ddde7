"""HTTPS clients for a node's gateway off loopback, as an app elsewhere in the fleet
would open them: the run's cluster CA trusted, the node's certificate name checked.
`httpx2` is the HTTP library the `openai` client is built on."""

from __future__ import annotations

import ssl

import httpx2

from edgefleet_common.pki import node_server_name
from tests.cluster_pki import test_ca


class NamedTlsTransport(httpx2.HTTPTransport):
    """HTTPS to an address whose certificate names someone else: a node's gateway is
    dialled at its lab address but its certificate names `ID.node.edgefleet.invalid`."""

    def __init__(self, server_name: str, verify: ssl.SSLContext) -> None:
        super().__init__(verify=verify)
        self._server_name = server_name

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send `request` with the TLS server name (SNI, and the name checked) set."""
        request.extensions = {**request.extensions, "sni_hostname": self._server_name}
        return super().handle_request(request)


def node_gateway_client(node_id: str, timeout: float = 30.0) -> httpx2.Client:
    """An HTTP client for node `node_id`'s gateway: trusts the run's cluster CA and checks
    the node's certificate name (for `openai.OpenAI(http_client=...)`)."""
    verify = ssl.create_default_context(cadata=test_ca().cert_pem.decode())
    transport = NamedTlsTransport(node_server_name(node_id), verify)
    return httpx2.Client(transport=transport, timeout=timeout)
