// The operator's actions: node maintenance and rollback, each confirmed first,
// with the controller's answer (or its error message) shown after.

import { post } from "./api.js";
import { confirmAction } from "./dialog.js";

const NODE_ACTIONS = {
  cordon: {
    title: "Cordon node", label: "Cordon", reason: true,
    text: (id) => `Cordon ${id}: it gets no new work; what runs there stays.`,
    done: (id, r) => (r.changed ? `${id} cordoned` : `${id} was already cordoned (nothing changed)`),
  },
  drain: {
    title: "Drain node", label: "Drain", reason: true,
    text: (id) => `Drain ${id}: cordon it and move its agents and models to other nodes, each replacement ready before the replica it replaces stops.`,
    done: (id, r) => (r.changed ? `${id} draining` : `${id} was already draining (nothing changed)`),
  },
  uncordon: {
    title: "Uncordon node", label: "Uncordon", reason: false,
    text: (id) => `Uncordon ${id}: it takes work again (pinned work may come back).`,
    done: (id, r) => (r.changed ? `${id} uncordoned` : `${id} was not cordoned (nothing changed)`),
  },
  revoke: {
    title: "Revoke node", label: "Revoke", reason: true, danger: true,
    text: (id) => `Revoke ${id}: the controller stops trusting it, closes its link and places nothing on it until it joins again with a new token.`,
    done: (id, r) => `${id} revoked (${r.certificates_revoked || 0} certificates revoked)`,
  },
};

function report(text, isError) {
  const box = document.getElementById("action-result");
  box.querySelector(".text").textContent = text;
  box.className = `action-result ${isError ? "tone-bad" : "tone-good"}`;
  box.hidden = false;
}

/** Close the result line (its ✕ button). */
export function dismissResult() {
  document.getElementById("action-result").hidden = true;
}

/** Ask, then run a node action; `after()` refreshes the page's data. */
export async function nodeAction(kind, nodeId, after) {
  const spec = NODE_ACTIONS[kind];
  const answer = await confirmAction({
    title: spec.title, message: spec.text(nodeId), confirmLabel: spec.label,
    danger: spec.danger, withReason: spec.reason,
  });
  if (!answer) return;
  try {
    const reply = await post(`nodes/${encodeURIComponent(nodeId)}/${kind}`, { reason: answer.reason });
    report(spec.done(nodeId, reply), false);
  } catch (err) {
    report(`${spec.title} ${nodeId} failed: ${err.message}`, true);
  }
  after();
}

/** Ask, then roll a deployment back to a revision (stored as a new revision). */
export async function rollback(deployment, revision, after) {
  const answer = await confirmAction({
    title: "Roll back deployment", confirmLabel: "Roll back", danger: true,
    message: `Apply revision ${revision} of ${deployment} again, as a new revision.`,
  });
  if (!answer) return;
  try {
    const reply = await post(`deployments/${encodeURIComponent(deployment)}/rollback`, { to: Number(revision) });
    const number = reply.revision?.number;
    const steps = reply.plan?.steps?.length || 0;
    report(
      reply.changed
        ? `${deployment} rolled back to revision ${revision}: now revision ${number} (${steps} steps)`
        : `${deployment}: revision ${revision} is what runs already (nothing changed)`,
      false,
    );
  } catch (err) {
    report(`Roll back ${deployment} failed: ${err.message}`, true);
  }
  after();
}
