"""`etcd://` store URLs: what is accepted, and what each mistake is told."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.etcd.target import EtcdTarget, parse_store_url
from orchestrator.etcd.txn import prefix_end


def test_members_are_kept_in_the_order_written() -> None:
    target = parse_store_url("etcd://h1:2379, h2:2379,10.0.0.3:2379/")
    assert target == EtcdTarget(endpoints=("h1:2379", "h2:2379", "10.0.0.3:2379"))


def test_ipv6_members_use_brackets() -> None:
    assert parse_store_url("etcd://[::1]:2379").endpoints == ("[::1]:2379",)


def test_tls_files_travel_with_the_target() -> None:
    ca, cert, key = Path("ca.pem"), Path("c.pem"), Path("k.pem")
    target = parse_store_url("etcd://h:2379", ca=ca, cert=cert, key=key)
    assert (target.ca, target.cert, target.key) == (ca, cert, key)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("sqlite:///tmp/x.db", "is not an etcd URL"),
        ("h1:2379", "is not an etcd URL"),
        ("etcd://", "names no etcd member"),
        ("etcd://h1", "needs HOST:PORT"),
        ("etcd://:2379", "needs HOST:PORT"),
        ("etcd://h1:2379,,h2:2379", "empty member"),
        ("etcd://h1:port", "no valid port"),
        ("etcd://h1:0", "no valid port"),
        ("etcd://h1:70000", "no valid port"),
        ("etcd://::1:2379", "IPv6"),
        ("etcd://h1:2379/edgefleet", "no path"),
        ("etcd://user@h1:2379", "no path, query or user"),
        ("etcd://h1:2379,h1:2379", "more than once"),
    ],
)
def test_a_wrong_url_is_refused_with_what_to_write(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as caught:
        parse_store_url(url)
    assert "etcd" in str(caught.value)


def test_a_client_certificate_needs_its_key_and_a_ca() -> None:
    with pytest.raises(ValueError, match="both --etcd-cert and --etcd-key"):
        parse_store_url("etcd://h:2379", ca=Path("ca"), cert=Path("c"))
    with pytest.raises(ValueError, match="give --etcd-ca"):
        parse_store_url("etcd://h:2379", cert=Path("c"), key=Path("k"))


@pytest.mark.parametrize(
    ("prefix", "end"),
    [(b"/a/", b"/a0"), (b"a\xff", b"b"), (b"\xff\xff", b"\0"), (b"", b"\0")],
)
def test_prefix_end_covers_exactly_the_prefix(prefix: bytes, end: bytes) -> None:
    assert prefix_end(prefix) == end
