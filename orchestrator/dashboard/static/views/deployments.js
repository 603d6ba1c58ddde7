// Deployments: the current revision and rollout progress of each, its stored
// revisions (roll back to one), and the diff between two of them.

import { get } from "../api.js";
import { h } from "../dom.js";
import { age, modelState, when } from "../format.js";
import { badge, empty, facts, progressBar } from "./widgets.js";

const revisions = new Map(); // deployment → {current, list, error, loading}
const diffs = new Map(); // deployment → {from, to, text, error}

/** Fetch the revisions of each deployment whose current revision changed; then `done()`. */
export function refreshRevisions(status, done) {
  for (const dep of status.deployments || []) {
    const current = dep.revision?.number || 0;
    const known = revisions.get(dep.name);
    if (known && (known.current === current || known.loading)) continue;
    revisions.set(dep.name, { ...(known || { list: [] }), current, loading: true });
    get("revisions", { deployment: dep.name })
      .then((answer) => revisions.set(dep.name, { current, list: answer.revisions || [], error: "" }))
      .catch((err) => revisions.set(dep.name, { current: -1, list: known?.list || [], error: err.message }))
      .finally(done);
  }
}

/** Remember a revision chosen in a diff select, so refreshes keep it. */
export function chooseDiff(deployment, role, value) {
  const state = diffs.get(deployment) || {};
  diffs.set(deployment, { ...state, [role]: Number(value) });
}

/** Fetch and keep the diff between the two revisions chosen for `deployment`. */
export async function showDiff(deployment, from, to, done) {
  const base = { from: Number(from), to: Number(to) };
  diffs.set(deployment, { ...base, loading: true });
  done();
  try {
    const answer = await get("diff", { deployment, from, to });
    diffs.set(deployment, { ...base, shown: { ...base, text: answer.diff || "" } });
  } catch (err) {
    diffs.set(deployment, { ...base, error: err.message });
  }
  done();
}

function rollout(dep, status) {
  const desired = dep.agents_desired || 0;
  const ready = dep.agents_ready || 0;
  const items = [];
  for (const node of status.nodes || []) {
    for (const model of node.models || []) {
      const mine = (status.models || []).some((m) => m.alias === model.alias && (m.deployments || []).includes(dep.name));
      if (!mine || modelState(model.state) !== "loading") continue;
      const total = Number(model.download?.bytes_total || 0);
      const fraction = total ? Number(model.download.bytes_done) / total : model.progress || 0;
      const what = total ? "downloading" : "loading";
      items.push(progressBar(fraction, `${model.alias} on ${node.id}: ${what}`, { "data-key": `${node.id}/${model.alias}` }));
    }
  }
  return h(
    "div",
    { class: "rollout", "data-testid": `rollout-${dep.name}` },
    desired ? progressBar(ready / desired, `agents ${ready}/${desired} ready`) : null,
    items,
    (dep.unplaced || []).map((u) =>
      h("p", { class: "reason tone-warn" }, `${u.kind} ${u.name}: ${u.missing} short — ${u.reason}`),
    ),
  );
}

function revisionRow(dep, rev, current) {
  const n = rev.number;
  return h(
    "li",
    { class: "revision", "data-testid": `revision-${dep.name}-${n}` },
    h("b", {}, `#${n}`),
    n === current ? badge("current") : null,
    h("span", {}, ` ${rev.cause || "apply"} · `),
    h("time", { datetime: rev.applied_at, title: when(rev.applied_at) }, `${age(rev.applied_at)} ago`),
    h("span", { class: "muted" }, ` · ${rev.source || "-"} · ${(rev.digest || "").slice(0, 12)}`),
    rev.applied_by ? h("span", { class: "muted" }, ` · by ${rev.applied_by}`) : null,
    n === current
      ? null
      : h("button", {
          type: "button", "data-action": "rollback", "data-deployment": dep.name, "data-revision": n,
          "data-testid": `rollback-${dep.name}-${n}`, "aria-label": `Roll back ${dep.name} to revision ${n}`,
        }, "Roll back here"),
  );
}

function revisionSelect(dep, role, list, chosen) {
  return h(
    "label",
    {},
    `${role} `,
    h(
      "select",
      { "data-testid": `diff-${role}-${dep.name}`, "data-diff": role, "data-deployment": dep.name },
      list.map((r) => h("option", { value: r.number, selected: r.number === chosen }, `#${r.number}`)),
    ),
  );
}

function diffPanel(dep, list) {
  if (list.length < 2) return null;
  const state = diffs.get(dep.name) || {};
  const to = state.to ?? list[0].number;
  const from = state.from ?? list[1].number;
  const shown = state.shown;
  const lines = (shown?.text || "").split("\n").map((line) => {
    const cls = line.startsWith("+++") || line.startsWith("---") ? "diff-head"
      : { "+": "diff-add", "-": "diff-del", "@": "diff-hunk" }[line[0]] || "";
    return h("span", { class: cls }, `${line}\n`);
  });
  return h(
    "div",
    { class: "diff" },
    h("h4", {}, "Diff"),
    h("div", { class: "row" },
      revisionSelect(dep, "from", list, from),
      revisionSelect(dep, "to", list, to),
      h("button", { type: "button", "data-action": "diff", "data-deployment": dep.name, "data-testid": `diff-show-${dep.name}` }, "Show diff"),
    ),
    state.error ? h("p", { class: "reason tone-bad", role: "alert" }, state.error) : null,
    state.loading ? h("p", { class: "muted" }, "loading…") : null,
    shown
      ? h("pre", { class: "diff-text", "data-testid": `diff-output-${dep.name}`, tabindex: 0,
          "aria-label": `diff of ${dep.name} from #${shown.from} to #${shown.to}` },
          shown.text ? lines : "(no difference)")
      : null,
  );
}

function deploymentCard(dep, status) {
  const known = revisions.get(dep.name) || { list: [] };
  const current = dep.revision?.number || 0;
  return h(
    "article",
    { class: "card", "data-testid": `deployment-${dep.name}`, "aria-label": `deployment ${dep.name}` },
    h("header", {}, h("h3", {}, dep.name), h("span", { class: "muted" }, dep.type || "")),
    facts([
      ["Revision", `#${current} (${dep.revision?.cause || "apply"})`],
      ["Applied", h("span", { title: when(dep.revision?.applied_at) }, `${age(dep.revision?.applied_at)} ago`)],
      ["Source", dep.revision?.source || "-"],
    ]),
    h("h4", {}, "Rollout"),
    rollout(dep, status),
    h("h4", {}, "Revisions"),
    known.error ? h("p", { class: "reason tone-bad" }, known.error) : null,
    known.list.length
      ? h("ul", { class: "revisions" }, known.list.map((r) => revisionRow(dep, r, current)))
      : empty("loading…"),
    diffPanel(dep, known.list),
  );
}

/** The Deployments view's content. */
export function renderDeployments(status) {
  const deployments = status.deployments || [];
  return h(
    "div",
    { "data-testid": "deployments" },
    deployments.length
      ? deployments.map((d) => deploymentCard(d, status))
      : empty("Nothing deployed yet: `edgectl apply -f manifest.yaml`."),
  );
}

/** The revisions chosen in a deployment's diff selects. */
export function chosenDiff(root, deployment) {
  const pick = (role) => root.querySelector(`[data-diff=${role}][data-deployment="${CSS.escape(deployment)}"]`)?.value;
  return { from: pick("from"), to: pick("to") };
}
