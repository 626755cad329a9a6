// Overview page: health matrix, the eight priority tiles, custom-sensor widgets, the 3D twin
// and pipeline health, for the selected machine, updated by pushed readings.

import { api, query } from "./api.js";
import {
  addMachineOption,
  bootSequence,
  fillMachineSelect,
  preferredMachine,
  rememberMachine,
  setupPage,
  showConnection,
} from "./chrome.js";
import { ageText, durationText, el, fmt, fmtInt, label } from "./format.js";
import { LiveStream, STALE_MS } from "./live.js";
import { ThresholdTable, worst } from "./thresholds.js";
import { HISTORY, Tile } from "./tile.js";
import { createTwin } from "./twin.js";

const STATS_MS = 2000;
const CATEGORIES = ["environmental", "mechanical", "thermal", "electrical", "fluid"];
// docs/manifest.md §4.2: display order of the eight priority tiles.
const PRIORITY = [
  "temperature",
  "pressure",
  "voltage",
  "current",
  "rpm",
  "vibration",
  "coolant_temp",
  "flow_rate",
];

/** detection.forecast: {sensor: [predicted values...]} when the edge's model forecasts. */
export function forecastFor(detection, sensor) {
  const forecast = detection && detection.forecast;
  if (!forecast || typeof forecast !== "object" || Array.isArray(forecast)) return null;
  const values = forecast[sensor];
  return Array.isArray(values) ? values.filter((v) => typeof v === "number") : null;
}

// The edge sends a forecast with some readings only (the newest of a batch, at most every
// second): the readings in between keep the last one drawn while the same model judges the
// machine and the forecast is this recent (reading time).
export const FORECAST_KEEP_MS = 5000;

/** The forecast the tiles draw after ``reading``: its own, else ``previous`` while it holds. */
export function keptForecast(previous, reading) {
  const detection = reading.detection;
  const at = Date.parse(reading.timestamp);
  if (detection && detection.forecast && typeof detection.forecast === "object" && !Array.isArray(detection.forecast)) {
    return { forecast: detection.forecast, at, model: detection.model_version || null };
  }
  if (!previous || !detection || !detection.model_version || detection.model_version !== previous.model) return null;
  return at - previous.at <= FORECAST_KEEP_MS && at >= previous.at ? previous : null;
}

class Overview {
  constructor({ user, machines, catalog }) {
    this.user = user;
    this.machines = machines;
    this.catalog = catalog;
    this.specs = new Map(catalog.map((s) => [s.name, s]));
    this.machine = null;
    this.thresholds = new ThresholdTable(catalog);
    this.latest = {}; // sensor → value of the newest reading
    this.latestCustom = {};
    this.detection = null;
    this.forecast = null; // {forecast, at, model}: what the dots show (keptForecast)
    this.lastReadingAt = 0;
    this.loadToken = 0;
    this.pending = null;
    this.customUnits = new Map();
    this.tiles = new Map();
    this.customTiles = new Map();
    this.healthCards = new Map();
    this.twin = createTwin(document.getElementById("twin"));
    this.buildTiles();
    this.buildHealth();
    window.__dash = this; // tests and the benchmark read state from here
  }

  buildTiles() {
    const container = document.getElementById("tiles");
    const rank = (name) => (PRIORITY.includes(name) ? PRIORITY.indexOf(name) : PRIORITY.length);
    const priority = this.catalog.filter((s) => s.priority || PRIORITY.includes(s.name));
    priority.sort((a, b) => rank(a.name) - rank(b.name));
    for (const spec of priority) {
      const tile = new Tile({ name: spec.name, unit: spec.unit });
      this.tiles.set(spec.name, tile);
      container.append(tile.root);
    }
  }

  buildHealth() {
    const list = document.getElementById("health");
    for (const category of [...CATEGORIES, "custom"]) {
      const state = el("span", { class: "state", text: "NO DATA" });
      const detail = el("span", { class: "detail", text: "" });
      const card = el(
        "li",
        { class: "health-card", dataset: { category, state: "none" }, hidden: category === "custom" },
        el("span", { class: "cat", text: category }),
        state,
        detail,
      );
      this.healthCards.set(category, { card, state, detail });
      list.append(card);
    }
  }

  async select(machineId) {
    this.machine = machineId;
    rememberMachine(machineId);
    const url = new URL(location.href);
    url.searchParams.set("machine", machineId);
    history.replaceState(null, "", url);
    const nav = document.getElementById("nav-machine");
    nav.href = `/machines/${encodeURIComponent(machineId)}`;
    await this.load();
  }

  async load() {
    const machine = this.machine;
    const token = ++this.loadToken;
    const id = encodeURIComponent(machine);
    // Readings pushed while the history loads are applied after it.
    this.pending = [];
    let thresholds;
    let latest;
    let custom;
    try {
      [thresholds, latest, custom] = await Promise.all([
        api(`/api/v1/machines/${id}/thresholds`),
        api(`/api/v1/machines/${id}/latest${query({ limit: HISTORY })}`),
        api(`/api/v1/custom-sensors${query({ machine_id: machine })}`).catch(() => ({
          custom_sensors: [],
        })),
      ]);
    } catch (error) {
      if (token === this.loadToken) this.pending = null;
      throw error;
    }
    if (token !== this.loadToken) return; // another machine was selected meanwhile
    this.thresholds = new ThresholdTable(this.catalog);
    this.thresholds.load(thresholds.thresholds);
    for (const c of custom.custom_sensors) if (c.unit) this.customUnits.set(c.name, c.unit);
    for (const tile of this.tiles.values()) tile.reset();
    for (const tile of this.customTiles.values()) tile.root.remove();
    this.customTiles.clear();
    document.getElementById("custom-empty").hidden = false;
    this.latest = {};
    this.latestCustom = {};
    this.detection = null;
    this.forecast = null;
    this.lastReadingAt = 0;
    if (this.twin) this.twin.stop();
    for (const reading of latest.readings) this.absorb(reading, false);
    let newest = latest.readings[latest.readings.length - 1];
    const pending = this.pending;
    this.pending = null;
    for (const reading of pending) {
      if (!newest || Date.parse(reading.timestamp) > Date.parse(newest.timestamp)) {
        this.absorb(reading, true);
        newest = reading;
      }
    }
    if (newest) {
      // Loaded history counts as fresh only if it is recent.
      const age = Date.now() - Date.parse(newest.timestamp);
      this.lastReadingAt = age < STALE_MS ? performance.now() - Math.max(0, age) : 0;
      this.feedTwin(newest);
    }
    this.renderAll();
  }

  /** Takes one reading of the selected machine into the tiles' buffers. */
  absorb(reading, appeared) {
    const values = reading.values || {};
    for (const [name, tile] of this.tiles) {
      if (typeof values[name] === "number") tile.push(values[name]);
    }
    Object.assign(this.latest, values);
    const custom = reading.custom_sensors || {};
    for (const [name, value] of Object.entries(custom)) {
      let tile = this.customTiles.get(name);
      if (!tile) tile = this.addCustomTile(name, appeared);
      tile.push(value);
    }
    Object.assign(this.latestCustom, custom);
    this.detection = reading.detection || null;
    this.forecast = keptForecast(this.forecast, reading);
  }

  addCustomTile(name, appeared) {
    const tile = new Tile({ name, unit: this.customUnits.get(name) || "", custom: true });
    this.customTiles.set(name, tile);
    document.getElementById("custom-empty").hidden = true;
    const container = document.getElementById("custom-tiles");
    const after = [...this.customTiles.keys()].sort().find((n) => n > name);
    const next = after ? this.customTiles.get(after) : null;
    if (next && next.root.parentNode === container) container.insertBefore(tile.root, next.root);
    else container.append(tile.root);
    if (appeared) {
      tile.root.classList.add("appeared");
      this.refreshCustomUnits();
    }
    return tile;
  }

  async refreshCustomUnits() {
    try {
      const data = await api(`/api/v1/custom-sensors${query({ machine_id: this.machine })}`);
      for (const c of data.custom_sensors) {
        if (!c.unit) continue;
        this.customUnits.set(c.name, c.unit);
        const tile = this.customTiles.get(c.name);
        if (tile) tile.setUnit(c.unit);
      }
    } catch {
      /* units are cosmetic */
    }
  }

  feedTwin(reading) {
    if (!this.twin) return;
    const v = reading.values || {};
    this.twin.update({
      rpm: v.rpm,
      vibration: v.vibration,
      temperature: v.temperature,
      risk: reading.detection ? reading.detection.score : null,
      vibrationEntry: this.thresholds.get("vibration"),
      temperatureEntry: this.thresholds.get("temperature"),
    });
    const set = (id, text) => (document.getElementById(id).textContent = text);
    set("tw-rpm", fmt(this.twin.rpm));
    set("tw-vib", fmt(v.vibration ?? this.latest.vibration));
    set("tw-temp", fmt(v.temperature ?? this.latest.temperature));
    const risk = reading.detection ? reading.detection.score : null;
    set("tw-risk", typeof risk === "number" ? fmt(risk) : "—");
  }

  recolourTwin() {
    if (this.twin) this.twin.setTemperature(this.latest.temperature, this.thresholds.get("temperature"));
  }

  renderAll() {
    const stale = this.isDataStale();
    const forecast = this.forecast ? { forecast: this.forecast.forecast } : null;
    for (const [name, tile] of this.tiles) {
      tile.render(this.thresholds.get(name), forecastFor(forecast, name));
      tile.setStale(stale);
    }
    for (const [name, tile] of this.customTiles) {
      tile.render(this.thresholds.get(name), forecastFor(forecast, name));
      tile.setStale(stale);
    }
    this.renderHealth();
  }

  renderHealth() {
    const byCategory = new Map(CATEGORIES.map((c) => [c, []]));
    for (const spec of this.catalog) {
      const state = this.thresholds.classify(spec.name, this.latest[spec.name]);
      if (state) byCategory.get(spec.category).push([spec.name, state]);
    }
    const custom = Object.entries(this.latestCustom).map(([n, v]) => [
      n,
      this.thresholds.classify(n, v) || "nominal",
    ]);
    byCategory.set("custom", custom);
    for (const [category, entries] of byCategory) {
      const { card, state, detail } = this.healthCards.get(category);
      if (category === "custom") card.hidden = entries.length === 0;
      const w = worst(entries.map(([, s]) => s));
      card.dataset.state = w || "none";
      state.textContent = w ? w.toUpperCase() : "NO DATA";
      const bad = entries.filter(([, s]) => s !== "nominal").map(([n]) => label(n).toLowerCase());
      detail.textContent = entries.length
        ? bad.length
          ? bad.slice(0, 3).join(", ") + (bad.length > 3 ? ` +${bad.length - 3}` : "")
          : `${entries.length} sensor${entries.length === 1 ? "" : "s"} nominal`
        : "";
    }
  }

  isDataStale() {
    return !this.lastReadingAt || performance.now() - this.lastReadingAt > STALE_MS;
  }

  renderStaleness() {
    const stale = this.isDataStale();
    document.getElementById("data-stale").hidden = !stale || !this.machine;
    for (const tile of [...this.tiles.values(), ...this.customTiles.values()]) tile.setStale(stale);
    const status = document.getElementById("twin-status");
    const running = this.twin ? this.twin.running() : false;
    status.dataset.running = String(running);
    status.textContent = running ? "RUNNING" : stale ? "NO DATA · FROZEN" : "STOPPED";
    const age = this.lastPushTimestamp ? Date.now() - this.lastPushTimestamp : null;
    document.getElementById("p-age").textContent = ageText(age);
  }

  onEvent(event) {
    if (event.type === "reading") this.onReading(event);
    else if (event.type === "thresholds") this.onThresholds(event);
    else if (event.type === "gap") this.load().catch(() => {});
  }

  onReading(reading) {
    if (addMachineOption(reading.machine_id)) {
      this.machines.push({ machine_id: reading.machine_id });
      if (!this.machine) {
        document.getElementById("machine-select").value = reading.machine_id;
        this.select(reading.machine_id);
        return;
      }
    }
    if (reading.machine_id !== this.machine) return;
    if (this.pending) {
      this.pending.push(reading);
      return;
    }
    this.absorb(reading, true);
    this.lastReadingAt = performance.now();
    this.lastPushTimestamp = Date.parse(reading.timestamp);
    this.renderAll();
    this.feedTwin(reading);
  }

  onThresholds(event) {
    if (event.machine_id === this.machine) {
      this.thresholds.set(event.sensor, event.entry);
      this.renderAll();
      this.recolourTwin();
    } else if (event.machine_id === null || event.machine_id === undefined) {
      // A fleet-wide change: what applies here depends on this machine's own overrides.
      api(`/api/v1/machines/${encodeURIComponent(this.machine)}/thresholds`)
        .then((data) => {
          this.thresholds.load(data.thresholds);
          this.renderAll();
          this.recolourTwin();
        })
        .catch(() => {});
    }
  }

  async pollStats() {
    try {
      const stats = await api("/api/stats");
      const set = (id, text) => (document.getElementById(id).textContent = text);
      set("p-total", fmtInt(stats.total_readings));
      set("p-mps", fmt(stats.messages_per_second, 10));
      set("p-lag", stats.consumer_lag === null || stats.consumer_lag === undefined ? "n/a" : fmtInt(stats.consumer_lag));
      const lat = stats.latency_ms || {};
      set("p-latency", `${durationText(lat.p50)} / ${durationText(lat.p95)}`);
      const edges = Object.entries(stats.edges || {});
      set(
        "p-edges",
        edges.length
          ? edges.map(([id, e]) => `${id}: ${e.backlog ?? "—"}`).join(" · ")
          : "n/a",
      );
    } catch {
      /* the connection indicator tells the story */
    }
  }
}

async function main() {
  const boot = bootSequence();
  const context = await setupPage("overview");
  const page = new Overview(context);
  const selected = preferredMachine(context.machines);
  fillMachineSelect(context.machines, selected, (id) => page.select(id));
  const stream = new LiveStream({
    onEvent: (event) => page.onEvent(event),
    onState: showConnection,
  });
  page.stream = stream;
  stream.start();
  if (selected) await page.select(selected);
  page.pollStats();
  setInterval(() => page.pollStats(), STATS_MS);
  setInterval(() => page.renderStaleness(), 500);
  page.renderStaleness();
  await boot;
  document.body.dataset.ready = "true";
}

main().catch((error) => {
  document.body.dataset.error = String(error.message || error);
  console.error(error);
});
