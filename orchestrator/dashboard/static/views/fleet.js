// Fleet: every node with its state, heartbeat, memory, runtime capacity,
// what runs there, and the maintenance actions.

import { h, signature } from "../dom.js";
import {
  age, agentState, isRevoked, modelState, nodeState, size, when,
} from "../format.js";
import { badge, empty, facts, progressBar } from "./widgets.js";

function stateCell(node) {
  const state = nodeState(node.state);
  const parts = [badge(state, { "data-testid": "node-state" })];
  if (isRevoked(node)) parts.push(" ", badge("revoked"));
  if (node.mark && node.mark !== state) parts.push(" ", badge(node.mark, { "data-testid": "node-mark" }));
  return h("span", { class: "states" }, parts);
}

function memory(node) {
  const used = Number(node.load?.memory_used_bytes || 0);
  const total = Number(node.capacity?.memory_total_bytes || 0);
  if (!total) return size(used);
  const text = `${used ? size(used) : "0B"} / ${size(total)}`;
  return h("span", {}, text, h("meter", { min: 0, max: total, value: used, "aria-label": "memory used" }));
}

function capacity(node) {
  const load = node.load || {};
  const slots = Number(load.slots_total || 0)
    ? `${load.slots_busy}/${load.slots_total} slots busy`
    : `${load.slots_busy || 0} busy (no fixed slots)`;
  return `${slots}, queue ${load.queue_depth || 0} (runtime ${load.runtime_queue_depth || 0}), in-flight ${load.in_flight || 0}`;
}

function modelItem(node, model) {
  const state = modelState(model.state);
  const download = model.download;
  const total = Number(download?.bytes_total || 0);
  let bar = null;
  if (download && total) {
    const from = download.source ? ` from ${download.source}` : "";
    bar = progressBar(Number(download.bytes_done) / total, `download${from}`, {
      "data-testid": `download-${node.id}-${model.alias}`,
    });
  } else if (state === "loading" && model.progress > 0) {
    bar = progressBar(model.progress, "load", { "data-testid": `load-${node.id}-${model.alias}` });
  }
  const slots = model.capacity?.slots_total !== undefined
    ? ` · slots ${model.capacity.slots_busy}/${model.capacity.slots_total}` : "";
  return h(
    "li",
    { "data-key": `m-${model.alias}` },
    h("span", { class: "name" }, model.alias),
    " ",
    badge(state === "failed" && model.reason ? `failed: ${model.reason}` : state),
    h("span", { class: "muted" }, ` ${model.runtime || ""} ${size(model.memory_bytes)}${slots}`),
    state === "loading" && model.reason ? h("div", { class: "muted" }, model.reason) : null,
    bar,
  );
}

function agentItem(agent) {
  const state = agentState(agent.state);
  return h(
    "li",
    { "data-key": `a-${agent.name}` },
    h("span", { class: "name" }, agent.name),
    " ",
    badge(state === "failed" && agent.reason ? `failed: ${agent.reason}` : state),
    h("span", { class: "muted" }, ` in-flight ${agent.in_flight || 0}, queue ${agent.queue_depth || 0}`),
  );
}

function actionButton(kind, node, disabled, label) {
  return h(
    "button",
    {
      type: "button",
      class: kind === "revoke" ? "danger" : "",
      "data-testid": `${kind}-${node.id}`,
      "data-action": kind,
      "data-node": node.id,
      "aria-label": `${label} node ${node.id}`,
      disabled,
    },
    label,
  );
}

function actions(node) {
  const mark = node.mark || "";
  const untrusted = nodeState(node.state) === "untrusted";
  return h(
    "div",
    { class: "actions" },
    actionButton("cordon", node, mark !== "", "Cordon"),
    actionButton("drain", node, mark === "draining", "Drain"),
    actionButton("uncordon", node, mark === "", "Uncordon"),
    actionButton("revoke", node, untrusted, "Revoke"),
  );
}

// What a card shows: the node without its heartbeat time, plus the ages as shown.
function cardSignature(node) {
  const { last_heartbeat: beat, ...rest } = node;
  return signature(rest, age(beat), age(node.marked_at));
}

function nodeCard(node, shown) {
  const testid = `node-${node.id}`;
  const sig = cardSignature(node);
  // Unchanged since the last refresh: a stand-in that keeps the card on the page as is.
  if (shown.get(testid) === sig) return h("article", { "data-testid": testid, "data-sig": sig });
  const state = nodeState(node.state);
  const labels = Object.entries(node.labels || {}).sort();
  return h(
    "article",
    { class: `card node tone-border-${state}`, "data-testid": testid, "data-sig": sig, "aria-label": `node ${node.id}` },
    h("header", {}, h("h3", {}, node.id), " ", stateCell(node)),
    node.reason ? h("p", { class: `reason tone-${state === "ready" ? "plain" : "bad"}` }, node.reason) : null,
    node.mark ? h("p", { class: "muted" }, `${node.mark} ${age(node.marked_at)} ago${node.mark_reason ? `: ${node.mark_reason}` : ""}`) : null,
    facts([
      ["Heartbeat", age(node.last_heartbeat) === "-" ? "never" : `${age(node.last_heartbeat)} ago`],
      ["Address", node.address || "-"],
      ["Version", node.version || "-"],
      ["Memory", memory(node)],
      ["Capacity", capacity(node)],
      ["Labels", labels.length ? h("span", {}, labels.map(([k, v]) => h("code", { class: "label" }, `${k}=${v}`))) : "-"],
    ]),
    h("h4", {}, `Models (${(node.models || []).length})`),
    (node.models || []).length ? h("ul", { class: "items" }, node.models.map((m) => modelItem(node, m))) : empty("none"),
    h("h4", {}, `Agents (${(node.agents || []).length})`),
    (node.agents || []).length ? h("ul", { class: "items" }, node.agents.map(agentItem)) : empty("none"),
    actions(node),
  );
}

/** The Fleet view's content for a ClusterStatus; `root` holds what is shown now. */
export function renderFleet(status, root) {
  const shown = new Map();
  for (const card of root.querySelectorAll("article[data-sig]")) shown.set(card.dataset.testid, card.dataset.sig);
  const nodes = status.nodes || [];
  const count = (word) => nodes.filter((n) => nodeState(n.state) === word).length;
  const summary = `${nodes.length} node${nodes.length === 1 ? "" : "s"}: ${count("ready")} ready, ${count("suspect")} suspect, ${count("not-ready")} not-ready, ${count("untrusted")} untrusted`;
  return h(
    "div",
    {},
    h("p", { class: "summary", "data-testid": "fleet-summary" }, summary),
    nodes.length
      ? h("div", { class: "grid", "data-testid": "nodes" }, nodes.map((n) => nodeCard(n, shown)))
      : empty("No node has joined yet. Start one with `edge-node` and a join token (`edgectl token create`)."),
  );
}

