// The dashboard: polls /ui/api/status every second (not while the tab is
// hidden), follows the event stream, and redraws the view on show in place.

import { dismissResult, nodeAction, rollback } from "./actions.js";
import { apiKey, get, setApiKey } from "./api.js";
import { h, morphChildren } from "./dom.js";
import { nodeState } from "./format.js";
import { followEvents } from "./sse.js";
import { renderAgents } from "./views/agents.js";
import { mountChat, updateChatTargets } from "./views/chat.js";
import { chooseDiff, chosenDiff, refreshRevisions, renderDeployments, showDiff } from "./views/deployments.js";
import { addEvent, mountEvents, tickEvents } from "./views/events.js";
import { renderFleet } from "./views/fleet.js";

const POLL_MS = 1000;
const METRICS_MS = 5000;
const VIEWS = ["fleet", "agents", "deployments", "events", "chat"];
const page = {
  status: null, metrics: null, metricsError: "", view: "fleet", metricsAt: 0, waitingForKey: false,
};
const $ = (id) => document.getElementById(id);

function render() {
  tickEvents();
  if (!page.status) return;
  const start = performance.now();
  const content = {
    fleet: () => renderFleet(page.status, $("fleet-content")),
    agents: () => renderAgents(page.status, page.metrics, page.metricsError),
    deployments: () => renderDeployments(page.status),
  }[page.view];
  if (content) morphChildren($(`${page.view}-content`), h("div", {}, content()));
  renderHeader(page.status);
  // The cost of each redraw, for profiling in the browser's performance tools.
  performance.measure("edgefleet:render", { start });
  if (performance.getEntriesByName("edgefleet:render").length > 600) performance.clearMeasures("edgefleet:render");
}

function renderHeader(status) {
  const plane = status.control_plane || {};
  const nodes = status.nodes || [];
  const ready = nodes.filter((n) => nodeState(n.state) === "ready").length;
  const role = plane.role ? ` · ${plane.role}${plane.store_kind ? ` on ${plane.store_kind}` : ""}` : "";
  const readOnly = plane.writable === false ? ` · read-only: ${plane.store_detail}` : "";
  $("cluster-line").textContent =
    `${status.controller_id || "controller"} ${status.version || ""}${role}${readOnly} · ${ready}/${nodes.length} nodes ready`;
}

function linkState(text, bad) {
  const el = $("link-state");
  el.textContent = text;
  el.className = `link-state tone-${bad ? "bad" : "good"}`;
}

// --- polling ------------------------------------------------------------------

let timer = 0;
let inFlight = false;
let again = false;

async function poll() {
  clearTimeout(timer);
  if (inFlight) {
    again = true;
    return;
  }
  if (document.hidden) return;
  inFlight = true;
  const started = Date.now();
  try {
    page.status = await get("status");
    page.waitingForKey = false;
    linkState("live", false);
    hideBanner();
    // Recent events fill the list before the stream has caught up (stored ones only).
    for (const event of page.status.events || []) if (event.id && event.id !== "0") addEvent(event);
    refreshRevisions(page.status, render);
    updateChatTargets(page.status);
    if (page.view === "agents" && Date.now() - page.metricsAt > METRICS_MS) loadMetrics();
    render();
  } catch (err) {
    linkState(err.status === 401 ? "API key needed" : err.message, true);
    // Asking again without a key only gets 401 again: wait for the key.
    page.waitingForKey = err.status === 401;
  } finally {
    inFlight = false;
    // Once a second from the start of each call, however long the answer took.
    const wait = again ? 0 : Math.max(100, POLL_MS - (Date.now() - started));
    if (!page.waitingForKey || again) timer = setTimeout(poll, wait);
    again = false;
  }
}

async function loadMetrics() {
  page.metricsAt = Date.now();
  try {
    page.metrics = await get("metrics");
    page.metricsError = "";
  } catch (err) {
    page.metricsError = err.message;
  }
  render();
}

let soon = 0;
const pollSoon = () => {
  clearTimeout(soon);
  soon = setTimeout(poll, 150);
};

// --- events stream --------------------------------------------------------------

let stream = null;

function startStream() {
  stream?.abort();
  stream = new AbortController();
  followEvents({
    signal: stream.signal,
    onEvent: (event) => {
      addEvent(event);
      pollSoon();
    },
    onState: (state, detail) => {
      const text = { live: "live", unauthorized: "waiting for an API key" }[state];
      $("events-state").textContent = text || `reconnecting… (${detail})`;
      if (state === "unauthorized") showBanner(detail);
    },
  });
}

// --- API key ------------------------------------------------------------------

function showBanner(message) {
  const banner = $("key-banner");
  $("key-detail").textContent = message || "";
  if (banner.hidden) {
    banner.hidden = false;
    $("key-input").focus();
  }
}

function hideBanner() {
  $("key-banner").hidden = true;
}

function saveKey(event) {
  event.preventDefault();
  const key = $("key-input").value.trim();
  if (!key) return;
  setApiKey(key);
  page.waitingForKey = false;
  $("key-input").value = "";
  hideBanner();
  $("key-forget").hidden = false;
  startStream();
  poll();
}

// --- navigation and actions ---------------------------------------------------------

function show(view) {
  page.view = VIEWS.includes(view) ? view : "fleet";
  for (const name of VIEWS) {
    $(`view-${name}`).hidden = name !== page.view;
    $(`nav-${name}`).toggleAttribute("aria-current", name === page.view);
    if (name === page.view) $(`nav-${name}`).setAttribute("aria-current", "page");
  }
  if (page.view === "agents") loadMetrics();
  render();
}

function onClick(event) {
  const button = event.target.closest("[data-action]");
  if (!button || button.disabled) return;
  const { action, node, deployment, revision } = button.dataset;
  if (action === "dismiss") dismissResult();
  else if (action === "rollback") rollback(deployment, revision, poll);
  else if (action === "diff") {
    const { from, to } = chosenDiff(document, deployment);
    showDiff(deployment, from, to, render);
  } else nodeAction(action, node, poll);
}

function onChange(event) {
  const select = event.target.closest("[data-diff]");
  if (select) chooseDiff(select.dataset.deployment, select.dataset.diff, select.value);
}

function boot() {
  mountEvents($("events-content"));
  mountChat($("chat-content"));
  $("key-form").addEventListener("submit", saveKey);
  $("key-forget").hidden = !apiKey();
  $("key-forget").addEventListener("click", () => {
    setApiKey("");
    $("key-forget").hidden = true;
    startStream();
    poll();
  });
  document.addEventListener("click", onClick);
  document.addEventListener("change", onChange);
  window.addEventListener("edgefleet:unauthorized", (event) => showBanner(event.detail));
  window.addEventListener("hashchange", () => show(location.hash.slice(1)));
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) poll();
  });
  show(location.hash.slice(1));
  startStream();
  poll();
}

boot();
