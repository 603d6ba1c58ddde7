// The words, ages and sizes edgectl prints, so the page and the CLI agree.

const TONES = {
  ready: "good", active: "good",
  pending: "warn", loading: "warn", starting: "warn", suspect: "warn", warning: "warn",
  failed: "bad", "not-ready": "bad", untrusted: "bad", error: "bad",
  revoked: "revoked",
  unloading: "dim", stopping: "dim", draining: "dim", cordoned: "dim",
  superseded: "dim", unknown: "dim", info: "dim",
};

/** `NODE_STATE_NOT_READY` (or its number) → `not-ready`. */
export function word(value, prefix) {
  if (typeof value === "number") return value === 0 ? "unknown" : String(value);
  const text = String(value || "").replace(prefix, "").toLowerCase().replaceAll("_", "-");
  return !text || text === "unspecified" ? "unknown" : text;
}

export const nodeState = (v) => word(v, "NODE_STATE_");
export const modelState = (v) => word(v, "MODEL_STATE_");
export const agentState = (v) => word(v, "AGENT_STATE_");
export const severity = (v) => word(v, "SEVERITY_");

/** The colour class of a state word ("failed: out of memory" counts as "failed"). */
export function tone(text) {
  return TONES[String(text).split(" ", 1)[0].replace(/[:,]$/, "")] || "plain";
}

/** Seconds since an RFC 3339 time, or null when unset. */
export function secondsSince(stamp, now = Date.now()) {
  if (!stamp || stamp.startsWith("1970-01-01T00:00:00")) return null;
  const at = Date.parse(stamp);
  return Number.isNaN(at) ? null : Math.max(0, Math.floor((now - at) / 1000));
}

/** kubectl-style age: `5s`, `3m`, `2h`, `4d`; `-` for never. */
export function age(stamp, now) {
  const s = secondsSince(stamp, now);
  if (s === null) return "-";
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 48 * 3600) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

/** A local date and time for a tooltip or a revision list. */
export function when(stamp) {
  if (secondsSince(stamp) === null) return "-";
  return new Date(stamp).toLocaleString();
}

/** Bytes in binary units: `512MiB`, `1.5GiB`; `-` for zero (unknown). */
export function size(count) {
  let value = Number(count || 0);
  if (value <= 0) return "-";
  let unit = "B";
  for (const next of ["KiB", "MiB", "GiB", "TiB"]) {
    if (value < 1024) break;
    value /= 1024;
    unit = next;
  }
  const number = unit === "B" || value >= 100 ? value.toFixed(0) : value.toFixed(1).replace(/\.0$/, "");
  return `${number}${unit}`;
}

/** A latency: `120ms`, `1.4s`; `-` for none measured. */
export function millis(value) {
  const v = Number(value || 0);
  if (v <= 0) return "-";
  return v < 1000 ? `${v.toFixed(0)}ms` : `${(v / 1000).toFixed(1)}s`;
}

/** `45%` of a 0..1 fraction. */
export const percent = (fraction) => `${Math.round(Math.min(1, Math.max(0, fraction)) * 100)}%`;

/** `2/3` of the items whose state word is `ready`. */
export function readyOf(states) {
  return `${states.filter((s) => s === "ready").length}/${states.length}`;
}

/** A node's state word plus its mark when that says more: `ready, cordoned`. */
export function nodeStateText(node) {
  const state = nodeState(node.state);
  return node.mark && node.mark !== state ? `${state}, ${node.mark}` : state;
}

/** Whether an untrusted node's reason says an operator revoked it. */
export const isRevoked = (node) =>
  nodeState(node.state) === "untrusted" && /revok/i.test(node.reason || "");
