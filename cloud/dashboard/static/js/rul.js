// Remaining useful life on every page that has a place for it:
// - overview: the EST. LIFE countdown of every machine (#rul-fleet) and an EST. LIFE card in
//   the health matrix for the selected machine, coloured by the admin's bands, with the trend;
// - machine page: the RUL history with its interval band, and the critical sensors;
// - admin page: the colour bands (green above, yellow above, red below).
// Everything comes from /api/v1/rul*; a machine without a model says so, never a made-up number.

import { api } from "./api.js";
import { el, hoursText, timeOf } from "./format.js";

const POLL_MS = 5000;
const ARROWS = { stable: "→", degrading: "↘", accelerating: "⇊" };
const STATE_OF_BAND = { green: "nominal", yellow: "warning", red: "critical", none: "none" };

/** green / yellow / red / none for an answer of GET /api/v1/machines/{id}/rul. */
export function bandOf(doc, bands) {
  if (!doc || doc.rul_hours === null || doc.rul_hours === undefined) return "none";
  if (doc.rul_hours > bands.green_hours) return "green";
  if (doc.rul_hours > bands.yellow_hours) return "yellow";
  return "red";
}

/** "≥ 10 d", "3 d 4 h", "5.2 h", "42 min"; or why there is no number. */
export function countdownText(doc) {
  if (!doc) return "—";
  if (doc.rul_hours === null || doc.rul_hours === undefined) {
    if (doc.status === "no_model") return "NO MODEL";
    return "WAITING";
  }
  const text = hoursText(doc.rul_hours);
  return doc.at_least ? `≥ ${text}` : text;
}

export function trendArrow(trend) {
  return ARROWS[trend] || "";
}

function currentMachine() {
  const dash = window.__dash;
  if (dash && dash.machine) return dash.machine;
  const match = location.pathname.match(/^\/machines\/([^/]+)/);
  if (match) return decodeURIComponent(match[1]);
  return new URL(location.href).searchParams.get("machine");
}

class FleetCountdown {
  constructor(list) {
    this.list = list;
    this.rows = new Map();
    this.card = null;
    this.last = null;
    window.__rul = this; // tests read the state from here
  }

  healthCard() {
    if (this.card) return this.card;
    const matrix = document.getElementById("health");
    if (!matrix) return null;
    const state = el("span", { class: "state", text: "—" });
    const detail = el("span", { class: "detail", text: "" });
    const card = el(
      "li",
      { class: "health-card rul-card", dataset: { category: "rul", state: "none" } },
      el("span", { class: "cat", text: "EST. LIFE" }),
      state,
      detail,
    );
    matrix.append(card);
    this.card = { card, state, detail };
    return this.card;
  }

  render(fleet) {
    this.last = fleet;
    const seen = new Set();
    for (const doc of fleet.machines) {
      seen.add(doc.machine_id);
      let row = this.rows.get(doc.machine_id);
      if (!row) {
        const name = el("a", {
          class: "rul-machine",
          href: `/machines/${encodeURIComponent(doc.machine_id)}`,
          text: doc.machine_id,
        });
        const value = el("span", { class: "rul-value" });
        const arrow = el("span", { class: "rul-arrow" });
        const note = el("span", { class: "rul-note" });
        const root = el("li", { class: "rul-row", dataset: { machine: doc.machine_id } }, name, value, arrow, note);
        row = { root, value, arrow, note };
        this.rows.set(doc.machine_id, row);
        this.list.append(root);
      }
      const band = bandOf(doc, fleet.bands);
      row.root.dataset.band = band;
      row.root.dataset.status = doc.status;
      row.root.dataset.hours = doc.rul_hours === null ? "" : String(doc.rul_hours);
      row.root.dataset.trend = doc.degradation_trend || "";
      row.value.textContent = countdownText(doc);
      row.arrow.textContent = trendArrow(doc.degradation_trend);
      row.arrow.title = doc.degradation_trend || "";
      row.note.textContent = doc.status === "ok" ? "" : doc.status.replace(/_/g, " ");
      row.root.title = doc.message || "";
    }
    for (const [machine, row] of this.rows) {
      if (!seen.has(machine)) {
        row.root.remove();
        this.rows.delete(machine);
      }
    }
    const empty = document.getElementById("rul-empty");
    if (empty) empty.hidden = fleet.machines.length > 0;
    this.renderCard(fleet);
  }

  renderCard(fleet) {
    const card = this.healthCard();
    if (!card) return;
    const machine = currentMachine();
    const doc = fleet.machines.find((m) => m.machine_id === machine);
    const band = bandOf(doc, fleet.bands);
    card.card.dataset.state = STATE_OF_BAND[band];
    card.card.dataset.band = band;
    const arrow = doc ? trendArrow(doc.degradation_trend) : "";
    card.state.textContent = `${countdownText(doc)}${arrow ? ` ${arrow}` : ""}`;
    card.detail.textContent = doc ? doc.message || (doc.degradation_trend || "") : "";
  }
}

function startFleet() {
  const list = document.getElementById("rul-fleet");
  if (!list) return;
  const board = new FleetCountdown(list);
  const poll = async () => {
    try {
      board.render(await api("/api/v1/rul"));
    } catch {
      // The next poll tries again; the page's own connection indicator reports outages.
    }
    setTimeout(poll, POLL_MS);
  };
  poll();
}

/** The RUL history with its interval band, drawn on a canvas (no inline styles, CSP-safe). */
export function drawHistory(canvas, points, bands) {
  const width = canvas.clientWidth || 600;
  const height = canvas.clientHeight || 220;
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  if (!ctx) return;
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, width, height);
  if (points.length === 0) return;
  const pad = { left: 52, right: 10, top: 10, bottom: 22 };
  const times = points.map((p) => new Date(p.time).getTime());
  const t0 = times[0];
  const t1 = Math.max(times[times.length - 1], t0 + 1);
  const top = Math.max(...points.map((p) => p.high_hours), 1);
  const x = (t) => pad.left + ((t - t0) / (t1 - t0)) * (width - pad.left - pad.right);
  const y = (h) => pad.top + (1 - h / top) * (height - pad.top - pad.bottom);
  const css = getComputedStyle(document.documentElement);
  const color = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
  // Band thresholds as dashed lines.
  ctx.setLineDash([4, 4]);
  ctx.lineWidth = 1;
  for (const [hours, name] of [
    [bands.green_hours, "--nominal"],
    [bands.yellow_hours, "--warning"],
  ]) {
    if (hours < top) {
      ctx.strokeStyle = color(name, "#888");
      ctx.beginPath();
      ctx.moveTo(pad.left, y(hours));
      ctx.lineTo(width - pad.right, y(hours));
      ctx.stroke();
    }
  }
  ctx.setLineDash([]);
  // The interval band.
  ctx.fillStyle = "rgba(34, 211, 238, 0.18)";
  ctx.beginPath();
  points.forEach((p, i) => (i ? ctx.lineTo(x(times[i]), y(p.high_hours)) : ctx.moveTo(x(times[i]), y(p.high_hours))));
  for (let i = points.length - 1; i >= 0; i--) ctx.lineTo(x(times[i]), y(points[i].low_hours));
  ctx.closePath();
  ctx.fill();
  // The estimate.
  ctx.strokeStyle = color("--accent", "#22d3ee");
  ctx.lineWidth = 2;
  ctx.beginPath();
  points.forEach((p, i) => (i ? ctx.lineTo(x(times[i]), y(p.rul_hours)) : ctx.moveTo(x(times[i]), y(p.rul_hours))));
  ctx.stroke();
  // Axes labels.
  ctx.fillStyle = color("--muted", "#7b8da1");
  ctx.font = "11px monospace";
  ctx.fillText(`${top.toFixed(0)} h`, 4, pad.top + 8);
  ctx.fillText("0 h", 4, height - pad.bottom);
  ctx.fillText(timeOf(points[0].time), pad.left, height - 6);
  const lastLabel = timeOf(points[points.length - 1].time);
  ctx.fillText(lastLabel, Math.max(pad.left, width - pad.right - ctx.measureText(lastLabel).width), height - 6);
}

function startMachinePanel() {
  const panel = document.getElementById("rul-panel");
  if (!panel) return;
  const machine = currentMachine();
  if (!machine) return;
  const id = encodeURIComponent(machine);
  const value = document.getElementById("rul-now");
  const meta = document.getElementById("rul-meta");
  const sensors = document.getElementById("rul-sensors");
  const canvas = document.getElementById("rul-chart");
  const state = { doc: null, points: [] };
  window.__rulMachine = state; // tests read the state from here
  const poll = async () => {
    try {
      const [doc, history, bands] = await Promise.all([
        api(`/api/v1/machines/${id}/rul`),
        api(`/api/v1/machines/${id}/rul/history?limit=1440`),
        api("/api/v1/rul/bands"),
      ]);
      state.doc = doc;
      state.points = history.points;
      const band = bandOf(doc, bands);
      panel.dataset.band = band;
      panel.dataset.status = doc.status;
      const arrow = trendArrow(doc.degradation_trend);
      value.textContent = `${countdownText(doc)}${arrow ? ` ${arrow}` : ""}`;
      const parts = [];
      if (doc.interval) {
        const level = Math.round(doc.interval.level * 100);
        parts.push(`${level}% interval ${hoursText(doc.interval.low_hours)} – ${hoursText(doc.interval.high_hours)}`);
      }
      if (doc.degradation_trend) parts.push(doc.degradation_trend);
      if (doc.model && doc.model.version) parts.push(`model ${doc.model.version}`);
      if (doc.time) parts.push(timeOf(doc.time));
      if (doc.message) parts.push(doc.message);
      meta.textContent = parts.join(" · ");
      sensors.replaceChildren(
        ...doc.critical_sensors.map((s) =>
          el(
            "li",
            { dataset: { sensor: s.sensor } },
            el("span", { class: "rul-sensor", text: s.sensor }),
            el("span", { class: "rul-share", text: `${Math.round(s.share * 100)}%` }),
          ),
        ),
      );
      drawHistory(canvas, history.points, bands);
    } catch {
      // Tried again at the next poll.
    }
    setTimeout(poll, POLL_MS);
  };
  poll();
}

function startBandsForm() {
  const form = document.getElementById("rul-bands");
  if (!form) return;
  const green = document.getElementById("rul-green");
  const yellow = document.getElementById("rul-yellow");
  const status = document.getElementById("rul-bands-status");
  api("/api/v1/rul/bands").then((bands) => {
    green.value = String(bands.green_hours);
    yellow.value = String(bands.yellow_hours);
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const saved = await api("/api/v1/rul/bands", {
        method: "PUT",
        body: { green_hours: Number(green.value), yellow_hours: Number(yellow.value) },
      });
      status.textContent = `Saved: green above ${saved.green_hours} h, yellow above ${saved.yellow_hours} h.`;
      status.dataset.state = "ok";
    } catch (error) {
      status.textContent = `Not saved: ${error.message}`;
      status.dataset.state = "error";
    }
  });
}

startFleet();
startMachinePanel();
startBandsForm();
