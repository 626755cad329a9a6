// The root-cause report of one anomaly: "Generate report" writes a new version (through the
// configured model, or offline), the versions can be browsed, each downloads as PDF. The
// page says what wrote each version and, when the model's answer was not used, why.

import { api } from "./api.js";
import { el, fmt, timeOf } from "./format.js";

function pct(share) {
  return typeof share === "number" ? `${Math.round(share * 100)} %` : "—";
}

function table(id, headers, rows) {
  return el(
    "table",
    { class: "anomalies report-table", id },
    el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, ...rows),
  );
}

export class ReportPanel {
  constructor(root, anomalyId) {
    this.root = root;
    this.anomalyId = anomalyId;
    this.button = root.querySelector("#report-generate");
    this.versionSelect = root.querySelector("#report-version");
    this.pdf = root.querySelector("#report-pdf");
    this.status = root.querySelector("#report-status");
    this.body = root.querySelector("#report-body");
    this.button.addEventListener("click", () => this.generate());
    this.versionSelect.addEventListener("change", () => this.show(Number(this.versionSelect.value)));
    window.__report = this;
  }

  base() {
    return `/api/v1/anomalies/${encodeURIComponent(this.anomalyId)}`;
  }

  async load() {
    const data = await api(`${this.base()}/reports`);
    this.fillVersions(data.versions);
    if (data.report) this.render(data.report);
    else this.status.textContent = "No report yet: generate one.";
  }

  fillVersions(versions) {
    this.versionSelect.replaceChildren(
      ...versions.map((v) =>
        el("option", {
          value: String(v.version),
          text: `v${v.version} · ${v.path === "model" ? v.model : "offline"} · ${timeOf(v.created_at)}`,
        }),
      ),
    );
    this.versionSelect.hidden = versions.length === 0;
  }

  async generate() {
    this.button.disabled = true;
    this.status.textContent = "Gathering the facts and writing the report…";
    try {
      const stored = await api(`${this.base()}/reports`, { method: "POST" });
      const data = await api(`${this.base()}/reports`);
      this.fillVersions(data.versions);
      this.versionSelect.value = String(stored.version);
      this.render(stored);
    } catch (error) {
      this.status.textContent = `No report: ${error.message}`;
    } finally {
      this.button.disabled = false;
    }
  }

  async show(version) {
    const data = await api(`${this.base()}/reports?version=${version}`);
    this.render(data.report);
  }

  render(stored) {
    const report = stored.report;
    const by = stored.path === "model" ? `model ${stored.model}` : "the offline writer";
    this.status.textContent = `Version ${stored.version}, written by ${by} for ${stored.created_by || "—"} at ${timeOf(stored.created_at)}.`;
    this.pdf.href = `${this.base()}/reports?version=${stored.version}&format=pdf`;
    this.pdf.hidden = false;
    this.root.dataset.version = String(stored.version);
    this.root.dataset.path = stored.path;
    const parts = [];
    if (stored.note) parts.push(el("p", { class: "spec-note", id: "report-note", role: "note", text: stored.note }));
    parts.push(el("h3", { text: "Summary" }), el("p", { id: "report-summary", text: report.summary }));
    const c = report.confidence;
    parts.push(
      el("p", { id: "report-confidence", dataset: { level: c.level } }, `Confidence: ${c.level} (${fmt(c.score)}) — ${c.why}`),
    );
    parts.push(
      ...(report.remaining_life
        ? [
            el(
              "p",
              { id: "report-life" },
              `Remaining life: ${fmt(report.remaining_life.rul_hours)} h ` +
                `(${fmt(report.remaining_life.low_hours)}–${fmt(report.remaining_life.high_hours)} h)`,
            ),
          ]
        : []),
      el("h3", { text: "Likely causes" }),
      el(
        "ol",
        { id: "report-causes" },
        ...report.likely_causes.map((cause) =>
          el(
            "li",
            { dataset: { mode: cause.failure_mode || "" } },
            el("strong", { text: cause.cause }),
            ` (${pct(cause.likelihood)})`,
            el("ul", {}, ...cause.evidence.map((e) => el("li", { text: e }))),
          ),
        ),
      ),
      el("h3", { text: "Recommended actions" }),
      el("ol", { id: "report-actions" }, ...report.recommended_actions.map((a) => el("li", { text: a }))),
      el("h3", { text: "Contributing sensors" }),
      table(
        "report-sensors",
        ["Sensor", "Share", "Value", "Baseline", "z", "State"],
        report.contributing_sensors.map((s) =>
          el(
            "tr",
            { dataset: { sensor: s.sensor, state: s.threshold_state || "none" } },
            el("td", { text: s.sensor }),
            el("td", { text: pct(s.share) }),
            el("td", { text: `${fmt(s.value)} ${s.unit || ""}`.trim() }),
            el("td", { text: s.baseline_mean === null ? "—" : `${fmt(s.baseline_mean)} ± ${fmt(s.baseline_std ?? NaN)}` }),
            el("td", { text: s.z === null ? "—" : fmt(s.z) }),
            el("td", { text: s.threshold_state || "—" }),
          ),
        ),
      ),
      el("h3", { text: "Readings cited" }),
      table(
        "report-readings",
        ["Time", "Sensor", "Value", "What"],
        report.readings_cited.map((r) =>
          el(
            "tr",
            {},
            el("td", { text: timeOf(r.timestamp) }),
            el("td", { text: r.sensor }),
            el("td", { text: `${fmt(r.value)} ${r.unit || ""}`.trim() }),
            el("td", { text: r.what }),
          ),
        ),
      ),
      el("h3", { text: "Similar past anomalies" }),
    );
    const similar = [...report.similar_anomalies.machine, ...report.similar_anomalies.fleet];
    if (similar.length) {
      parts.push(
        table(
          "report-similar",
          ["Anomaly", "Machine", "Time", "Similarity", "Sensors", "State", "Operator note"],
          similar.map((a) =>
            el(
              "tr",
              { dataset: { id: String(a.id) } },
              el("td", {}, el("a", { href: `/anomalies/${a.id}`, text: `#${a.id}` })),
              el("td", { text: a.machine_id }),
              el("td", { text: timeOf(a.timestamp) }),
              el("td", { text: fmt(a.similarity) }),
              el("td", { text: a.sensors.join(", ") }),
              el("td", { text: a.state }),
              el("td", { text: a.note ? `${a.note} (${a.noted_by || "—"})` : "—" }),
            ),
          ),
        ),
      );
    } else {
      parts.push(el("p", { class: "empty", id: "report-similar-none", text: "None found." }));
    }
    this.body.replaceChildren(...parts);
  }
}
