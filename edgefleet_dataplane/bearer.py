"""The API key an HTTP request carries (`Authorization: Bearer KEY`), checked once for every
listener that asks for one (the OpenAI gateways, the dashboard's API)."""

from __future__ import annotations

from collections.abc import Callable

from edgefleet_dataplane.http_server import Request

KeyCheck = Callable[[str], object]
"""Raises, saying why, for a key that is not in force; the key is never echoed."""


def key_refusal(request: Request, check: KeyCheck) -> str | None:
    """None when the request's key passes `check`; "" when it carries none; otherwise why
    the key was refused."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return ""
    try:
        check(key.strip())
    except Exception as exc:  # the check says why
        return str(exc) or "not a key of this cluster"
    return None
