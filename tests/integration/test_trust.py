"""Cluster trust with real processes: joining with a token, rogue nodes, mutual TLS on the
node API, certificate renewal and revocation, and API keys on the gateway.

Everything runs on loopback; mDNS is bound to 127.0.0.1 and node ids are unique to
the run (every process on the machine shares loopback mDNS).
"""

from __future__ import annotations

import contextlib
import sqlite3
import ssl
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from edgefleet.v1 import node_pb2, node_pb2_grpc
from edgefleet_common.grpc_transport import client_options
from edgefleet_common.join_token import JoinToken
from edgefleet_common.pki import Credentials, key_pem, load_cert, load_csr, new_key, node_csr
from edgefleet_common.ports import free_port
from orchestrator.trust.ca import ClusterCa
from tests.cluster_pki import controller_identity, node_options
from tests.cluster_pki import test_ca as run_ca
from tests.integration.controller_process import ControllerProcess, start_controller
from tests.integration.node_process import NodeProcess, start_node, unique_id
from tests.polling import wait_for

pytestmark = [pytest.mark.slow]

MDNS = ["127.0.0.1"]


def nodes_by_id(ctl: ControllerProcess) -> dict[str, dict[str, Any]]:
    return {n["id"]: n for n in ctl.json("get", "nodes")["nodes"]}


def token_of(ctl: ControllerProcess) -> str:
    return (ctl.data_dir / "join-token").read_text().strip()


@contextlib.contextmanager
def running(*processes: NodeProcess | ControllerProcess) -> Iterator[None]:
    try:
        yield
    finally:
        for process in processes:
            process.close()


def manifest(tmp_path: Path, node_ids: list[str]) -> Path:
    """Model `tiny` pinned to every node (an echo runtime needs no model file)."""
    lines = [
        "deployment:",
        "  type: distributed-edge",
        "  name: trust",
        "  models:",
        '    - alias: "tiny"',
        "      runtime: openai",
        '      source: "http://127.0.0.1:9/v1"',
        "  nodes:",
    ]
    for node_id in node_ids:
        lines += [f'    - id: "{node_id}"', '      models: ["tiny"]']
    path = tmp_path / "trust.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


# -- joining, and nodes that cannot prove membership ------------------------------------------


@pytest.mark.timeout(180)
def test_rogue_nodes_get_nothing_and_show_as_untrusted(tmp_path: Path) -> None:
    good, plain, revoked, foreign_token, foreign_cert = (
        unique_id(name) for name in ("good", "plain", "revoked", "foreign-token", "foreign-cert")
    )
    ctl = start_controller(tmp_path / "ctl", mdns_interfaces=MDNS)
    join = (ctl.join_address, token_of(ctl))
    with running(ctl):
        spare = ctl.edgectl("token", "create", "--description", "to revoke").stdout.strip()
        spare_id = JoinToken.parse(spare).token_id
        ctl.edgectl("token", "revoke", spare_id)
        other_ca = ClusterCa.load_or_create(tmp_path / "other-ca", "elsewhere")
        foreign = JoinToken.new(other_ca.fingerprint)
        foreign_dir = tmp_path / foreign_cert
        key = new_key()
        issued = other_ca.issue_node(
            load_csr(node_csr(key, foreign_cert)), foreign_cert, timedelta(hours=1)
        )
        Credentials(key_pem(key), issued.pem, other_ca.cert_pem).save(foreign_dir / "pki", "node")

        started = [
            start_node(good, tmp_path / good, mdns_interfaces=MDNS, join=join),
            start_node(plain, tmp_path / plain, mdns_interfaces=MDNS, secure=False),
            start_node(
                revoked,
                tmp_path / revoked,
                mdns_interfaces=MDNS,
                join=(ctl.join_address, spare),
                health_check=False,
            ),
            start_node(
                foreign_token,
                tmp_path / foreign_token,
                mdns_interfaces=MDNS,
                join=(ctl.join_address, str(foreign)),
                health_check=False,
            ),
            start_node(foreign_cert, foreign_dir, mdns_interfaces=MDNS, health_check=False),
        ]
        with running(*started):
            rogues = [plain, revoked, foreign_token, foreign_cert]
            wait_for(
                "every node discovered, the rogues untrusted",
                lambda: (
                    all(
                        nodes_by_id(ctl).get(r, {}).get("state") == "NODE_STATE_UNTRUSTED"
                        for r in rogues
                    )
                    and nodes_by_id(ctl).get(good, {}).get("state") == "NODE_STATE_READY"
                ),
                40,
                lambda: f"{nodes_by_id(ctl)}\n{ctl.log()}",
            )
            ctl.edgectl("apply", "-f", str(manifest(tmp_path, [good, *rogues])))
            wait_for(
                "the trusted node gets its model",
                lambda: nodes_by_id(ctl)[good]["observed_generation"] != "0",
                30,
                ctl.log,
            )
            rows = nodes_by_id(ctl)
            (model,) = ctl.json("get", "models")["models"]
            assert [r["node_id"] for r in model["replicas"]] == [good], model
            for rogue in rogues:
                assert rows[rogue]["observed_generation"] == "0", rows[rogue]
                assert "certificate" in rows[rogue]["reason"] or "TLS" in rows[rogue]["reason"]
            logs = {p.node_id: p.log(200) for p in started}
            assert "revoked" in logs[revoked], logs[revoked]
            assert "not the one this token is for" in logs[foreign_token], logs[foreign_token]
            # The secret of a token never reaches a log, an event or a status.
            secret = JoinToken.parse(spare).secret
            everything = ctl.log(2000) + ctl.edgectl("events").stdout + ctl.edgectl("status").stdout
            assert secret not in everything
            assert secret not in logs[revoked]


@pytest.mark.timeout(120)
def test_a_node_with_only_a_token_finds_its_controller_over_mdns(tmp_path: Path) -> None:
    node_id = unique_id("finder")
    ctl = start_controller(tmp_path / "ctl", mdns_interfaces=MDNS)
    with running(ctl):
        node = start_node(
            node_id, tmp_path / node_id, mdns_interfaces=MDNS, join=("", token_of(ctl))
        )
        with running(node):
            assert any("found the controller over mDNS" in line for line in node.process.lines)
            wait_for(
                "the node that joined ready",
                lambda: nodes_by_id(ctl).get(node_id, {}).get("state") == "NODE_STATE_READY",
                30,
                ctl.log,
            )
            assert f"{node_id} joined with token" in ctl.edgectl("events").stdout


# -- the node API admits only the controller -------------------------------------------------


def _apply(channel: grpc.Channel) -> grpc.StatusCode:
    stub = node_pb2_grpc.NodeServiceStub(channel)
    try:
        stub.ApplyState(node_pb2.ApplyStateRequest(generation=1, controller_id="rogue"), timeout=5)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.timeout(120)
def test_only_a_client_certificate_of_the_controller_may_call_the_node(tmp_path: Path) -> None:
    node_id = unique_id("guarded")
    node = start_node(node_id, tmp_path / "node")
    with running(node):
        ca = run_ca().cert_pem
        options = node_options(node_id)
        other = ClusterCa.load_or_create(tmp_path / "other", "elsewhere")
        other_client = other.controller_credentials(tmp_path / "other-client")
        peer_key = new_key()
        peer = run_ca().issue_node(
            load_csr(node_csr(peer_key, "peer-node")), "peer-node", timedelta(hours=1)
        )
        attempts = {
            "plaintext": grpc.insecure_channel(node.address, options=client_options()),
            "TLS without a client certificate": grpc.secure_channel(
                node.address, grpc.ssl_channel_credentials(root_certificates=ca), options
            ),
            "a controller certificate from another CA": grpc.secure_channel(
                node.address,
                grpc.ssl_channel_credentials(ca, other_client.key_pem, other_client.cert_pem),
                options,
            ),
            "another node's certificate from this CA": grpc.secure_channel(
                node.address,
                grpc.ssl_channel_credentials(ca, key_pem(peer_key), peer.pem),
                options,
            ),
        }
        codes = {what: _apply(channel) for what, channel in attempts.items()}
        for channel in attempts.values():
            channel.close()
        assert codes == {
            "plaintext": grpc.StatusCode.UNAVAILABLE,
            "TLS without a client certificate": grpc.StatusCode.UNAVAILABLE,
            "a controller certificate from another CA": grpc.StatusCode.UNAVAILABLE,
            "another node's certificate from this CA": grpc.StatusCode.PERMISSION_DENIED,
        }
        identity = controller_identity()
        with grpc.secure_channel(
            node.address,
            grpc.ssl_channel_credentials(ca, identity.key_pem, identity.cert_pem),
            options,
        ) as channel:
            info = node_pb2_grpc.NodeServiceStub(channel).GetInfo(
                node_pb2.GetInfoRequest(), timeout=5
            )
        assert info.node_id == node_id


# -- renewal and revocation ------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_certificates_renew_without_a_gap_and_a_revoked_node_loses_access(tmp_path: Path) -> None:
    node_id = unique_id("renewing")
    lifetime = ["--node-cert-lifetime", "6s"]
    ctl = start_controller(tmp_path / "ctl", extra_args=lifetime)
    node = start_node(node_id, tmp_path / "node", join=(ctl.join_address, token_of(ctl)))
    first = load_cert((tmp_path / "node" / "pki" / "node.crt").read_bytes())
    ctl.close()
    # The controller comes back after the first certificate expired: it must meet the
    # renewed one in a new handshake.
    ctl = start_controller(
        tmp_path / "ctl",
        nodes={node_id: node.address},
        port=int(ctl.address.rpartition(":")[2]),
        extra_args=[*lifetime, "--join-listen", ctl.join_address],
    )
    with running(node, ctl):
        wait_for(
            "the certificate renewed twice and the first one expired",
            lambda: sum("certificate renewed" in line for line in node.process.lines) >= 2,
            30,
            node.log,
        )
        renewed = load_cert((tmp_path / "node" / "pki" / "node.crt").read_bytes())
        assert renewed.serial_number != first.serial_number
        wait_for(
            "the node ready with its renewed certificate",
            lambda: nodes_by_id(ctl).get(node_id, {}).get("state") == "NODE_STATE_READY",
            20,
            ctl.log,
        )
        events = ctl.edgectl("events").stdout
        assert "NodeSuspect" not in events, events

        ctl.edgectl("node", "revoke", node_id, "--reason", "box stolen")
        wait_for(
            "the revoked node untrusted",
            lambda: nodes_by_id(ctl)[node_id]["state"] == "NODE_STATE_UNTRUSTED",
            10,
            ctl.log,
        )
        assert "box stolen" in nodes_by_id(ctl)[node_id]["reason"]
        wait_for(
            "the revoked node's renewal refused",
            lambda: any("was revoked" in line for line in node.process.lines),
            20,
            node.log,
        )


# -- API keys on a gateway off loopback --------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_gateway_off_loopback_needs_https_and_an_api_key(tmp_path: Path) -> None:
    port = free_port("0.0.0.0")
    ctl = start_controller(tmp_path / "ctl", extra_args=["--gateway-listen", f"0.0.0.0:{port}"])
    with running(ctl):
        url = f"https://127.0.0.1:{port}/v1/models"
        verify = ssl.create_default_context(cafile=str(ctl.data_dir / "pki" / "ca.crt"))
        anonymous = httpx.get(url, verify=verify, timeout=10)
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == "invalid_api_key"
        key = ctl.edgectl("apikey", "create", "--description", "kiosk app").stdout.strip()
        headers = {"Authorization": f"Bearer {key}"}
        assert httpx.get(url, verify=verify, headers=headers, timeout=10).status_code == 200
        wrong = {"Authorization": f"Bearer {key[:-4]}0000"}
        assert httpx.get(url, verify=verify, headers=wrong, timeout=10).status_code == 401
        with pytest.raises(httpx.HTTPError):  # plain HTTP gets no answer from the HTTPS port
            httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5)

        key_id = key.split("_")[1]
        listed = ctl.json("apikey", "list")["credentials"]
        assert [c["id"] for c in listed] == [key_id]
        ctl.edgectl("apikey", "revoke", key_id)
        refused = httpx.get(url, verify=verify, headers=headers, timeout=10)
        assert refused.status_code == 401
        assert "revoked" in refused.json()["error"]["message"]

        secret = key.split("_")[2]
        with sqlite3.connect(ctl.data_dir / "controller.db") as db:
            dump = "\n".join(db.iterdump())
        assert secret not in dump
        assert key not in dump
        assert secret not in ctl.log(2000)
