// Admin area: one page whose path names the section (/admin: per-machine thresholds,
// /admin/fleet, /admin/sensors, /admin/models, /admin/users, /admin/keys), under one header.
// Threshold saves are PUTs to the API, which announces them on the live stream, so every open
// dashboard recolours at once without a reload. Every action goes through the same API (and
// its guards) as the CLI; the page only shows what the API answers, errors included.

import { api, ApiError, query } from "./api.js";
import {
  bootSequence,
  fillMachineSelect,
  preferredMachine,
  rememberMachine,
  setupPage,
  showConnection,
} from "./chrome.js";
import { el, fmt } from "./format.js";
import { LiveStream } from "./live.js";
import { startModels } from "./admin_models.js";
import { startKeys, startUsers } from "./admin_people.js";
import { startSensors } from "./admin_sensors.js";

const FIELDS = ["critical_low", "warn_low", "warn_high", "critical_high"];
const WORDS = {
  critical_low: "critical low",
  warn_low: "warning low",
  warn_high: "warning high",
  critical_high: "critical high",
};

/** The warning limit the default rule (docs/manifest.md §4.2) derives from a critical limit
 *  (null: none). */
function ruleWarn(field, entry) {
  if (field === "warn_low" && typeof entry.critical_low === "number") {
    return entry.critical_low + 0.1 * Math.abs(entry.critical_low);
  }
  if (field === "warn_high" && typeof entry.critical_high === "number") {
    return entry.critical_high - 0.1 * Math.abs(entry.critical_high);
  }
  return null;
}

const close = (a, b) => typeof a === "number" && typeof b === "number" && Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(a));

/** A table of threshold rows: one machine's (``machine`` set) or the fleet's (null). */
class ThresholdTable {
  constructor(context, ids) {
    this.catalog = context.catalog;
    this.ids = ids; // {rows, filter, status}
    this.machine = null;
    this.rows = new Map();
  }

  /** The API path of the table, or of one sensor's entry in it. */
  path(name) {
    const base = this.machine === null ? "/api/v1/thresholds" : `/api/v1/machines/${encodeURIComponent(this.machine)}/thresholds`;
    return name === undefined ? base : `${base}/${encodeURIComponent(name)}`;
  }

  /** Who the table is about, for the status line. */
  get where() {
    return this.machine === null ? "the fleet" : `machine ${this.machine}`;
  }

  /** The source a row's own override has (Reset removes it). */
  get own() {
    return this.machine === null ? "fleet" : "machine";
  }

  async select(machineId) {
    this.machine = machineId;
    if (machineId !== null) rememberMachine(machineId);
    await this.load();
  }

  async load() {
    const machineId = this.machine;
    const [table, custom] = await Promise.all([
      api(this.path()),
      api(`/api/v1/custom-sensors${query({ machine_id: machineId })}`).catch(() => ({
        custom_sensors: [],
      })),
    ]);
    const names = this.catalog.map((s) => s.name);
    const extra = new Set([...Object.keys(table.thresholds), ...custom.custom_sensors.map((c) => c.name)]);
    for (const n of names) extra.delete(n);
    const body = document.getElementById(this.ids.rows);
    this.rows.clear();
    body.replaceChildren(
      ...[...names, ...[...extra].sort()].map((name) => this.row(name, table.thresholds[name] || null)),
    );
    this.applyFilter();
    this.status(`${machineId === null ? "Fleet" : `Machine ${machineId}`}: ${this.rows.size} sensors.`);
  }

  row(name, entry) {
    const inputs = {};
    const error = el("div", { class: "row-error", role: "alert" });
    const source = el("td", { class: "source" });
    const reset = el("button", {
      type: "button",
      text: "Reset",
      "aria-label": `Reset ${name} to the default`,
      onclick: () => this.reset(name),
    });
    const save = el("button", {
      type: "button",
      class: "primary",
      text: "Save",
      "aria-label": `Save ${name} thresholds`,
      onclick: () => this.save(name),
    });
    const cells = FIELDS.map((field) => {
      inputs[field] = el("input", {
        type: "number",
        step: "any",
        inputmode: "decimal",
        name: `${name}.${field}`,
        "aria-label": `${name} ${WORDS[field]}`,
        onkeydown: (e) => {
          if (e.key === "Enter") this.save(name);
        },
      });
      return el("td", {}, inputs[field]);
    });
    const row = el(
      "tr",
      { dataset: { sensor: name } },
      el("th", { scope: "row", text: name }),
      ...cells,
      source,
      el("td", {}, save, " ", reset, error),
    );
    const record = { row, inputs, source, reset, error };
    this.rows.set(name, record);
    this.fill(name, entry);
    return row;
  }

  fill(name, entry) {
    const record = this.rows.get(name);
    if (!record) return;
    const e = entry || { critical_low: null, critical_high: null, warn_low: null, warn_high: null, source: "none" };
    for (const field of FIELDS) {
      const input = record.inputs[field];
      const value = e[field];
      const rule = ruleWarn(field, e);
      // A warning limit equal to the rule's is shown as a hint: left empty, it follows the
      // critical limit when that changes.
      if (rule !== null && close(value, rule)) {
        input.value = "";
        input.placeholder = `rule ${fmt(rule)}`;
      } else {
        input.value = typeof value === "number" ? String(value) : "";
        input.placeholder = field.startsWith("warn") ? "rule" : "none";
      }
    }
    record.row.dataset.source = e.source;
    record.source.textContent = e.source;
    record.reset.hidden = e.source !== this.own;
    record.error.textContent = "";
  }

  values(name) {
    const { inputs } = this.rows.get(name);
    const body = {};
    for (const field of FIELDS) {
      const text = inputs[field].value.trim();
      body[field] = text === "" ? null : Number(text);
    }
    return body;
  }

  async save(name) {
    const record = this.rows.get(name);
    record.error.textContent = "";
    const body = this.values(name);
    for (const field of FIELDS) {
      if (body[field] !== null && !Number.isFinite(body[field])) {
        record.error.textContent = `${WORDS[field]}: not a number`;
        record.inputs[field].focus();
        return;
      }
    }
    try {
      const entry = await api(this.path(name), { method: "PUT", body });
      this.fill(name, entry.entry || entry);
      this.flash(record.row);
      this.status(`Saved ${name} on ${this.where}.`);
    } catch (error) {
      this.showError(record, error);
    }
  }

  async reset(name) {
    const record = this.rows.get(name);
    try {
      const result = await api(this.path(name), { method: "DELETE" });
      this.fill(name, result ? result.entry : null);
      this.flash(record.row);
      this.status(`${name} on ${this.where} is back to the default.`);
    } catch (error) {
      this.showError(record, error);
    }
  }

  showError(record, error) {
    const field = error instanceof ApiError ? error.field : null;
    record.error.textContent = field && field !== "$" ? `${field}: ${error.message}` : error.message;
    if (field && record.inputs[field]) record.inputs[field].focus();
  }

  flash(row) {
    row.classList.remove("saved");
    void row.offsetWidth; // restart the animation
    row.classList.add("saved");
  }

  status(text) {
    document.getElementById(this.ids.status).textContent = text;
  }

  applyFilter() {
    const needle = document.getElementById(this.ids.filter).value.trim().toLowerCase();
    for (const [name, { row }] of this.rows) row.hidden = Boolean(needle) && !name.includes(needle);
  }

  onEvent(event) {
    if (event.type !== "thresholds") return;
    // The event carries the entry as it now applies at its own level: this table's rows.
    if (event.machine_id === this.machine) this.fill(event.sensor, event.entry);
    // A fleet change moves every machine row without an override of its own: read again.
    else if (event.machine_id === null) this.load().catch(() => {});
  }
}

const SECTIONS = ["machines", "fleet", "sensors", "models", "users", "keys"];

/** The section the path names (/admin → machines). */
function currentSection() {
  const part = location.pathname.replace(/\/+$/, "").split("/")[2] || "machines";
  return SECTIONS.includes(part) ? part : "machines";
}

function showSection(section) {
  for (const node of document.querySelectorAll("#main > [data-section]")) node.hidden = node.dataset.section !== section;
  for (const link of document.querySelectorAll(".admin-tabs [data-tab]")) {
    if (link.dataset.tab === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  // The machine picker belongs to the per-machine thresholds (and the spec-sheet import there).
  document.getElementById("machine-pick").hidden = section !== "machines";
  document.body.dataset.adminSection = section;
}

async function startMachines(context) {
  const table = new ThresholdTable(context, { rows: "thr-rows", filter: "thr-filter", status: "thr-status" });
  window.__admin = table; // the spec-sheet import reads the selected machine from it
  const ids = context.machines.map((m) => m.machine_id);
  const selected = preferredMachine(context.machines) || "A";
  if (!ids.includes(selected)) context.machines.push({ machine_id: selected });
  fillMachineSelect(context.machines, selected, (id) => table.select(id));
  document.getElementById("thr-filter").addEventListener("input", () => table.applyFilter());
  await table.select(selected);
  return table;
}

async function startFleet(context) {
  const table = new ThresholdTable(context, { rows: "fleet-rows", filter: "fleet-filter", status: "fleet-status" });
  const filter = document.getElementById("fleet-filter");
  filter.value = new URLSearchParams(location.search).get("sensor") || "";
  filter.addEventListener("input", () => table.applyFilter());
  await table.select(null);
  return table;
}

const STARTERS = {
  machines: startMachines,
  fleet: startFleet,
  sensors: startSensors,
  models: startModels,
  users: startUsers,
  keys: startKeys,
};

async function main() {
  const boot = bootSequence();
  const context = await setupPage("admin");
  const section = currentSection();
  showSection(section);
  if (section !== "machines") {
    // Hidden here, but it keeps the header's Machine link pointing at the remembered machine.
    fillMachineSelect(context.machines, preferredMachine(context.machines), rememberMachine);
  }
  const page = await STARTERS[section](context);
  new LiveStream({ onEvent: (e) => page && page.onEvent && page.onEvent(e), onState: showConnection }).start();
  await boot;
  document.body.dataset.ready = "true";
}

main().catch((error) => {
  document.body.dataset.error = String(error.message || error);
  console.error(error);
});
