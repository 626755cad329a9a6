// Machine page: all 50 core sensors and the custom ones by category, live; one sensor's
// history in a zoomable uPlot chart over the history API; the anomaly list.

import uPlot from "/static/vendor/uPlot.esm.js";
import { api, query } from "./api.js";
import { bootSequence, fillMachineSelect, setupPage, showConnection } from "./chrome.js";
import { el, fmt, fmtInt, label, timeOf } from "./format.js";
import { LiveStream, STALE_MS } from "./live.js";
import { ThresholdTable, warnHigh, warnLow } from "./thresholds.js";

const CATEGORIES = ["environmental", "mechanical", "thermal", "electrical", "fluid"];
const SHORT = { nominal: "OK", warning: "WARN", critical: "CRIT" };
const DEFAULT_RANGE_S = 3600;
const CHART_POINTS = 500;
const ANOMALY_PAGE = 20;
const LATEST = 30;

class MachinePage {
  constructor({ user, catalog }, machineId) {
    this.user = user;
    this.catalog = catalog;
    this.machine = machineId;
    this.thresholds = new ThresholdTable(catalog);
    this.units = new Map(catalog.map((s) => [s.name, s.unit]));
    this.rows = new Map(); // sensor → {row, value, state}
    this.values = {};
    this.lastReadingAt = 0;
    this.sensor = new URLSearchParams(location.search).get("sensor") || "temperature";
    this.rangeS = DEFAULT_RANGE_S;
    this.zoomed = false;
    this.chart = null;
    this.chartData = [[], [], [], []];
    this.nextAnomalies = null;
    window.__machine = this;
  }

  // -- sensors -------------------------------------------------------------------------------

  buildTables(customNames) {
    const container = document.getElementById("categories");
    container.replaceChildren();
    for (const category of CATEGORIES) {
      const names = this.catalog.filter((s) => s.category === category).map((s) => s.name);
      container.append(this.table(category, names));
    }
    this.customBody = null;
    container.append(this.table("custom", customNames));
  }

  table(category, names) {
    const body = el("tbody");
    const table = el(
      "table",
      { class: "sensor-table", dataset: { category } },
      el("caption", { text: category === "custom" ? "custom sensors" : category }),
      el(
        "thead",
        { class: "visually-hidden" },
        el(
          "tr",
          {},
          el("th", { scope: "col", text: "Sensor" }),
          el("th", { scope: "col", text: "Value" }),
          el("th", { scope: "col", text: "Unit" }),
          el("th", { scope: "col", text: "State" }),
        ),
      ),
      body,
    );
    for (const name of names) body.append(this.row(name));
    if (category === "custom") {
      this.customBody = body;
      this.customEmpty = el("tr", {}, el("td", { class: "unit", colspan: "4", text: "none yet" }));
      if (!names.length) body.append(this.customEmpty);
    }
    return el("section", { class: "panel" }, table);
  }

  row(name) {
    const value = el("td", { class: "val", text: "—" });
    const state = el("td", { class: "st", text: "" });
    const button = el("button", {
      type: "button",
      class: "link",
      text: label(name).toLowerCase(),
      "aria-label": `Show history of ${label(name).toLowerCase()}`,
      onclick: () => this.selectSensor(name),
    });
    const row = el(
      "tr",
      { dataset: { sensor: name, state: "none" } },
      el("th", { scope: "row" }, button),
      value,
      el("td", { class: "unit", text: this.units.get(name) || "" }),
      state,
    );
    this.rows.set(name, { row, value, state });
    if (name === this.sensor) row.classList.add("selected");
    return row;
  }

  addCustom(name) {
    if (this.rows.has(name) || !this.customBody) return;
    if (this.customEmpty) this.customEmpty.remove();
    const row = this.row(name);
    row.classList.add("new");
    this.customBody.append(row);
    const select = document.getElementById("chart-sensor");
    const group = select.querySelector('optgroup[label="custom"]');
    if (group && ![...group.children].some((o) => o.value === name)) {
      group.append(el("option", { value: name, text: name }));
    }
  }

  renderValues() {
    for (const [name, { row, value, state }] of this.rows) {
      const v = this.values[name];
      const s = this.thresholds.classify(name, v);
      value.textContent = fmt(v);
      row.dataset.state = s || "none";
      state.textContent = s ? SHORT[s] : "";
    }
  }

  absorb(reading) {
    Object.assign(this.values, reading.values || {});
    for (const [name, v] of Object.entries(reading.custom_sensors || {})) {
      this.addCustom(name);
      this.values[name] = v;
    }
  }

  // -- chart ---------------------------------------------------------------------------------

  buildSensorSelect(customNames) {
    const select = document.getElementById("chart-sensor");
    const groups = CATEGORIES.map((category) =>
      el(
        "optgroup",
        { label: category },
        ...this.catalog
          .filter((s) => s.category === category)
          .map((s) => el("option", { value: s.name, text: s.name })),
      ),
    );
    groups.push(
      el("optgroup", { label: "custom" }, ...customNames.map((n) => el("option", { value: n, text: n }))),
    );
    select.replaceChildren(...groups);
    select.value = this.sensor;
    select.addEventListener("change", () => this.selectSensor(select.value));
    for (const button of document.querySelectorAll("#ranges button")) {
      button.setAttribute("aria-pressed", String(Number(button.dataset.range) === this.rangeS));
      button.addEventListener("click", () => {
        this.rangeS = Number(button.dataset.range);
        for (const b of document.querySelectorAll("#ranges button")) {
          b.setAttribute("aria-pressed", String(b === button));
        }
        this.loadHistory();
      });
    }
  }

  selectSensor(name) {
    this.sensor = name;
    document.getElementById("chart-sensor").value = name;
    for (const [sensor, { row }] of this.rows) row.classList.toggle("selected", sensor === name);
    const url = new URL(location.href);
    url.searchParams.set("sensor", name);
    history.replaceState(null, "", url);
    this.loadHistory();
  }

  makeChart() {
    const container = document.getElementById("chart");
    const page = this;
    const thresholdLines = (u) => {
      const entry = page.thresholds.get(page.sensor);
      if (!entry) return;
      const ctx = u.ctx;
      ctx.save();
      ctx.lineWidth = 1;
      ctx.setLineDash([4, 4]);
      for (const [limit, colour] of [
        [entry.critical_low, "#ff2d55"],
        [entry.critical_high, "#ff2d55"],
        [warnLow(entry), "#f5b40b"],
        [warnHigh(entry), "#f5b40b"],
      ]) {
        if (typeof limit !== "number") continue;
        const y = u.valToPos(limit, "y", true);
        if (y < u.bbox.top || y > u.bbox.top + u.bbox.height) continue;
        ctx.strokeStyle = colour;
        ctx.beginPath();
        ctx.moveTo(u.bbox.left, y);
        ctx.lineTo(u.bbox.left + u.bbox.width, y);
        ctx.stroke();
      }
      ctx.restore();
    };
    const axis = { stroke: "#7b8da1", grid: { stroke: "#1c2a3a", width: 1 }, ticks: { stroke: "#1c2a3a" } };
    this.chart = new uPlot(
      {
        width: Math.max(300, container.clientWidth),
        height: 300,
        cursor: { drag: { x: true, y: false, setScale: true } },
        scales: { x: { time: true } },
        axes: [axis, { ...axis, size: 60 }],
        series: [
          {},
          { label: "avg", stroke: "#22d3ee", width: 1.5, value: (u, v) => fmt(v) },
          { label: "min", stroke: "#2b5563", width: 1, points: { show: false }, value: (u, v) => fmt(v) },
          { label: "max", stroke: "#2b5563", width: 1, points: { show: false }, value: (u, v) => fmt(v) },
        ],
        bands: [{ series: [3, 2], fill: "rgba(34, 211, 238, 0.12)" }],
        hooks: {
          draw: [thresholdLines],
          setSelect: [
            (u) => {
              if (u.select.width > 0) page.zoomed = true;
            },
          ],
          setScale: [
            (u, key) => {
              if (key === "x" && page.zoomed) page.scheduleZoomLoad(u.scales.x.min, u.scales.x.max);
            },
          ],
        },
      },
      this.chartData,
      container,
    );
    this.chart.over.addEventListener("dblclick", () => {
      this.zoomed = false;
      this.loadHistory();
    });
    new ResizeObserver(() => {
      this.chart.setSize({ width: Math.max(300, container.clientWidth), height: 300 });
    }).observe(container);
  }

  scheduleZoomLoad(min, max) {
    clearTimeout(this.zoomTimer);
    this.zoomTimer = setTimeout(() => this.fetchHistory(min * 1000, max * 1000, false), 250);
  }

  async loadHistory() {
    this.zoomed = false;
    const to = Date.now();
    await this.fetchHistory(to - this.rangeS * 1000, to, true);
  }

  async fetchHistory(fromMs, toMs, resetScales) {
    const status = document.getElementById("chart-status");
    const token = (this.historyToken = (this.historyToken || 0) + 1);
    status.textContent = `loading ${this.sensor}…`;
    try {
      const data = await api(
        `/api/v1/machines/${encodeURIComponent(this.machine)}/history${query({
          sensor: this.sensor,
          from: new Date(fromMs).toISOString(),
          to: new Date(toMs).toISOString(),
          points: CHART_POINTS,
        })}`,
      );
      if (token !== this.historyToken) return;
      const xs = [];
      const avg = [];
      const lo = [];
      const hi = [];
      for (const p of data.points) {
        xs.push(Date.parse(p.t) / 1000);
        avg.push(p.avg);
        lo.push(p.min);
        hi.push(p.max);
      }
      this.chartData = [xs, avg, lo, hi];
      this.chart.setData(this.chartData, resetScales);
      if (!resetScales) this.chart.setScale("x", { min: fromMs / 1000, max: toMs / 1000 });
      const unit = this.units.get(this.sensor) || "";
      status.textContent =
        `${this.sensor}${unit ? ` (${unit})` : ""}: ${data.points.length} points, ` +
        `bucket ${fmt(data.bucket_s)} s, ${data.resolution || ""} data` +
        (this.zoomed ? " · zoomed" : "");
    } catch (error) {
      if (token === this.historyToken) status.textContent = `history unavailable: ${error.message}`;
    }
  }

  /** Live readings extend an unzoomed chart. */
  extendChart(reading) {
    if (this.zoomed || !this.chart) return;
    const v = (reading.values || {})[this.sensor] ?? (reading.custom_sensors || {})[this.sensor];
    if (typeof v !== "number") return;
    const t = Date.parse(reading.timestamp) / 1000;
    const [xs, avg, lo, hi] = this.chartData;
    if (xs.length && t <= xs[xs.length - 1]) return;
    xs.push(t);
    avg.push(v);
    lo.push(v);
    hi.push(v);
    const start = Date.now() / 1000 - this.rangeS;
    while (xs.length && xs[0] < start) [xs, avg, lo, hi].forEach((a) => a.shift());
    this.chart.setData(this.chartData);
  }

  // -- anomalies -----------------------------------------------------------------------------

  anomalyRow(a, fresh) {
    return el(
      "tr",
      { class: fresh ? "new" : null, dataset: { id: a.id ?? "" } },
      el(
        "td",
        {},
        // The anomaly page (detail and root-cause report) when the row is a stored anomaly.
        a.id ? el("a", { href: `/anomalies/${a.id}`, text: timeOf(a.timestamp) }) : timeOf(a.timestamp),
      ),
      el("td", { text: a.method || "—" }),
      el("td", { class: "score", text: typeof a.score === "number" ? fmt(a.score) : "—" }),
      el("td", { text: (a.sensors || []).join(", ") || "—" }),
    );
  }

  async loadAnomalies(more = false) {
    const data = await api(
      `/api/v1/anomalies${query({
        machine_id: this.machine,
        limit: ANOMALY_PAGE,
        before: more ? this.nextAnomalies : null,
      })}`,
    );
    const body = document.getElementById("anomaly-rows");
    if (!more) body.replaceChildren();
    for (const a of data.anomalies) body.append(this.anomalyRow(a, false));
    this.nextAnomalies = data.next;
    document.getElementById("anomaly-more").hidden = !data.next;
    document.getElementById("anomaly-empty").hidden = body.children.length > 0;
  }

  // -- live ----------------------------------------------------------------------------------

  onEvent(event) {
    if (event.machine_id !== undefined && event.machine_id !== null && event.machine_id !== this.machine) {
      return;
    }
    if (event.type === "reading") {
      this.absorb(event);
      this.lastReadingAt = performance.now();
      this.renderValues();
      this.extendChart(event);
      this.renderMeta(event.timestamp);
    } else if (event.type === "anomaly") {
      const body = document.getElementById("anomaly-rows");
      body.prepend(this.anomalyRow(event, true));
      document.getElementById("anomaly-empty").hidden = true;
    } else if (event.type === "thresholds") {
      if (event.machine_id === this.machine) {
        this.thresholds.set(event.sensor, event.entry);
        this.renderValues();
        if (this.chart) this.chart.redraw(false);
      } else {
        this.loadThresholds().catch(() => {});
      }
    } else if (event.type === "gap") {
      this.loadLatest().catch(() => {});
    }
  }

  async loadThresholds() {
    const data = await api(`/api/v1/machines/${encodeURIComponent(this.machine)}/thresholds`);
    this.thresholds.load(data.thresholds);
    this.renderValues();
    if (this.chart) this.chart.redraw(false);
  }

  async loadLatest() {
    // Several readings, oldest first: a sensor missing from the newest keeps its last value.
    const data = await api(
      `/api/v1/machines/${encodeURIComponent(this.machine)}/latest${query({ limit: LATEST })}`,
    );
    for (const reading of data.readings) this.absorb(reading);
    const newest = data.readings[data.readings.length - 1];
    if (newest) {
      const age = Date.now() - Date.parse(newest.timestamp);
      if (age < STALE_MS) this.lastReadingAt = performance.now() - Math.max(0, age);
      this.renderMeta(newest.timestamp);
    }
    this.renderValues();
  }

  renderMeta(lastTimestamp) {
    if (lastTimestamp) this.lastTimestamp = lastTimestamp;
    const parts = [];
    if (this.info && this.info.first_seen) parts.push(`first seen ${timeOf(this.info.first_seen)}`);
    if (this.info) parts.push(`${fmtInt(this.info.total_readings)} readings stored`);
    if (this.lastTimestamp) parts.push(`last reading ${timeOf(this.lastTimestamp)}`);
    document.getElementById("machine-meta").textContent = parts.join(" · ");
  }

  renderStaleness() {
    const stale = !this.lastReadingAt || performance.now() - this.lastReadingAt > STALE_MS;
    document.getElementById("data-stale").hidden = !stale;
  }
}

async function main() {
  const boot = bootSequence();
  const machineId = decodeURIComponent(location.pathname.split("/")[2] || "");
  const context = await setupPage("machine");
  document.title = `Machine ${machineId} · Rig Alpha`;
  document.getElementById("machine-title").textContent = `MACHINE ${machineId}`;
  if (!context.machines.some((m) => m.machine_id === machineId)) {
    context.machines.push({ machine_id: machineId, total_readings: 0 });
  }
  fillMachineSelect(context.machines, machineId, (id) => {
    location.assign(`/machines/${encodeURIComponent(id)}`);
  });
  const page = new MachinePage(context, machineId);
  page.info = context.machines.find((m) => m.machine_id === machineId);
  const custom = await api(`/api/v1/custom-sensors${query({ machine_id: machineId })}`).catch(() => ({
    custom_sensors: [],
  }));
  const customNames = custom.custom_sensors.map((c) => c.name).sort();
  for (const c of custom.custom_sensors) if (c.unit) page.units.set(c.name, c.unit);
  page.buildTables(customNames);
  page.buildSensorSelect(customNames);
  page.makeChart();
  const stream = new LiveStream({
    machines: [machineId],
    onEvent: (event) => page.onEvent(event),
    onState: showConnection,
  });
  stream.start();
  await Promise.all([page.loadThresholds(), page.loadLatest()]);
  page.renderMeta();
  document.getElementById("anomaly-more").addEventListener("click", () => page.loadAnomalies(true));
  await Promise.all([page.loadHistory(), page.loadAnomalies()]);
  setInterval(() => page.renderStaleness(), 500);
  page.renderStaleness();
  await boot;
  document.body.dataset.ready = "true";
}

main().catch((error) => {
  document.body.dataset.error = String(error.message || error);
  console.error(error);
});
