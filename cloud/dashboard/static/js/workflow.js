// The anomaly page's workflow and context (anomaly.js draws the detection and the report):
// state with who / when / note and the acknowledge / resolve buttons, the readings around the
// anomaly for its contributing sensors, their shares, the model and thresholds that judged it,
// and similar past anomalies of the machine. Workflow steps taken elsewhere arrive live.

import { api, ApiError } from "./api.js";
import { el, fmt, timeOf } from "./format.js";
import { LiveStream } from "./live.js";
import { auditText, stepButtons } from "./workflow_step.js";

const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#22d3ee", "#f5b40b", "#a78bfa", "#22c55e", "#fb7185", "#94a3b8"];

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function chart(window, sensors, at) {
  const width = 600;
  const height = 160;
  const times = window.map((p) => Date.parse(p.timestamp));
  const t0 = Math.min(...times);
  const t1 = Math.max(...times, t0 + 1);
  const root = svg("svg", { class: "window-chart", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img", "aria-label": "Readings around the anomaly" });
  sensors.forEach((sensor, i) => {
    const points = window.filter((p) => typeof p.values[sensor] === "number");
    if (!points.length) return;
    const values = points.map((p) => p.values[sensor]);
    const lo = Math.min(...values);
    const hi = Math.max(...values, lo + 1e-9);
    const coords = points.map((p) => {
      const x = ((Date.parse(p.timestamp) - t0) / (t1 - t0)) * width;
      const y = height - 8 - ((p.values[sensor] - lo) / (hi - lo)) * (height - 16);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    root.append(svg("polyline", { points: coords.join(" "), stroke: COLOURS[i % COLOURS.length], "data-sensor": sensor }));
  });
  const x = ((Date.parse(at) - t0) / (t1 - t0)) * width;
  root.append(svg("line", { class: "marker", x1: x, x2: x, y1: 0, y2: height }));
  return root;
}

function legend(sensors) {
  return el(
    "div",
    { class: "legend" },
    ...sensors.map((s, i) => {
      const item = el("span", { text: s });
      item.style.setProperty("--swatch", COLOURS[i % COLOURS.length]);
      return item;
    }),
  );
}

function workflowSection(user, anomaly, onDone) {
  return [
    el("h2", { id: "h-workflow", text: "Workflow" }),
    el("p", {}, el("span", { class: "state", id: "workflow-state", dataset: { state: anomaly.state }, text: anomaly.state }), " ", el("span", { class: "sev", dataset: { severity: anomaly.severity }, text: anomaly.severity })),
    el("p", { class: "workflow-audit", id: "workflow-audit", text: auditText(anomaly) || "nobody has acted on it yet" }),
    el("div", { class: "workflow-buttons" }, ...stepButtons(user, anomaly, onDone)),
  ];
}

function contextSection(ctx, anomaly) {
  const sensors = ctx.contributions.map((c) => c.sensor);
  const shares = el(
    "table",
    { class: "anomalies", id: "context-contributions" },
    el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "Sensor" }), el("th", { scope: "col", text: "Share" }), el("th", { scope: "col", text: "Limits now (warn / critical)" }))),
    el(
      "tbody",
      {},
      ...ctx.contributions.map((c) => {
        const bar = el("span", { class: "share-bar" });
        bar.style.width = `${Math.round(c.share * 80)}px`;
        const t = ctx.thresholds[c.sensor];
        const limits = t ? `${fmt(t.warn_low)} – ${fmt(t.warn_high)} / ${fmt(t.critical_low)} – ${fmt(t.critical_high)} (${t.source})` : "—";
        return el("tr", { dataset: { sensor: c.sensor } }, el("td", { text: c.sensor }), el("td", {}, bar, `${Math.round(c.share * 100)} %`), el("td", { text: limits }));
      }),
    ),
  );
  const model = ctx.model
    ? `${ctx.model.method}${ctx.model.model_version ? ` · model ${ctx.model.model_version}` : ""}${ctx.model.registry_version ? ` · registry v${ctx.model.registry_version} (${ctx.model.strategy})` : ""}`
    : "the thresholds (limits below)";
  const similar = ctx.similar.length
    ? el(
        "ul",
        { id: "context-similar" },
        ...ctx.similar.map((s) =>
          el("li", {}, el("a", { href: `/anomalies/${s.id}`, text: timeOf(s.timestamp) }), ` ${s.sensors.join(", ")} · similarity ${fmt(s.similarity)} · ${s.state}${s.note ? ` — “${s.note}”` : ""}`),
        ),
      )
    : el("p", { class: "empty", id: "context-similar", text: "No similar past anomaly on this machine." });
  return [
    el("h2", { id: "h-context", text: "Context" }),
    el("p", { class: "meta", id: "context-model", text: `Judged by ${model}` }),
    ctx.window.length ? chart(ctx.window, sensors, anomaly.timestamp) : el("p", { class: "empty", text: "No readings kept around it." }),
    legend(sensors),
    el("p", { class: "meta", text: `${ctx.window.length} readings, ±${ctx.window_s} s` }),
    shares,
    el("h2", { text: "Similar past anomalies" }),
    similar,
  ];
}

async function main() {
  const anomalyId = decodeURIComponent(location.pathname.split("/")[2] || "");
  let user;
  let anomaly;
  let ctx;
  try {
    [user, anomaly, ctx] = await Promise.all([
      api("/api/v1/auth/me"),
      api(`/api/v1/anomalies/${encodeURIComponent(anomalyId)}`),
      api(`/api/v1/anomalies/${encodeURIComponent(anomalyId)}/context`),
    ]);
  } catch (error) {
    if (error instanceof ApiError && (error.status === 404 || error.status === 422)) return;
    throw error;
  }
  const workflow = el("section", { class: "panel", id: "workflow", "aria-labelledby": "h-workflow" });
  const context = el("section", { class: "panel", id: "context", "aria-labelledby": "h-context" });
  const draw = (current) => {
    anomaly = { ...anomaly, ...current };
    workflow.replaceChildren(...workflowSection(user, anomaly, draw));
    workflow.dataset.state = anomaly.state;
  };
  draw(anomaly);
  context.replaceChildren(...contextSection(ctx, anomaly));
  const grid = document.querySelector(".grid-anomaly") || document.getElementById("main");
  grid.prepend(workflow);
  grid.append(context);
  new LiveStream({
    machines: [anomaly.machine_id],
    onEvent: async (event) => {
      if (event.type === "anomaly_state" && event.id === anomaly.id && event.state !== anomaly.state) {
        draw(await api(`/api/v1/anomalies/${anomaly.id}`));
      }
    },
  }).start();
  workflow.dataset.ready = "true";
}

main().catch((error) => {
  document.body.dataset.error = String(error.message || error);
  console.error(error);
});
