// Admin page: per-machine threshold editing. A save is a PUT to the API, which announces the
// change on the live stream, so every open dashboard recolours at once without a reload.

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

class AdminPage {
  constructor(context) {
    this.catalog = context.catalog;
    this.machine = null;
    this.rows = new Map();
    window.__admin = this;
  }

  async select(machineId) {
    this.machine = machineId;
    rememberMachine(machineId);
    const [table, custom] = await Promise.all([
      api(`/api/v1/machines/${encodeURIComponent(machineId)}/thresholds`),
      api(`/api/v1/custom-sensors${query({ machine_id: machineId })}`).catch(() => ({
        custom_sensors: [],
      })),
    ]);
    const names = this.catalog.map((s) => s.name);
    const extra = new Set([...Object.keys(table.thresholds), ...custom.custom_sensors.map((c) => c.name)]);
    for (const n of names) extra.delete(n);
    const body = document.getElementById("thr-rows");
    this.rows.clear();
    body.replaceChildren(
      ...[...names, ...[...extra].sort()].map((name) => this.row(name, table.thresholds[name] || null)),
    );
    this.applyFilter();
    this.status(`Machine ${machineId}: ${this.rows.size} sensors.`);
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
    record.reset.hidden = e.source !== "machine";
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
      const entry = await api(
        `/api/v1/machines/${encodeURIComponent(this.machine)}/thresholds/${encodeURIComponent(name)}`,
        { method: "PUT", body },
      );
      this.fill(name, entry.entry || entry);
      this.flash(record.row);
      this.status(`Saved ${name} on machine ${this.machine}.`);
    } catch (error) {
      this.showError(record, error);
    }
  }

  async reset(name) {
    const record = this.rows.get(name);
    try {
      const result = await api(
        `/api/v1/machines/${encodeURIComponent(this.machine)}/thresholds/${encodeURIComponent(name)}`,
        { method: "DELETE" },
      );
      this.fill(name, result ? result.entry : null);
      this.flash(record.row);
      this.status(`${name} on machine ${this.machine} is back to the default.`);
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
    document.getElementById("thr-status").textContent = text;
  }

  applyFilter() {
    const needle = document.getElementById("thr-filter").value.trim().toLowerCase();
    for (const [name, { row }] of this.rows) row.hidden = Boolean(needle) && !name.includes(needle);
  }

  onEvent(event) {
    if (event.type !== "thresholds") return;
    if (event.machine_id === this.machine) this.fill(event.sensor, event.entry);
    else if (event.machine_id === null) this.select(this.machine).catch(() => {});
  }
}

async function main() {
  const boot = bootSequence();
  const context = await setupPage("admin");
  const page = new AdminPage(context);
  const ids = context.machines.map((m) => m.machine_id);
  const selected = preferredMachine(context.machines) || "A";
  if (!ids.includes(selected)) context.machines.push({ machine_id: selected });
  fillMachineSelect(context.machines, selected, (id) => page.select(id));
  document.getElementById("thr-filter").addEventListener("input", () => page.applyFilter());
  new LiveStream({ onEvent: (e) => page.onEvent(e), onState: showConnection }).start();
  await page.select(selected);
  await boot;
  document.body.dataset.ready = "true";
}

main().catch((error) => {
  document.body.dataset.error = String(error.message || error);
  console.error(error);
});
