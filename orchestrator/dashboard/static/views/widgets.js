// Pieces several views share: state badges, progress bars, empty notes.

import { h } from "../dom.js";
import { percent, tone } from "../format.js";

/** A state word in its colour (`ready` green, `suspect` yellow, `not-ready` red …). */
export const badge = (text, attrs = {}) =>
  h("span", { ...attrs, class: `badge tone-${tone(text)}` }, text);

/** A labelled progress bar of a 0..1 fraction. */
export function progressBar(fraction, label, attrs = {}) {
  const value = Math.round(Math.min(1, Math.max(0, fraction)) * 100);
  return h(
    "div",
    { ...attrs, class: "progress" },
    h("progress", { max: 100, value, "aria-label": label }),
    h("span", { class: "progress-text" }, `${label} ${percent(fraction)}`),
  );
}

/** A muted line saying there is nothing to show yet. */
export const empty = (text) => h("p", { class: "empty" }, text);

/** A term/value list from [label, value] pairs (values may be elements). */
export const facts = (pairs) =>
  h(
    "dl",
    { class: "facts" },
    pairs.map(([term, value]) => h("div", {}, h("dt", {}, term), h("dd", {}, value))),
  );
