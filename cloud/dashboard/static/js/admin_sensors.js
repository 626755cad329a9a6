// Admin section: custom sensors — register one before it is ever sent, or annotate what the
// fleet sends (unit, category, description, measuring range), beside the range the fleet has
// actually sent and the fleet-wide thresholds it is judged by (edited under fleet thresholds).

import { api } from "./api.js";
import { errorText, flash, setStatus } from "./admin_common.js";
import { el, fmt, fmtInt } from "./format.js";

function categorySelect(categories, value, attrs) {
  return el(
    "select",
    attrs,
    el("option", { value: "", text: "—" }),
    ...categories.map((c) => el("option", { value: c, text: c, selected: c === value })),
  );
}

function blankToNull(text) {
  const trimmed = text.trim();
  return trimmed === "" ? null : trimmed;
}

function thresholdText(entry) {
  if (!entry || (entry.critical_low === null && entry.critical_high === null)) return "none";
  const low = entry.critical_low === null ? "—" : fmt(entry.critical_low);
  const high = entry.critical_high === null ? "—" : fmt(entry.critical_high);
  return `critical ${low} … ${high} (${entry.source})`;
}

class SensorsSection {
  constructor(context) {
    this.categories = [...new Set(context.catalog.map((s) => s.category))].sort();
  }

  async load() {
    const [{ custom_sensors: sensors }, fleet] = await Promise.all([
      api("/api/v1/custom-sensors"),
      api("/api/v1/thresholds"),
    ]);
    sensors.sort((a, b) => a.name.localeCompare(b.name));
    const specs = await Promise.all(
      sensors.map((s) => api(`/api/v1/custom-sensors/${encodeURIComponent(s.name)}/spec`).catch(() => null)),
    );
    document
      .getElementById("cs-rows")
      .replaceChildren(...sensors.map((s, i) => this.row(s, fleet.thresholds[s.name], specs[i])));
    document.getElementById("cs-empty").hidden = sensors.length > 0;
    return sensors;
  }

  row(sensor, entry, spec) {
    const name = sensor.name;
    const error = el("div", { class: "row-error", role: "alert" });
    const unit = el("input", { name: "unit", value: sensor.unit || "", maxlength: "32", "aria-label": `Unit of ${name}` });
    const category = categorySelect(this.categories, sensor.category, { name: "category", "aria-label": `Category of ${name}` });
    const description = el("input", {
      name: "description",
      value: sensor.description || "",
      maxlength: "1000",
      "aria-label": `Description of ${name}`,
    });
    const bounds = {};
    for (const [field, word] of [
      ["min_range", "low end"],
      ["max_range", "high end"],
    ]) {
      const value = spec ? spec[field] : null;
      bounds[field] = el("input", {
        type: "number",
        step: "any",
        name: field,
        value: typeof value === "number" ? String(value) : "",
        placeholder: field === "min_range" ? "min" : "max",
        "aria-label": `Measuring range of ${name}, ${word}`,
      });
    }
    const range = sensor.count ? `${fmt(sensor.min)} · ${fmt(sensor.mean)} · ${fmt(sensor.max)}` : "never received";
    const row = el("tr", { dataset: { sensor: name, confirmed: String(sensor.confirmed) } });
    const save = el("button", {
      type: "button",
      class: "primary",
      text: sensor.confirmed ? "Save" : "Confirm",
      "aria-label": `Save ${name}`,
      onclick: async () => {
        error.textContent = "";
        try {
          await this.put(name, unit.value, category.value, description.value);
          await this.putRange(name, spec, bounds.min_range.value, bounds.max_range.value);
          await this.load();
          setStatus("cs-status", `Saved ${name}.`);
          const fresh = document.querySelector(`#cs-rows tr[data-sensor="${CSS.escape(name)}"]`);
          if (fresh) flash(fresh);
        } catch (e) {
          error.textContent = errorText(e);
        }
      },
    });
    row.append(
      el("th", { scope: "row", text: name + (sensor.confirmed ? "" : " (unconfirmed)") }),
      el("td", { text: sensor.machines.join(", ") || "—" }),
      el("td", { class: "num", text: fmtInt(sensor.count) }),
      el("td", { class: "num range", text: range }),
      el("td", { class: "bounds" }, bounds.min_range, " … ", bounds.max_range),
      el("td", {}, unit),
      el("td", {}, category),
      el("td", {}, description),
      el(
        "td",
        { class: "thresholds" },
        el("span", { text: thresholdText(entry) }),
        " ",
        el("a", { href: `/admin/fleet?sensor=${encodeURIComponent(name)}`, text: "edit", "aria-label": `Edit thresholds of ${name}` }),
      ),
      el("td", { class: "actions" }, save, error),
    );
    return row;
  }

  put(name, unit, category, description) {
    return api(`/api/v1/custom-sensors/${encodeURIComponent(name)}`, {
      method: "PUT",
      body: {
        unit: blankToNull(unit),
        category: category || null,
        description: blankToNull(description),
        confirmed: true,
      },
    });
  }

  /** Sets the measuring range when the admin changed it (empty: none). */
  async putRange(name, spec, minText, maxText) {
    const number = (text) => (text.trim() === "" ? null : Number(text));
    const body = { min_range: number(minText), max_range: number(maxText) };
    for (const [field, value] of Object.entries(body)) {
      if (value !== null && !Number.isFinite(value)) throw new Error(`${field}: not a number`);
    }
    const before = spec || { min_range: null, max_range: null };
    if (body.min_range === before.min_range && body.max_range === before.max_range) return;
    await api(`/api/v1/custom-sensors/${encodeURIComponent(name)}/range`, { method: "PUT", body });
  }

  async create(event) {
    event.preventDefault();
    const name = document.getElementById("cs-name");
    const sensorName = name.value.trim();
    try {
      await this.put(
        sensorName,
        document.getElementById("cs-unit").value,
        document.getElementById("cs-category").value,
        document.getElementById("cs-description").value,
      );
      setStatus("cs-status", `Registered ${sensorName}.`);
      for (const id of ["cs-name", "cs-unit", "cs-description"]) document.getElementById(id).value = "";
      await this.load();
    } catch (e) {
      setStatus("cs-status", `Not registered — ${errorText(e)}`);
    }
  }

  onEvent(event) {
    // A fleet threshold changed elsewhere: the thresholds column follows.
    if (event.type === "thresholds" && event.machine_id === null) this.load().catch(() => {});
  }
}

export async function startSensors(context) {
  const section = new SensorsSection(context);
  document
    .getElementById("cs-category")
    .replaceChildren(el("option", { value: "", text: "—" }), ...section.categories.map((c) => el("option", { value: c, text: c })));
  document.getElementById("cs-form").addEventListener("submit", (e) => section.create(e));
  const sensors = await section.load();
  setStatus("cs-status", `${sensors.length} custom sensors.`);
  return section;
}
