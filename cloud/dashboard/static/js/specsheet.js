// Admin: import a sensor's spec sheet. Upload (PDF, CSV, TXT, JSON) -> the proposal in a review
// table where every value shows the page and line it came from -> the admin edits and confirms
// -> the custom sensors and their thresholds are created (through the same API code as the
// custom-sensor and threshold endpoints). Nothing is applied before the confirm.

import { api, ApiError } from "./api.js";
import { el } from "./format.js";

const FIELDS = [
  ["sensor_name", "Name", "text"],
  ["unit", "Unit", "text"],
  ["category", "Category", "category"],
  ["min_range", "Range min", "number"],
  ["max_range", "Range max", "number"],
  ["low_threshold", "Low threshold", "number"],
  ["high_threshold", "High threshold", "number"],
  ["accuracy", "Accuracy", "text"],
  ["output_signal", "Output signal", "text"],
  ["description", "Description", "text"],
];
const CATEGORIES = ["environmental", "mechanical", "thermal", "electrical", "fluid"];

// The admin typed these numbers: show them as typed, not rounded for a tile.
const plain = (value) => (value === null || value === undefined ? "—" : String(value));

function sourceText(prov) {
  if (!prov) return "—";
  const where = [prov.page ? `p.${prov.page}` : null, prov.line ? `l.${prov.line}` : null]
    .filter(Boolean)
    .join(" ");
  const text = prov.text ? `“${prov.text}”` : "";
  const rule = prov.rule ? ` (${prov.rule})` : "";
  return `${where}${where && text ? ": " : ""}${text}${rule}` || "—";
}

class SpecImport {
  constructor(root) {
    this.root = root;
    this.file = root.querySelector("#spec-file");
    this.status = root.querySelector("#spec-status");
    this.result = root.querySelector("#spec-result");
    this.proposal = null;
    this.inputs = []; // per sensor: {field: input}
    this.included = [];
    window.__specImport = this;
    root.querySelector("#spec-parse").addEventListener("click", () => this.upload());
  }

  async showMode() {
    try {
      const status = await api("/api/v1/assistant/status");
      const mode =
        status.mode === "model"
          ? `model ${status.model_parsing} (offline reader if it fails)`
          : "offline reader (no model configured)";
      this.root.querySelector("#spec-mode").textContent = `Parsing with: ${mode}.`;
    } catch {
      /* the mode line is informative only */
    }
  }

  say(text, kind = "") {
    this.status.textContent = text;
    this.status.dataset.kind = kind;
  }

  async upload() {
    const file = this.file.files[0];
    if (!file) {
      this.say("Choose a spec sheet first (PDF, CSV, TXT or JSON).", "error");
      return;
    }
    const form = new FormData();
    form.append("file", file, file.name);
    this.say(`Reading ${file.name}…`);
    this.result.replaceChildren();
    let body;
    const response = await fetch("/api/v1/assistant/spec-sheets", {
      method: "POST",
      body: form,
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (!response.ok) {
      const field = body && body.field && body.field !== "$" ? `${body.field}: ` : "";
      this.say(`${field}${(body && body.error) || `HTTP ${response.status}`}`, "error");
      return;
    }
    this.render(body);
  }

  render(proposal) {
    this.proposal = proposal;
    this.inputs = [];
    this.included = [];
    const by = proposal.path === "model" ? `model ${proposal.model}` : "offline reader";
    this.say(
      `${proposal.filename}: ${proposal.sensors.length} sensor(s) proposed by the ${by}. ` +
        "Review, edit and confirm: nothing is created before you confirm.",
      "ok",
    );
    const parts = [
      el(
        "p",
        { class: "spec-path", id: "spec-path", dataset: { path: proposal.path } },
        `Produced by: ${proposal.path === "model" ? proposal.model : "offline"}`,
      ),
    ];
    if (proposal.note) parts.push(el("p", { class: "spec-note", id: "spec-note", role: "note", text: proposal.note }));
    if (proposal.warnings.length) {
      parts.push(
        el(
          "ul",
          { class: "spec-warnings", id: "spec-warnings" },
          ...proposal.warnings.map((w) => el("li", { text: w })),
        ),
      );
    }
    proposal.sensors.forEach((sensor, index) => parts.push(this.sensorTable(sensor, index)));
    const scope = el(
      "select",
      { id: "spec-scope", "aria-label": "Where the thresholds apply" },
      el("option", { value: "", text: "all machines (fleet-wide)" }),
    );
    const machines = (window.__admin && window.__admin.machine) || null;
    if (machines) scope.append(el("option", { value: machines, text: `machine ${machines} only` }));
    this.scope = scope;
    this.error = el("div", { class: "row-error", id: "spec-error", role: "alert" });
    parts.push(
      el(
        "div",
        { class: "spec-actions" },
        el("label", {}, "Thresholds apply to ", scope),
        el("button", {
          type: "button",
          class: "primary",
          id: "spec-confirm",
          text: "Confirm and create",
          disabled: proposal.sensors.length === 0,
          onclick: () => this.confirm(),
        }),
        el("button", { type: "button", id: "spec-discard", text: "Discard", onclick: () => this.discard() }),
      ),
      this.error,
    );
    this.result.replaceChildren(...parts);
  }

  sensorTable(sensor, index) {
    const inputs = {};
    const include = el("input", {
      type: "checkbox",
      checked: true,
      id: `spec-include-${index}`,
      "aria-label": `Create sensor ${index + 1}`,
    });
    this.included.push(include);
    const rows = FIELDS.map(([field, title, kind]) => {
      let input;
      if (kind === "category") {
        input = el(
          "select",
          { name: `sensors[${index}].${field}`, "aria-label": `${title} of sensor ${index + 1}` },
          el("option", { value: "", text: "—" }),
          ...CATEGORIES.map((c) => el("option", { value: c, text: c })),
        );
        input.value = sensor[field] || "";
      } else {
        input = el("input", {
          type: kind === "number" ? "number" : "text",
          step: kind === "number" ? "any" : null,
          name: `sensors[${index}].${field}`,
          "aria-label": `${title} of sensor ${index + 1}`,
        });
        const value = sensor[field];
        input.value = value === null || value === undefined ? "" : String(value);
      }
      inputs[field] = input;
      const prov = sensor.provenance[field];
      const source = el("td", {
        class: "spec-source",
        text: sourceText(prov),
        dataset: { verified: prov ? String(prov.verified !== false) : "none" },
      });
      const problems = sensor.problems.filter((p) => p.field === `sensors[${index}].${field}`);
      return el(
        "tr",
        { dataset: { field } },
        el("th", { scope: "row", text: title }),
        el("td", {}, input, ...problems.map((p) => el("div", { class: "row-error", text: p.error }))),
        source,
      );
    });
    this.inputs.push(inputs);
    const caption = el(
      "caption",
      {},
      include,
      el("label", { for: `spec-include-${index}`, text: ` Sensor ${index + 1}: ${sensor.sensor_name || "unnamed"}` }),
    );
    return el(
      "table",
      { class: "thr-table spec-table", dataset: { index: String(index) } },
      caption,
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          el("th", { scope: "col", text: "Field" }),
          el("th", { scope: "col", text: "Value" }),
          el("th", { scope: "col", text: "Source in the file" }),
        ),
      ),
      el("tbody", {}, ...rows),
    );
  }

  values(index) {
    const out = {};
    for (const [field, , kind] of FIELDS) {
      const text = this.inputs[index][field].value.trim();
      if (text === "") out[field] = null;
      else out[field] = kind === "number" ? Number(text) : text;
    }
    return out;
  }

  async confirm() {
    this.error.textContent = "";
    const chosen = [];
    this.included.forEach((box, index) => {
      if (box.checked) chosen.push(index);
    });
    if (!chosen.length) {
      this.error.textContent = "Tick at least one sensor (or discard the proposal).";
      return;
    }
    const body = {
      proposal_id: this.proposal.proposal_id,
      machine_id: this.scope.value || null,
      sensors: chosen.map((i) => ({ ...this.values(i), proposal_index: i })),
    };
    try {
      const decision = await api("/api/v1/assistant/spec-proposals/confirm", { method: "POST", body });
      this.done(decision);
    } catch (error) {
      this.showError(error, chosen);
    }
  }

  showError(error, chosen) {
    const field = error instanceof ApiError ? error.field : null;
    this.error.textContent = field && field !== "$" ? `${field}: ${error.message}` : error.message;
    const match = field && /^sensors\[(\d+)\]\.(\w+)$/.exec(field);
    if (match) {
      const index = chosen[Number(match[1])];
      const input = this.inputs[index] && this.inputs[index][match[2]];
      if (input) {
        input.setAttribute("aria-invalid", "true");
        input.focus();
      }
    }
  }

  done(decision) {
    const lines = decision.applied.map((a) => {
      const t = a.thresholds;
      const limits = t ? `, thresholds ${plain(t.critical_low)} … ${plain(t.critical_high)}` : "";
      return el("li", { text: `${a.name} (${a.unit || "no unit"}, ${a.category || "—"}${limits})` });
    });
    this.say(`Created ${decision.applied.length} custom sensor(s).`, "ok");
    this.result.replaceChildren(
      el("ul", { id: "spec-created" }, ...lines),
      el("p", { class: "empty" }, "Their widgets appear on the overview as soon as readings carry them."),
    );
    this.proposal = null;
  }

  async discard() {
    try {
      await api("/api/v1/assistant/spec-proposals/discard", {
        method: "POST",
        body: { proposal_id: this.proposal.proposal_id },
      });
      this.say("Proposal discarded; nothing was created.", "ok");
      this.result.replaceChildren();
    } catch (error) {
      this.error.textContent = error.message;
    }
  }
}

const root = document.getElementById("spec-import");
if (root) {
  const importer = new SpecImport(root);
  importer.showMode().finally(() => (root.dataset.ready = "true"));
}
