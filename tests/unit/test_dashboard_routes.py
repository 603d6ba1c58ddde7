"""The `/ui` handler over a real controller API (store, fleet, reconciler; no node): paths,
keys, errors as HTTP, and the gateway behind the same listener."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgefleet_dataplane.http_server import Request, Response
from edgefleet_dataplane.router import Router
from orchestrator.api import ControllerService
from orchestrator.controller import insecure_channel
from orchestrator.dashboard.calls import DashboardCalls
from orchestrator.dashboard.routes import Dashboard, UiListener
from orchestrator.dashboard.traffic import Traffic
from orchestrator.events import EventLog
from orchestrator.fleet.fleet import Fleet
from orchestrator.fleet.replica_directory import FleetReplicaDirectory
from orchestrator.reconciler import Reconciler
from orchestrator.routing_index import CurrentRoutingIndex
from orchestrator.store import SqliteStore

KEY = "good-key"


@pytest.fixture
def calls(tmp_path: Path) -> Iterator[DashboardCalls]:
    store = SqliteStore.open(tmp_path / "controller.db")
    events = EventLog(store)
    events.record("info", "Test", "node/edge-1", "an event")
    fleet = Fleet(
        controller_id=store.controller_id,
        channel_factory=insecure_channel,
        events=events,
        failure_timeout=lambda: 3.0,
        on_change=lambda: None,
    )
    reconciler = Reconciler(store, fleet, events, local_node="")
    index = CurrentRoutingIndex(reconciler.deployments)
    router = Router(FleetReplicaDirectory(fleet, lambda: reconciler.assignment), index)
    service = ControllerService(store, fleet, reconciler, events, router)
    try:
        yield DashboardCalls(service, Traffic(), lambda: {"agent/assistant": 3})
    finally:
        store.close()


def check_key(key: str) -> object:
    if key != KEY:
        raise ValueError("unknown api key")
    return key


def serve(handler: Any, method: str, path: str, body: Any = None, **headers: str) -> Response:
    raw = json.dumps(body).encode() if body is not None else b""
    return asyncio.run(handler(Request(method, path, headers, raw)))


def answer(response: Response) -> Any:
    assert dict(response.headers)["content-type"] == "application/json"
    return json.loads(response.body)


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/ui/api/status", "controller_id"),
        ("/ui/api/nodes", "nodes"),
        ("/ui/api/agents", "agents"),
        ("/ui/api/models", "models"),
        ("/ui/api/endpoints", "endpoints"),
        ("/ui/api/revisions?deployment=shop", "revisions"),
    ],
)
def test_reads_answer_the_apis_messages_as_json(
    calls: DashboardCalls, path: str, field: str
) -> None:
    response = serve(Dashboard(calls).handle, "GET", path)
    assert response.status == 200, response.body
    assert field in answer(response)


def test_status_prints_fields_without_presence_like_edgectl(calls: DashboardCalls) -> None:
    status = answer(serve(Dashboard(calls).handle, "GET", "/ui/api/status?events=5"))
    assert status["nodes"] == []
    assert status["gateway_url"] == ""
    assert [e["message"] for e in status["events"]] == ["an event"]


def test_metrics_has_the_window_and_the_escalations(calls: DashboardCalls) -> None:
    metrics = answer(serve(Dashboard(calls).handle, "GET", "/ui/api/metrics"))
    assert metrics == {
        "window_s": 300,
        "step_s": 5,
        "series": {},
        "escalations": [{"object": "agent/assistant", "requests": 3}],
    }


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "kind"),
    [
        ("POST", "/ui/api/nodes/edge-9/cordon", {"reason": "x"}, 404, "not_found"),
        ("POST", "/ui/api/nodes/edge-9/reboot", {}, 404, "not_found"),
        ("POST", "/ui/api/nodes/edge-9/drain", {"reason": 5}, 400, "invalid_argument"),
        ("POST", "/ui/api/deployments/shop/rollback", {"to": 2}, 404, "not_found"),
        ("POST", "/ui/api/deployments/shop/rollback", {"to": "two"}, 400, "invalid_argument"),
        ("POST", "/ui/api/deployments/shop/rollback", [1], 400, "invalid_argument"),
        ("GET", "/ui/api/diff?deployment=shop&from=1", None, 400, "invalid_argument"),
        ("GET", "/ui/api/diff?deployment=shop&from=1&to=x", None, 400, "invalid_argument"),
        ("GET", "/ui/api/diff?deployment=shop&from=1&to=2", None, 404, "not_found"),
        ("GET", "/ui/api/nodes/edge-9/cordon", None, 405, "method_not_allowed"),
        ("POST", "/ui/api/nodes", {}, 405, "method_not_allowed"),
        ("GET", "/ui/api/nodez", None, 404, "not_found"),
        ("GET", "/ui/elsewhere", None, 404, "not_found"),
    ],
)
def test_refusals_are_http_statuses_with_the_error_shape(
    calls: DashboardCalls, method: str, path: str, body: Any, status: int, kind: str
) -> None:
    headers = {"content-type": "application/json"} if method == "POST" else {}
    response = serve(Dashboard(calls).handle, method, path, body, **headers)
    assert response.status == status, response.body
    error = answer(response)["error"]
    assert error["type"] == kind
    assert error["message"]


def test_an_action_must_be_json_from_the_dashboards_own_origin(calls: DashboardCalls) -> None:
    handle = Dashboard(calls).handle
    path = "/ui/api/nodes/edge-9/cordon"
    form = serve(handle, "POST", path, {"reason": "x"}, **{"content-type": "text/plain"})
    assert form.status == 415
    elsewhere = serve(
        handle,
        "POST",
        path,
        {},
        **{"content-type": "application/json", "origin": "https://evil.example", "host": "h:1"},
    )
    assert elsewhere.status == 403
    assert "evil.example" in answer(elsewhere)["error"]["message"]
    same = serve(
        handle,
        "POST",
        path,
        {},
        **{"content-type": "application/json", "origin": "http://h:1", "host": "h:1"},
    )
    assert same.status == 404  # past the checks: the node is unknown


def test_with_keys_every_api_call_needs_one_but_the_page_does_not(
    calls: DashboardCalls,
) -> None:
    handle = Dashboard(calls, check_key).handle
    anonymous = serve(handle, "GET", "/ui/api/nodes")
    assert anonymous.status == 401
    error = answer(anonymous)["error"]
    assert error["type"] == "unauthorized"
    assert "edgectl apikey create" in error["message"]
    wrong = serve(handle, "GET", "/ui/api/nodes", authorization="Bearer bad-key")
    assert wrong.status == 401
    assert "unknown api key" in answer(wrong)["error"]["message"]
    assert "bad-key" not in answer(wrong)["error"]["message"]
    assert serve(handle, "GET", "/ui/api/nodes", authorization=f"Bearer {KEY}").status == 200
    assert serve(handle, "GET", "/ui/static/api.js").status == 200


def test_the_listener_sends_ui_paths_to_the_dashboard_and_the_rest_to_the_gateway(
    calls: DashboardCalls,
) -> None:
    async def gateway(request: Request) -> Response:
        return Response(200, b"gateway:" + request.path.encode())

    listener = UiListener(gateway)
    assert serve(listener.handle, "GET", "/ui/api/nodes").status == 503  # not mounted yet
    listener.mount(calls)
    assert serve(listener.handle, "GET", "/ui/api/nodes").status == 200
    assert serve(listener.handle, "GET", "/v1/models").body == b"gateway:/v1/models"
    assert serve(listener.handle, "GET", "/uix").body == b"gateway:/uix"


def test_the_event_stream_starts_with_stored_events(calls: DashboardCalls) -> None:
    async def first_event() -> tuple[Response, bytes]:
        response = await Dashboard(calls).handle(
            Request("GET", "/ui/api/events?after=0&object=node/edge-1", {}, b"")
        )
        assert response.stream is not None
        pieces = [await anext(response.stream), await anext(response.stream)]
        await response.stream.aclose()  # type: ignore[attr-defined]
        return response, pieces[1]

    response, event = asyncio.run(first_event())
    assert dict(response.headers)["content-type"] == "text/event-stream"
    assert event.startswith(b"id: 1\ndata: ")
    assert json.loads(event.split(b"data: ", 1)[1])["message"] == "an event"


def test_an_event_id_that_is_no_number_is_refused_before_the_stream(
    calls: DashboardCalls,
) -> None:
    response = serve(Dashboard(calls).handle, "GET", "/ui/api/events?after=-1")
    assert response.status == 400
    assert "after" in answer(response)["error"]["message"]
