// Agents & models: each replica with the router's view of it, request rate and
// latency charts from /ui/api/metrics, and recent escalations.

import { lineChart } from "../chart.js";
import { h } from "../dom.js";
import { agentState, millis, modelState, percent, size, when } from "../format.js";
import { badge, empty } from "./widgets.js";

const REPLICA_HEADERS = ["Node", "State", "In-flight", "Queue", "Latency EWMA", "Circuit"];

function table(caption, headers, rows) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      h("caption", { class: "visually-hidden" }, caption),
      h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows),
    ),
  );
}

// Cells with a space between them, so a row's text reads "edge-2 ready 0 …".
const cells = (...items) => items.flatMap((item, i) => (i ? [" ", item] : [item]));

function circuit(value) {
  const word = value || "-";
  const cls = word === "open" ? "bad" : word === "half-open" ? "warn" : "plain";
  return h("span", { class: `badge tone-${cls}` }, word);
}

function charts(name, metrics) {
  const samples = metrics?.series?.[name] || [];
  if (!samples.length) return null;
  return h(
    "div",
    { class: "charts" },
    lineChart({
      title: "requests/s", samples, unit: "/s", testid: `chart-rps-${name}`,
      lines: [{ label: "rps", pick: (s) => s.rps, cls: "line-a" }],
    }),
    lineChart({
      title: "latency", samples, unit: "ms", testid: `chart-latency-${name}`,
      lines: [
        { label: "p50", pick: (s) => s.p50_ms, cls: "line-a" },
        { label: "p95", pick: (s) => s.p95_ms, cls: "line-b" },
      ],
    }),
  );
}

function readyBadge(ready, desired) {
  return h("span", { class: `badge tone-${ready < desired ? "warn" : "good"}` }, `${ready}/${desired} ready`);
}

function agentCard(agent, metrics) {
  const rows = (agent.replicas || []).map((r) => {
    const state = agentState(r.state);
    return h(
      "tr",
      { "data-testid": `replica-${agent.name}-${r.node_id}` },
      ...cells(h("th", { scope: "row" }, r.node_id, r.preferred ? h("span", { class: "muted", title: "on a node the manifest names" }, " ★") : null),
      h("td", {}, badge(state === "failed" && r.reason ? `failed: ${r.reason}` : state)),
      h("td", {}, String(r.in_flight || 0)),
      h("td", {}, String(r.queue_depth || 0)),
      h("td", {}, millis(r.latency_ewma_ms)),
      h("td", {}, circuit(r.circuit))),
    );
  });
  return h(
    "article",
    { class: "card", "data-testid": `agent-${agent.name}`, "aria-label": `agent ${agent.name}` },
    h("header", {}, h("h3", {}, agent.name), " ", readyBadge(agent.ready_replicas || 0, agent.desired_replicas || 0)),
    h("p", { class: "muted" }, `deployment ${agent.deployment || "-"} · model ${agent.model || "-"} · tools ${(agent.tools || []).join(", ") || "-"}`),
    agent.unplaced_reason ? h("p", { class: "reason tone-warn" }, `unplaced: ${agent.unplaced_reason}`) : null,
    rows.length ? table(`replicas of ${agent.name}`, REPLICA_HEADERS, rows) : empty("no replica placed"),
    charts(agent.name, metrics),
  );
}

function modelCard(model, metrics) {
  const rows = (model.replicas || []).map((r) => {
    let state = modelState(r.state);
    if (state === "loading" && r.progress > 0) state = `loading ${percent(r.progress)}`;
    if (state === "failed" && r.reason) state = `failed: ${r.reason}`;
    return h(
      "tr",
      { "data-testid": `model-replica-${model.alias}-${r.node_id}` },
      ...cells(h("th", { scope: "row" }, r.node_id),
      h("td", {}, badge(state)),
      h("td", {}, String(r.in_flight || 0)),
      h("td", {}, `${r.runtime || "-"} ${size(r.memory_bytes)}`),
      h("td", {}, millis(r.latency_ewma_ms)),
      h("td", {}, circuit(r.circuit))),
    );
  });
  const headers = ["Node", "State", "In-flight", "Runtime", "Latency EWMA", "Circuit"];
  return h(
    "article",
    { class: "card", "data-testid": `model-${model.alias}`, "aria-label": `model ${model.alias}` },
    h("header", {}, h("h3", {}, model.alias), " ", readyBadge(model.ready_replicas || 0, (model.replicas || []).length)),
    h("p", { class: "muted" }, `deployments ${(model.deployments || []).join(", ") || "-"} · tasks ${(model.tasks || []).join(", ") || "-"}`),
    rows.length ? table(`replicas of model ${model.alias}`, headers, rows) : empty("not loaded anywhere"),
    charts(model.alias, metrics),
  );
}

function escalation(item, index) {
  const time = item.time || item.t || item.at;
  const stamp = typeof time === "number" ? new Date(time * 1000).toISOString() : time;
  const rest = Object.entries(item).filter(([k]) => !["time", "t", "at"].includes(k));
  return h(
    "li",
    { "data-testid": `escalation-${index}` },
    stamp ? h("time", { datetime: stamp }, when(stamp)) : null,
    " ",
    rest.map(([k, v]) => h("span", { class: "kv" }, h("b", {}, k), ` ${typeof v === "object" ? JSON.stringify(v) : v} `)),
  );
}

/** The Agents & models view's content. */
export function renderAgents(status, metrics, metricsError) {
  const agents = status.agents || [];
  const models = status.models || [];
  const escalations = metrics?.escalations || [];
  return h(
    "div",
    {},
    metricsError ? h("p", { class: "reason tone-warn" }, `metrics: ${metricsError}`) : null,
    h("h2", { class: "sub" }, "Agents"),
    agents.length ? h("div", { class: "grid wide" }, agents.map((a) => agentCard(a, metrics))) : empty("No agent deployed."),
    h("h2", { class: "sub" }, "Models"),
    models.length ? h("div", { class: "grid wide" }, models.map((m) => modelCard(m, metrics))) : empty("No model deployed."),
    h("h2", { class: "sub" }, "Escalations"),
    escalations.length
      ? h("ul", { class: "items", "data-testid": "escalations" }, escalations.slice(-50).reverse().map(escalation))
      : empty("No escalation in the window."),
  );
}
