"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against a real
controller (its gateway on loopback serves `/ui`) and two real edge-nodes running
SmolLM2-135M on llama.cpp.

One page is opened once and never reloaded: what changes in the fleet (a new revision, a
cordon, a killed node) must reach it live. A second controller, its gateway off loopback
(HTTPS with the cluster CA, reached on 127.0.0.1), shows the API-key banner.

Screenshots of the main views are written to docs/dashboard/ on every run (the README
shows them).
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from edgefleet_common.ports import free_port
from tests.browser import DESKTOP, PHONE, open_chromium, require_chromium
from tests.conftest import REPO
from tests.integration.controller_process import ControllerProcess, start_controller
from tests.integration.node_process import NodeProcess, start_node
from tests.integration.test_node_daemon import require_model
from tests.polling import wait_for

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Locator, Page, Response

pytestmark = pytest.mark.slow

SHOTS = REPO / "docs" / "dashboard"
DEPLOYMENT = "shop"
NODES = ("edge-1", "edge-2")
AGENT = "assistant"
MANIFEST = """\
deployment:
  type: distributed-edge
  name: shop
  models:
    - alias: smollm2-135m
      runtime: llama.cpp
  agents:
    - name: assistant
      model: smollm2-135m
{more}
  nodes:
    - id: edge-1
      models: [smollm2-135m]
      address: "{edge-1}"
    - id: edge-2
      models: [smollm2-135m]
      address: "{edge-2}"
  coordination:
    failover: automatic
    # Long enough for the page to show `suspect` before `not-ready`.
    failure_timeout: 8s
"""
SECOND_AGENT = """\
    - name: greeter
      model: smollm2-135m
      instructions: Greet visitors at the counter in one sentence."""
LIVE_MS = 30_000
"""Bound on the page showing what changed in the fleet (never asserted as a timing)."""
MOVE_MS = 90_000
"""Bound on a killed node's agent coming up on the other node."""


@dataclass
class Shop:
    """The fleet under test and its dashboard's address."""

    ctl: ControllerProcess
    nodes: dict[str, NodeProcess]
    manifest: Path

    @property
    def ui(self) -> str:
        return self.ctl.gateway_url.removesuffix("/v1") + "/ui"

    def apply(self, more: str = "") -> None:
        addresses = {node_id: node.address for node_id, node in self.nodes.items()}
        self.manifest.write_text(MANIFEST.format(more=more, **addresses))
        self.ctl.edgectl(
            "apply", "-f", str(self.manifest), "--wait", "--timeout", "180", timeout=200
        )

    def nodes_json(self) -> dict[str, dict[str, Any]]:
        return {n["id"]: n for n in self.ctl.json("get", "nodes")["nodes"]}

    def hosts(self, agent: str) -> list[str]:
        """The nodes where `agent` has a ready replica."""
        agents = {a["name"]: a for a in self.ctl.json("get", "agents")["agents"]}
        replicas = agents.get(agent, {}).get("replicas", [])
        return [r["node_id"] for r in replicas if r["state"] == "AGENT_STATE_READY"]

    def log(self) -> str:
        return "\n".join([self.ctl.log(), *(node.log(20) for node in self.nodes.values())])


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    require_chromium()
    require_model()
    folder = tmp_path_factory.mktemp("shop")
    nodes: dict[str, NodeProcess] = {}
    ctl: ControllerProcess | None = None
    try:
        for node_id in NODES:
            nodes[node_id] = start_node(node_id, folder / node_id)
        ctl = start_controller(folder / "controller", gateway=True)
        shop = Shop(ctl, nodes, folder / "shop.yaml")
        shop.apply()
        yield shop
    finally:
        if ctl is not None:
            ctl.close()
        for node in nodes.values():
            node.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """One browser for the module. A gateway off loopback shows a certificate from the
    cluster CA, which this browser does not know: HTTPS errors are let through."""
    require_chromium()
    profile = tmp_path_factory.mktemp("browser") / "profile"
    with open_chromium(profile, ignore_https_errors=True) as context:
        yield context


@pytest.fixture(scope="module")
def page(shop: Shop, browser: BrowserContext) -> Iterator[Page]:
    """One page on the dashboard for the whole module, opened once and never reloaded."""
    page = browser.new_page()
    report_errors(page)
    page.goto(shop.ui)
    # Gone if the page ever reloads: every later check of it proves updates came live.
    page.evaluate("window.edgefleetOpenedOnce = true")
    yield page
    page.close()


def report_errors(page: Page) -> None:
    """Print the page's script errors and console errors (pytest shows them on failure)."""
    page.on("pageerror", lambda error: print(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            print(f"console {message.type}: {message.text}")
            if message.type in ("error", "warning")
            else None
        ),
    )


def by_id(page: Page, name: str) -> Locator:
    return page.get_by_test_id(name)


def still_the_same_page(page: Page) -> None:
    assert page.evaluate("window.edgefleetOpenedOnce === true"), "the page was reloaded"


def shoot(page: Page, name: str, *, full_page: bool = False) -> None:
    """A screenshot of what the page shows now, as docs/dashboard/NAME.png."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(
        path=SHOTS / f"{name}.png", full_page=full_page, animations="disabled", caret="hide"
    )


def node_state(page: Page, node_id: str) -> Locator:
    return by_id(page, f"node-{node_id}").get_by_test_id("node-state")


def show(page: Page, view: str) -> None:
    """Open a view from the navigation (no page load)."""
    by_id(page, f"nav-{view}").click()


BUTTON_PAGE = """<!doctype html><meta charset="utf-8"><title>t</title>
<button data-testid="go" onclick="this.textContent = 'clicked'">go</button>"""


def test_the_browser_opens_a_local_page_clicks_and_shoots(
    browser: BrowserContext, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    (tmp_path / "button.html").write_text(BUTTON_PAGE)
    page = browser.new_page()
    try:
        page.goto((tmp_path / "button.html").as_uri())
        page.get_by_test_id("go").click()
        expect(page.get_by_test_id("go")).to_have_text("clicked")
        shot = page.screenshot(path=tmp_path / "button.png")
        assert shot.startswith(b"\x89PNG"), shot[:8]
    finally:
        page.close()


@pytest.mark.model
def test_the_fleet_lists_both_nodes_ready(page: Page) -> None:
    from playwright.sync_api import expect

    show(page, "fleet")
    for node_id in NODES:
        expect(by_id(page, f"node-{node_id}")).to_be_visible(timeout=LIVE_MS)
        expect(node_state(page, node_id)).to_have_text("ready", timeout=LIVE_MS)
    shoot(page, "fleet")
    page.set_viewport_size(PHONE)
    try:
        for node_id in NODES:
            expect(node_state(page, node_id)).to_be_visible()
        shoot(page, "fleet-phone", full_page=True)
    finally:
        page.set_viewport_size(DESKTOP)
    still_the_same_page(page)


def choose(field: Locator, value: str) -> None:
    """Pick `value` in a select, or type it into a text field."""
    if field.evaluate("e => e.tagName") == "SELECT":
        field.select_option(value)
    else:
        field.fill(value)


RECORD_LENGTHS = """output => {
    window.edgefleetChatLengths = [];
    new MutationObserver(() => window.edgefleetChatLengths.push(output.textContent.length))
        .observe(output, {childList: true, characterData: true, subtree: true});
}"""


@pytest.mark.model
def test_the_chat_panel_streams_an_answer_from_the_model(page: Page) -> None:
    from playwright.sync_api import expect

    show(page, "chat")
    choose(by_id(page, "chat-target"), AGENT)
    by_id(page, "chat-input").fill("Describe the sea in five sentences.")
    output, send = by_id(page, "chat-output"), by_id(page, "chat-send")
    output.evaluate(RECORD_LENGTHS)
    send.click()
    # The send button is off while the answer streams in: sample the text meanwhile.
    expect(send).to_be_disabled()
    sampled: list[int] = []
    deadline = time.monotonic() + 120
    while send.is_disabled() and time.monotonic() < deadline:
        sampled.append(len(output.text_content() or ""))
        time.sleep(0.05)
    expect(send).to_be_enabled()
    # Every length the panel went through: the question, an empty answer, then the
    # answer growing piece by piece (never all at once).
    seen: list[int] = page.evaluate("window.edgefleetChatLengths")
    grew = [b for a, b in itertools.pairwise(seen) if b > a]
    assert len(grew) >= 4, f"the answer did not stream in: lengths {seen}"
    assert len(set(sampled)) >= 2, f"the answer did not grow while sampled: {sampled}"
    assert seen[-1] > grew[1], f"no answer text: lengths {seen}"
    shoot(page, "chat")


@pytest.mark.model
def test_the_agents_view_shows_each_replica(shop: Shop, page: Page) -> None:
    from playwright.sync_api import expect

    [host] = shop.hosts(AGENT)
    show(page, "agents")
    expect(by_id(page, f"agent-{AGENT}")).to_be_visible(timeout=LIVE_MS)
    expect(by_id(page, f"replica-{AGENT}-{host}")).to_be_visible(timeout=LIVE_MS)
    # The chat's request, counted by the controller's gateway, drawn as small charts.
    expect(by_id(page, f"chart-rps-{AGENT}")).to_be_visible(timeout=LIVE_MS)
    latency = by_id(page, f"chart-latency-{AGENT}")
    # A line is drawn once a completed step holds the answered request's latency.
    expect(latency.locator("polyline")).not_to_have_count(0, timeout=LIVE_MS)
    shoot(page, "agents")


@pytest.mark.model
def test_an_applied_revision_appears_live(shop: Shop, page: Page) -> None:
    from playwright.sync_api import expect

    show(page, "deployments")
    expect(by_id(page, f"revision-{DEPLOYMENT}-1")).to_be_visible(timeout=LIVE_MS)
    expect(by_id(page, f"revision-{DEPLOYMENT}-2")).to_have_count(0)
    shop.apply(more=SECOND_AGENT)
    expect(by_id(page, f"revision-{DEPLOYMENT}-2")).to_be_visible(timeout=LIVE_MS)
    shoot(page, "deployments")
    still_the_same_page(page)


@pytest.mark.model
def test_a_cordon_from_the_page_reaches_the_controller(shop: Shop, page: Page) -> None:
    from playwright.sync_api import expect

    [host] = shop.hosts(AGENT)
    other = next(n for n in NODES if n != host)
    show(page, "fleet")
    by_id(page, f"cordon-{other}").click()
    expect(by_id(page, "confirm")).to_be_visible()
    by_id(page, "confirm-yes").click()
    wait_for(
        f"`edgectl get nodes` to show {other} cordoned",
        lambda: shop.nodes_json()[other].get("mark") == "cordoned",
        30,
        shop.log,
    )
    table = shop.ctl.edgectl("get", "nodes").stdout
    [row] = [line for line in table.splitlines() if line.split()[:1] == [other]]
    assert "cordoned" in row, table
    expect(by_id(page, f"node-{other}")).to_contain_text("cordoned", timeout=LIVE_MS)


@pytest.mark.model
def test_the_event_stream_shows_what_happens_live(shop: Shop, page: Page) -> None:
    from playwright.sync_api import expect

    show(page, "events")
    events = by_id(page, "events").locator("[data-testid^='event-']")
    expect(events.first).to_be_visible(timeout=LIVE_MS)
    before = events.count()
    for node_id in NODES:  # leaves the fleet unmarked for the next test
        shop.ctl.edgectl("node", "uncordon", node_id)
    expect(by_id(page, "events")).to_contain_text("uncordon", timeout=LIVE_MS)
    wait_for("a new event row on the page", lambda: events.count() > before, 30, shop.log)
    shoot(page, "events")
    still_the_same_page(page)


@pytest.mark.model
def test_a_killed_node_goes_suspect_then_not_ready_and_its_agent_moves(
    shop: Shop, page: Page
) -> None:
    from playwright.sync_api import expect

    [host] = shop.hosts(AGENT)
    survivor = next(n for n in NODES if n != host)
    show(page, "fleet")
    expect(node_state(page, host)).to_have_text("ready", timeout=LIVE_MS)
    shop.nodes[host].kill()
    expect(node_state(page, host)).to_have_text("suspect", timeout=LIVE_MS)
    expect(node_state(page, host)).to_have_text("not-ready", timeout=LIVE_MS)
    expect(node_state(page, survivor)).to_have_text("ready")
    show(page, "agents")
    expect(by_id(page, f"replica-{AGENT}-{survivor}")).to_be_visible(timeout=MOVE_MS)
    wait_for(
        f"{AGENT} ready on {survivor}",
        lambda: shop.hosts(AGENT) == [survivor],
        MOVE_MS / 1000,
        shop.log,
    )
    expect(by_id(page, f"replica-{AGENT}-{survivor}")).to_contain_text(
        re.compile(r"(?<!not-)ready"), timeout=LIVE_MS
    )
    still_the_same_page(page)


# -- off loopback: the API key --------------------------------------------------------------


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[tuple[ControllerProcess, str]]:
    """A controller whose gateway listens on every interface (HTTPS, API keys), and the
    dashboard's address on 127.0.0.1."""
    port = free_port()
    ctl = start_controller(
        tmp_path / "controller", extra_args=["--gateway-listen", f"0.0.0.0:{port}"]
    )
    try:
        yield ctl, f"https://127.0.0.1:{port}/ui"
    finally:
        ctl.close()


def test_off_loopback_the_page_asks_for_a_key_and_works_with_one(
    guarded: tuple[ControllerProcess, str], browser: BrowserContext
) -> None:
    from playwright.sync_api import expect

    ctl, ui = guarded
    answers: list[tuple[str, int]] = []

    def record(response: Response) -> None:
        if "/ui/api/" in response.url:
            answers.append((response.url, response.status))

    page = browser.new_page()
    report_errors(page)
    try:
        page.on("response", record)
        page.goto(ui)
        page.bring_to_front()  # a page in the background does not poll
        expect(by_id(page, "key-banner")).to_be_visible(timeout=LIVE_MS)

        def seen(status: int, path: str = "/ui/api/") -> bool:
            # Playwright hands over the page's events only while one of its calls runs.
            page.wait_for_timeout(50)
            return any(path in url and s == status for url, s in answers)

        wait_for("a 401 from /ui/api", lambda: seen(401), 10, ctl.log)
        refused = page.request.get(ui + "/api/status")
        assert refused.status == 401, refused.text()
        error = json.loads(refused.text())["error"]
        assert error["type"] == "unauthorized", error
        assert "apikey create" in error["message"], error

        key = ctl.edgectl("apikey", "create", "--description", "dashboard").stdout.strip()
        answers.clear()
        by_id(page, "key-input").fill(key)
        by_id(page, "key-save").click()
        expect(by_id(page, "key-banner")).to_be_hidden(timeout=LIVE_MS)
        wait_for(
            "a 200 from /ui/api/status with the key",
            lambda: seen(200, "/ui/api/status"),
            15,
            ctl.log,
        )
        assert all(s != 401 for _, s in answers), answers
    finally:
        page.close()
