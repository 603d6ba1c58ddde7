"""The dashboard's API on a real controller: the JSON reads edgectl's records come from,
revisions and their diff, a rollback, the live event stream, and API keys off loopback."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefleet_common.ports import free_port
from tests.conftest import MANIFESTS, REPO
from tests.integration.controller_process import ControllerProcess, start_controller
from tests.integration.node_process import environment

pytestmark = pytest.mark.slow


@pytest.fixture
def ctl(tmp_path: Path) -> Iterator[ControllerProcess]:
    controller = start_controller(tmp_path / "controller", gateway=True)
    try:
        yield controller
    finally:
        controller.close()


def base(ctl: ControllerProcess) -> str:
    return ctl.gateway_url.removesuffix("/v1")


def get(ctl: ControllerProcess, path: str) -> Any:
    response = httpx.get(base(ctl) + path, timeout=10)
    assert response.status_code == 200, f"{path}: {response.text}\n{ctl.log()}"
    return response.json()


def apply_two_revisions(ctl: ControllerProcess, tmp_path: Path) -> Path:
    manifest = tmp_path / "quickstart.yaml"
    manifest.write_text((MANIFESTS / "quickstart.yaml").read_text())
    ctl.edgectl("apply", "-f", str(manifest))
    manifest.write_text(manifest.read_text().replace("concise, friendly", "brief, kind"))
    ctl.edgectl("apply", "-f", str(manifest))
    return manifest


@pytest.mark.timeout(120)
def test_the_reads_are_the_records_edgectl_prints(ctl: ControllerProcess, tmp_path: Path) -> None:
    apply_two_revisions(ctl, tmp_path)
    status = get(ctl, "/ui/api/status")
    assert status["controller_id"] == ctl.json("status")["controller_id"]
    assert [d["name"] for d in status["deployments"]] == ["quickstart"]
    assert get(ctl, "/ui/api/agents") == ctl.json("get", "agents")
    assert get(ctl, "/ui/api/models") == ctl.json("get", "models")
    assert get(ctl, "/ui/api/nodes") == {"nodes": []}
    endpoints = get(ctl, "/ui/api/endpoints")["endpoints"]
    assert ctl.gateway_url in [e["url"] for e in endpoints]
    revisions = get(ctl, "/ui/api/revisions?deployment=quickstart")["revisions"]
    assert [(r["number"], r["manifest"]) for r in revisions] == [(2, ""), (1, "")]
    metrics = get(ctl, "/ui/api/metrics")
    assert (metrics["window_s"], metrics["step_s"]) == (300, 5)

    page = httpx.get(base(ctl) + "/ui/static/api.js", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/javascript")
    assert page.headers["cache-control"] == "no-cache"
    # The gateway still answers on the same listener.
    assert httpx.get(ctl.gateway_url + "/models", timeout=10).json()["object"] == "list"


@pytest.mark.timeout(120)
def test_a_diff_between_revisions_and_a_rollback_from_the_page(
    ctl: ControllerProcess, tmp_path: Path
) -> None:
    apply_two_revisions(ctl, tmp_path)
    diff = get(ctl, "/ui/api/diff?deployment=quickstart&from=1&to=2")
    assert (diff["deployment"], diff["from"], diff["to"]) == ("quickstart", 1, 2)
    assert '-      instructions: "You are a concise, friendly' in diff["diff"]
    assert '+      instructions: "You are a brief, kind' in diff["diff"]

    missing = httpx.get(base(ctl) + "/ui/api/diff?deployment=quickstart&from=1&to=9", timeout=10)
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "quickstart has no revision 9; it has: 1, 2"

    rolled = httpx.post(
        base(ctl) + "/ui/api/deployments/quickstart/rollback", json={"to": 1}, timeout=30
    )
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["revision"]["number"] == 3
    assert rolled.json()["revision"]["cause"] == "rollback to 1 by dashboard"
    listed = ctl.json("rollback", "quickstart", "--list")["revisions"]
    assert [r["number"] for r in listed] == [3, 2, 1]

    unknown = httpx.post(
        base(ctl) + "/ui/api/nodes/edge-9/cordon", json={"reason": "test"}, timeout=10
    )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["type"] == "not_found"


@pytest.mark.timeout(120)
def test_the_event_stream_shows_an_apply_as_it_happens(
    ctl: ControllerProcess, tmp_path: Path
) -> None:
    last = get(ctl, "/ui/api/status")["events"][-1]["id"]
    manifest = tmp_path / "quickstart.yaml"
    manifest.write_text((MANIFESTS / "quickstart.yaml").read_text())
    url = f"{base(ctl)}/ui/api/events?after={last}&object=deployment/quickstart"
    apply: subprocess.Popen[str] | None = None
    seen: list[dict[str, Any]] = []
    with httpx.stream("GET", url, timeout=30) as stream:
        assert stream.headers["content-type"] == "text/event-stream"
        lines = stream.iter_lines()
        assert next(lines).startswith("retry: ")  # the head has arrived: now apply
        apply = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli.main", "--controller", ctl.address,
             "apply", "-f", str(manifest)],
            cwd=REPO, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        ids = []
        for line in lines:  # bounded by the read timeout: the test fails if nothing comes
            if line.startswith("id: "):
                ids.append(int(line.removeprefix("id: ")))
            if line.startswith("data: "):
                seen.append(json.loads(line.removeprefix("data: ")))
                if seen[-1]["reason"] == "DeploymentApplied":
                    break
    assert apply.wait(60) == 0
    assert seen[-1]["object"] == "deployment/quickstart"
    assert all(e["object"] == "deployment/quickstart" for e in seen)
    assert ids == [int(e["id"]) for e in seen]
    assert min(ids) > int(last)
    printed = ctl.edgectl("events", "-o", "json").stdout.splitlines()
    by_id = {record["id"]: record for record in map(json.loads, printed)}
    assert by_id[seen[-1]["id"]] == seen[-1]  # the same record as `edgectl events`


@pytest.mark.timeout(120)
def test_off_loopback_the_api_needs_a_key_and_the_page_does_not(tmp_path: Path) -> None:
    port = free_port("0.0.0.0")
    ctl = start_controller(tmp_path / "ctl", extra_args=["--gateway-listen", f"0.0.0.0:{port}"])
    try:
        url = f"https://127.0.0.1:{port}"
        verify = ssl.create_default_context(cafile=str(ctl.data_dir / "pki" / "ca.crt"))
        anonymous = httpx.get(f"{url}/ui/api/nodes", verify=verify, timeout=10)
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["type"] == "unauthorized"
        assert "edgectl apikey create" in anonymous.json()["error"]["message"]
        refused = httpx.post(
            f"{url}/ui/api/nodes/edge-1/cordon", json={}, verify=verify, timeout=10
        )
        assert refused.status_code == 401
        page = httpx.get(f"{url}/ui/static/api.js", verify=verify, timeout=10)
        assert page.status_code == 200

        key = ctl.edgectl("apikey", "create", "--description", "dashboard").stdout.strip()
        headers = {"Authorization": f"Bearer {key}"}
        nodes = httpx.get(f"{url}/ui/api/nodes", verify=verify, headers=headers, timeout=10)
        assert nodes.status_code == 200
        assert nodes.json() == {"nodes": []}
        wrong = {"Authorization": f"Bearer {key[:-4]}0000"}
        bad = httpx.get(f"{url}/ui/api/status", verify=verify, headers=wrong, timeout=10)
        assert bad.status_code == 401
        assert key[:-4] not in bad.text
    finally:
        ctl.close()
