"""The `/ui` handler: the page and its assets, and the JSON API behind it.

On the gateway's listener, `/ui` and everything under it come here and every other
path goes on to the OpenAI gateway (`UiListener`). The page and assets hold no data
and need no key; with `api_keys` (the gateway off loopback), every `/ui/api/*` call
needs `Authorization: Bearer KEY` with a gateway API key, checked as the gateway
checks it. An action (POST) must be sent as JSON from this origin, so another web
site a browser has open cannot send one.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from edgefleet_common.grpc_errors import StatusError
from edgefleet_dataplane.bearer import key_refusal
from edgefleet_dataplane.http_server import Handler, Request, Response
from orchestrator.dashboard.calls import NODE_ACTIONS, DashboardCalls, Json, Query, bad_request
from orchestrator.dashboard.rpc_bridge import error_body, http_status, refusal_body
from orchestrator.dashboard.static import StaticFiles

log = logging.getLogger(__name__)

PREFIX = "/ui"
API = f"{PREFIX}/api/"
JSON_HEADERS = [("content-type", "application/json"), ("cache-control", "no-store")]
SSE_HEADERS = [
    ("content-type", "text/event-stream"),
    ("cache-control", "no-store"),
    ("x-accel-buffering", "no"),  # a proxy in front must not hold events back
]
Read = Callable[[DashboardCalls, Query], Awaitable[Json]]
READS: dict[str, Read] = {
    "status": DashboardCalls.status,
    "nodes": DashboardCalls.nodes,
    "agents": DashboardCalls.agents,
    "models": DashboardCalls.models,
    "endpoints": DashboardCalls.endpoints,
    "revisions": DashboardCalls.revisions,
    "diff": DashboardCalls.diff,
    "metrics": DashboardCalls.metrics,
}
NODE_ACTION = re.compile(r"nodes/(?P<node>[^/]+)/(?P<action>[a-z]+)")
ROLLBACK = re.compile(r"deployments/(?P<name>[^/]+)/rollback")


class Problem(Exception):
    """An answer other than success: HTTP `status` with the dashboard's error body."""

    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


def json_response(status: int, body: Json) -> Response:
    """A JSON answer."""
    return Response(status, json.dumps(body).encode(), list(JSON_HEADERS))


class Dashboard:
    """Answers `/ui` and everything under it."""

    def __init__(
        self,
        calls: DashboardCalls,
        api_keys: Callable[[str], object] | None = None,
        files: StaticFiles | None = None,
    ) -> None:
        """With `api_keys`, API calls need a key that `api_keys(KEY)` accepts (it raises
        to refuse it)."""
        self.calls = calls
        self._api_keys = api_keys
        self._files = files or StaticFiles()

    async def handle(self, request: Request) -> Response:
        """The HTTP handler for `/ui…`."""
        path = urlsplit(request.path).path
        try:
            if path in (PREFIX, f"{PREFIX}/", f"{PREFIX}/index.html"):
                _only(request, "GET")
                return self._files.index()
            if path.startswith(f"{PREFIX}/static/"):
                _only(request, "GET")
                return self._files.response(path.removeprefix(f"{PREFIX}/static/"))
            if path.startswith(API):
                self._authorize(request)
                return await self._api(request, path.removeprefix(API))
            raise Problem(
                404, f"no such dashboard page: {path} (the dashboard is at /ui)", "not_found"
            )
        except Problem as problem:
            return json_response(problem.status, error_body(str(problem), problem.kind))
        except StatusError as refused:
            return json_response(http_status(refused.code), refusal_body(refused))
        except Exception as exc:  # a bug must not take the connection down silently
            log.exception("dashboard request failed", extra={"path": path})
            return json_response(
                500, error_body(f"internal error in the dashboard: {exc!r}", "internal")
            )

    def _authorize(self, request: Request) -> None:
        """401 unless the call carries an API key the controller issued (when keys are on)."""
        if self._api_keys is None:
            return
        refusal = key_refusal(request, self._api_keys)
        if refusal == "":
            raise Problem(
                401,
                "this dashboard needs an API key: enter a gateway API key (`edgectl apikey "
                "create` makes one), sent as `Authorization: Bearer KEY`",
                "unauthorized",
            )
        if refusal is not None:
            raise Problem(
                401,
                f"the API key was refused: {refusal}; enter another (`edgectl apikey create`)",
                "unauthorized",
            )

    async def _api(self, request: Request, route: str) -> Response:
        query = dict(parse_qsl(urlsplit(request.path).query))
        if route == "events":
            _only(request, "GET")
            last = request.headers.get("last-event-id", "")
            return Response(200, headers=list(SSE_HEADERS), stream=self.calls.events(query, last))
        read = READS.get(route)
        if read is not None:
            _only(request, "GET")
            return json_response(200, await read(self.calls, query))
        if found := NODE_ACTION.fullmatch(route):
            if found["action"] not in NODE_ACTIONS:
                actions = ", ".join(NODE_ACTIONS)
                raise Problem(
                    404, f"no node action `{found['action']}` (known: {actions})", "not_found"
                )
            body = _action_body(request)
            node = unquote(found["node"])
            return json_response(200, await self.calls.node_action(node, found["action"], body))
        if found := ROLLBACK.fullmatch(route):
            body = _action_body(request)
            return json_response(200, await self.calls.rollback(unquote(found["name"]), body))
        raise Problem(
            404, f"no such dashboard API call: {request.method} {API}{route}", "not_found"
        )


def _only(request: Request, method: str) -> None:
    if request.method != method:
        raise Problem(405, f"use {method} for {urlsplit(request.path).path}", "method_not_allowed")


def _action_body(request: Request) -> Json:
    """The JSON object an action (POST) carries, sent from the dashboard's own origin."""
    _only(request, "POST")
    origin = request.headers.get("origin", "")
    if origin and urlsplit(origin).netloc != request.headers.get("host", ""):
        raise Problem(
            403,
            f"actions are taken only from the dashboard's own page, not from {origin}",
            "forbidden",
        )
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/json":
        raise Problem(
            415,
            "send the action's body as JSON (Content-Type: application/json)",
            "unsupported_media_type",
        )
    try:
        body: Any = json.loads(request.body or b"{}")
    except ValueError as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    return body


class UiListener:
    """The gateway listener's handler: `/ui…` to the dashboard (once attached), the rest to
    the gateway."""

    def __init__(self, gateway: Handler, api_keys: Callable[[str], object] | None = None) -> None:
        """`api_keys`: as for `Dashboard`, the gateway's own check (None on loopback)."""
        self._gateway = gateway
        self._api_keys = api_keys
        self.dashboard: Dashboard | None = None

    def mount(self, calls: DashboardCalls) -> None:
        """Serve the dashboard over `calls` from now on."""
        self.dashboard = Dashboard(calls, self._api_keys)

    async def handle(self, request: Request) -> Response:
        """The HTTP handler."""
        path = urlsplit(request.path).path
        if path != PREFIX and not path.startswith(f"{PREFIX}/"):
            return await self._gateway(request)
        if self.dashboard is None:
            body = error_body("the controller is starting; try again in a moment", "unavailable")
            return Response(503, json.dumps(body).encode(), [*JSON_HEADERS, ("retry-after", "1")])
        return await self.dashboard.handle(request)
