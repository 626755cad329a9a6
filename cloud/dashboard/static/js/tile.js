// A telemetry tile (docs/manifest.md §4.2): value, unit, trend arrow, 30-reading sparkline,
// average and range, threshold colour and LSTM prediction dots.

import { el, fmt, label } from "./format.js";
import { classify } from "./thresholds.js";

export const HISTORY = 30;
const STATE_COLOURS = { nominal: "#22c55e", warning: "#f5b40b", critical: "#ff2d55" };
const TREND = { up: ["▲", "rising"], down: ["▼", "falling"], steady: ["►", "steady"] };

export class Tile {
  /** @param {{name: string, unit?: string, custom?: boolean}} spec */
  constructor({ name, unit = "", custom = false }) {
    this.name = name;
    this.unit = unit;
    this.values = [];
    this.state = null;
    const id = `tile-${custom ? "c-" : ""}${name}`;
    this.valueNode = el("span", { class: "tile-value", text: "—" });
    this.unitNode = el("span", { class: "tile-unit", text: unit });
    this.trendNode = el("span", { class: "tile-trend", "aria-label": "trend unknown", text: "·" });
    this.stateNode = el("span", { class: "tile-state", text: "NO DATA" });
    this.avgNode = el("dd", { text: "—" });
    this.rangeNode = el("dd", { text: "—" });
    this.canvas = el("canvas", { class: "spark", "aria-hidden": "true" });
    this.dotsNode = el("div", { class: "dots", hidden: true, "aria-label": "predicted states" });
    this.root = el(
      "article",
      {
        class: `tile${custom ? " custom" : ""}`,
        id,
        "aria-labelledby": `${id}-name`,
        dataset: { sensor: name, state: "none" },
      },
      el(
        "div",
        { class: "tile-head" },
        el("h3", { class: "tile-name", id: `${id}-name`, text: label(name) }),
        custom ? el("span", { class: "badge", text: "CUSTOM" }) : null,
        this.trendNode,
      ),
      el("div", { class: "tile-reading" }, this.valueNode, this.unitNode, this.stateNode),
      this.canvas,
      el(
        "dl",
        { class: "tile-stats" },
        el("div", {}, el("dt", { text: "AVG" }), this.avgNode),
        el("div", {}, el("dt", { text: "RANGE" }), this.rangeNode),
      ),
      this.dotsNode,
    );
  }

  reset() {
    this.values = [];
  }

  push(value) {
    if (typeof value !== "number" || !Number.isFinite(value)) return;
    this.values.push(value);
    if (this.values.length > HISTORY) this.values.splice(0, this.values.length - HISTORY);
  }

  setUnit(unit) {
    if (unit && unit !== this.unit) {
      this.unit = unit;
      this.unitNode.textContent = unit;
    }
  }

  setStale(stale) {
    this.root.classList.toggle("is-stale", stale);
  }

  /** @param {object|null} entry thresholds; @param {number[]|null} forecast predicted values */
  render(entry, forecast = null) {
    const values = this.values;
    const last = values.length ? values[values.length - 1] : null;
    this.entry = entry;
    this.state = classify(last, entry);
    this.root.dataset.state = this.state || (last === null ? "none" : "unrated");
    this.valueNode.textContent = fmt(last);
    this.stateNode.textContent = this.state ? this.state.toUpperCase() : last === null ? "NO DATA" : "";
    this.root.setAttribute(
      "aria-description",
      last === null ? "no data" : `${fmt(last)} ${this.unit} ${this.state || ""}`.trim(),
    );
    if (values.length) {
      const avg = values.reduce((a, b) => a + b, 0) / values.length;
      const lo = Math.min(...values);
      const hi = Math.max(...values);
      this.avgNode.textContent = fmt(avg);
      this.rangeNode.textContent = `${fmt(lo, hi)}–${fmt(hi)}`;
      this.renderTrend(values, lo, hi);
    }
    this.renderDots(forecast, entry);
    this.drawSpark();
  }

  renderTrend(values, lo, hi) {
    let trend = "steady";
    if (values.length >= 2) {
      const last = values[values.length - 1];
      const previous = values.slice(-6, -1);
      const mean = previous.reduce((a, b) => a + b, 0) / previous.length;
      const scale = Math.max(hi - lo, Math.abs(mean) * 0.01, 1e-9);
      const change = (last - mean) / scale;
      if (change > 0.15) trend = "up";
      else if (change < -0.15) trend = "down";
    }
    const [glyph, word] = TREND[trend];
    this.trendNode.textContent = glyph;
    this.trendNode.dataset.trend = trend;
    this.trendNode.setAttribute("aria-label", `trend ${word}`);
  }

  renderDots(forecast, entry) {
    if (!Array.isArray(forecast) || !forecast.length) {
      this.dotsNode.hidden = true;
      return;
    }
    const dots = forecast
      .slice(0, 10)
      .map((v) => el("span", { class: "dot", dataset: { state: classify(v, entry) || "none" }, title: fmt(v) }));
    this.dotsNode.replaceChildren(el("span", { text: "PRED" }), ...dots);
    const bad = forecast.filter((v) => classify(v, entry) === "critical").length;
    this.dotsNode.setAttribute("aria-label", `prediction: ${bad} of ${forecast.length} steps critical`);
    this.dotsNode.hidden = false;
  }

  drawSpark() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, width, height);
    const values = this.values;
    if (!values.length) return;
    let lo = Math.min(...values);
    let hi = Math.max(...values);
    if (hi - lo < 1e-9) {
      const pad = Math.abs(hi) * 0.01 || 1;
      lo -= pad;
      hi += pad;
    }
    const pad = 3 * ratio;
    const x = (i) => pad + (i * (width - 2 * pad)) / Math.max(1, HISTORY - 1);
    const y = (v) => height - pad - ((v - lo) * (height - 2 * pad)) / (hi - lo);
    // Threshold lines that fall inside the visible range.
    const entry = this.entry;
    if (entry) {
      ctx.setLineDash([3 * ratio, 3 * ratio]);
      ctx.lineWidth = ratio;
      for (const [limit, colour] of [
        [entry.critical_low, STATE_COLOURS.critical],
        [entry.critical_high, STATE_COLOURS.critical],
        [entry.warn_low, STATE_COLOURS.warning],
        [entry.warn_high, STATE_COLOURS.warning],
      ]) {
        if (typeof limit === "number" && limit >= lo && limit <= hi) {
          ctx.strokeStyle = `${colour}88`;
          ctx.beginPath();
          ctx.moveTo(0, y(limit));
          ctx.lineTo(width, y(limit));
          ctx.stroke();
        }
      }
      ctx.setLineDash([]);
    }
    const offset = HISTORY - values.length;
    const colour = STATE_COLOURS[this.state] || "#22d3ee";
    ctx.strokeStyle = colour;
    ctx.lineWidth = 1.5 * ratio;
    ctx.beginPath();
    values.forEach((v, i) => (i ? ctx.lineTo(x(i + offset), y(v)) : ctx.moveTo(x(i + offset), y(v))));
    ctx.stroke();
    ctx.fillStyle = colour;
    ctx.beginPath();
    ctx.arc(x(HISTORY - 1), y(values[values.length - 1]), 2.5 * ratio, 0, Math.PI * 2);
    ctx.fill();
  }
}
