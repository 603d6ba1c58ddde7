// Small SVG line charts of a metric series (no library: a polyline per line).

import { h } from "./dom.js";

const WIDTH = 240;
const HEIGHT = 64;
const PAD = 4;

// Runs of samples with a value (a step with no answered request has null latency):
// one polyline each, so a gap shows as a gap.
function runs(samples, pick, top, start, span) {
  const out = [];
  let run = [];
  for (const s of samples) {
    const v = pick(s);
    if (v === null || v === undefined) {
      if (run.length) out.push(run);
      run = [];
      continue;
    }
    const x = PAD + ((s.t - start) / span) * (WIDTH - 2 * PAD);
    const y = HEIGHT - PAD - (Number(v) / top) * (HEIGHT - 2 * PAD);
    run.push(`${x.toFixed(1)},${y.toFixed(1)}`);
  }
  if (run.length) out.push(run);
  return out.map((r) => (r.length === 1 ? [r[0], r[0]] : r).join(" "));
}

/** A chart of `lines` ([{label, pick, cls}]) over `samples` ([{t, ...}]), with its
 * last values as the accessible name and a legend beside it. */
export function lineChart({ title, samples, lines, unit, testid }) {
  const last = (l) => [...samples].reverse().map(l.pick).find((v) => v !== null && v !== undefined);
  const summary = lines.map((l) => `${l.label} ${last(l) === undefined ? "-" : `${Number(last(l)).toFixed(1)}${unit}`}`);
  const label = `${title}: ${summary.join(", ") || "no data"}`;
  const top = Math.max(1e-9, ...samples.flatMap((s) => lines.map((l) => Number(l.pick(s) || 0))));
  const start = samples.length ? samples[0].t : 0;
  const span = Math.max(1, (samples.length ? samples[samples.length - 1].t : 0) - start);
  const svg = h(
    "svg:svg",
    { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": label, class: "chart" },
    h("svg:title", {}, label),
    h("svg:line", { x1: PAD, x2: WIDTH - PAD, y1: HEIGHT - PAD, y2: HEIGHT - PAD, class: "axis" }),
    lines.map((l) =>
      runs(samples, l.pick, top, start, span).map((pts) => h("svg:polyline", { points: pts, class: l.cls })),
    ),
  );
  return h(
    "figure",
    { class: "chart-box", "data-testid": testid },
    h("figcaption", {}, title, h("span", { class: "chart-max" }, ` max ${top.toFixed(1)}${unit}`)),
    svg,
    h(
      "ul",
      { class: "legend" },
      lines.map((l, i) => h("li", { class: l.cls }, summary[i] || l.label)),
    ),
  );
}
