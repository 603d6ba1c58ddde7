// Events: the controller's event records as they happen (newest first),
// filtered by object and by severity or any text.

import { h } from "../dom.js";
import { age, severity, when } from "../format.js";

const KEEP = 500;
const seen = new Set();
let list;
let objectFilter;
let textFilter;

function matches(li) {
  const object = objectFilter.value.trim().toLowerCase();
  const text = textFilter.value.trim().toLowerCase();
  return (!object || li.dataset.object.includes(object)) && (!text || li.dataset.text.includes(text));
}

function applyFilter() {
  for (const li of list.children) li.hidden = !matches(li);
}

/** Build the view's fixed parts inside `root` (once). */
export function mountEvents(root) {
  objectFilter = h("input", { type: "search", id: "events-object", "data-testid": "events-object", placeholder: "node/edge-1" });
  textFilter = h("input", { type: "search", id: "events-text", "data-testid": "events-text", placeholder: "warning, NodeNotReady …" });
  list = h("ul", { class: "events", "data-testid": "events", "aria-live": "polite", "aria-relevant": "additions" });
  objectFilter.addEventListener("input", applyFilter);
  textFilter.addEventListener("input", applyFilter);
  root.append(
    h("div", { class: "row filters" },
      h("label", { for: "events-object" }, "Object "), objectFilter,
      h("label", { for: "events-text" }, "Severity or text "), textFilter),
    list,
  );
}

/** Add an Event record (ignored when already shown), newest first. */
let unstored = 0;

export function addEvent(event) {
  // An event no store took has no id: shown once, never matched with another.
  const stored = event.id && String(event.id) !== "0";
  const id = stored ? String(event.id) : `u${++unstored}`;
  if (seen.has(id)) return;
  seen.add(id);
  const level = severity(event.severity);
  const li = h(
    "li",
    { "data-testid": `event-${id}`, class: `event sev-${level}` },
    h("time", { datetime: event.time, title: when(event.time), "data-time": event.time }, age(event.time)),
    h("span", { class: `badge tone-${level === "error" ? "bad" : level === "warning" ? "warn" : "dim"}` }, level),
    h("b", { class: "reason-word" }, event.reason || "-"),
    h("span", { class: "object" }, event.object || "-"),
    h("span", { class: "message" }, event.message || ""),
  );
  li.dataset.object = (event.object || "").toLowerCase();
  li.dataset.text = [level, event.reason, event.object, event.message].join(" ").toLowerCase();
  li.hidden = !matches(li);
  // Events come in id order; an older one (from a status poll) goes where it belongs.
  const order = (key) => (key.startsWith("u") ? Infinity : Number(key));
  const before = [...list.children].find((other) => order(other.dataset.id) < order(id));
  li.dataset.id = id;
  list.insertBefore(li, before || null);
  while (list.children.length > KEEP) {
    seen.delete(list.lastElementChild.dataset.id);
    list.lastElementChild.remove();
  }
}

/** Refresh the ages shown (once a second while visible). */
export function tickEvents() {
  for (const time of list.querySelectorAll("time[data-time]")) {
    const text = age(time.dataset.time);
    if (time.textContent !== text) time.textContent = text;
  }
}
