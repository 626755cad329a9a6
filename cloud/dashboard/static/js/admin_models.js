// Admin section: every machine's models (detector and remaining life) with their validation
// metrics beside the baseline they had to beat, the reason each was accepted or refused, and
// the two actions: retrain (queued for the training worker, its job followed here) and roll
// back (the API refuses when no earlier model was ever in service, and says so).

import { api } from "./api.js";
import { errorText, flash, setStatus, when } from "./admin_common.js";
import { el, fmt, fmtInt } from "./format.js";

const JOB_POLL_MS = 2000;

/** The numbers of a validation summary, "f1 0.912 · precision 0.95 · ...". */
function metricsText(metrics) {
  if (!metrics) return "—";
  const source = metrics.validation && typeof metrics.validation === "object" ? metrics.validation : metrics;
  const parts = [];
  for (const [key, value] of Object.entries(source)) {
    if (typeof value === "number") parts.push(`${key} ${fmt(value)}`);
  }
  return parts.length ? parts.join(" · ") : "—";
}

class ModelsSection {
  constructor(context) {
    this.machineIds = context.machines.map((m) => m.machine_id);
    this.jobs = new Map(); // machine id → job text
  }

  async load() {
    const { models } = await api("/api/v1/models");
    const byMachine = new Map(this.machineIds.map((id) => [id, []]));
    for (const model of models) {
      if (!byMachine.has(model.machine_id)) byMachine.set(model.machine_id, []);
      byMachine.get(model.machine_id).push(model);
    }
    const ids = [...byMachine.keys()].sort();
    document.getElementById("models-machines").replaceChildren(...ids.map((id) => this.machine(id, byMachine.get(id))));
    return models;
  }

  machine(machineId, models) {
    const error = el("div", { class: "row-error", role: "alert" });
    const job = el("span", { class: "job", role: "status", text: this.jobs.get(machineId) || "" });
    const id = encodeURIComponent(machineId);
    const retrain = el("button", {
      type: "button",
      class: "primary",
      name: "retrain",
      text: "Retrain",
      "aria-label": `Retrain the detector of machine ${machineId}`,
      onclick: async () => {
        error.textContent = "";
        try {
          const answer = await api(`/api/v1/machines/${id}/retrain`, { method: "POST" });
          this.follow(machineId, answer.job_id, answer.status_url);
        } catch (e) {
          error.textContent = errorText(e);
        }
      },
    });
    const rollback = (kind, path) =>
      el("button", {
        type: "button",
        name: kind === "rul" ? "rollback-rul" : "rollback",
        text: kind === "rul" ? "Roll back life model" : "Roll back",
        "aria-label": `Roll back the ${kind === "rul" ? "remaining-life model" : "detector"} of machine ${machineId}`,
        onclick: async () => {
          error.textContent = "";
          try {
            const back = await api(path, { method: "POST" });
            await this.load();
            setStatus("models-status", `Machine ${machineId}: version ${back.version} is in service again.`);
            const row = document.querySelector(`tr[data-model-id="${back.id}"]`);
            if (row) flash(row);
          } catch (e) {
            // The refusal's reason, from the API (no earlier model, none in service).
            error.textContent = `Refused — ${errorText(e)}`;
          }
        },
      });
    const buttons = [retrain, rollback("detector", `/api/v1/machines/${id}/model/rollback`)];
    if (models.some((m) => m.strategy === "rul")) buttons.push(rollback("rul", `/api/v1/machines/${id}/rul/model/rollback`));
    const body = el("tbody", {}, ...models.map((m) => this.row(m)));
    const table = el(
      "table",
      { class: "admin-table" },
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          ...["Version", "Kind", "Status", "Validation", "Baseline it faced", "Reason", "Trained on", "Created", "In service since"].map(
            (h) => el("th", { scope: "col", text: h }),
          ),
        ),
      ),
      body,
    );
    return el(
      "section",
      { class: "model-machine", dataset: { machine: machineId } },
      el("h3", {}, `Machine ${machineId}`, ...buttons.flatMap((b) => [" ", b]), " ", job),
      error,
      models.length ? table : el("p", { class: "empty", text: "No model trained yet." }),
    );
  }

  row(model) {
    const baseline = model.baseline_metrics;
    const baselineText = baseline ? `v${baseline.version ?? "?"}: ${metricsText(baseline)}` : "none (first model)";
    const rows = model.training_rows === null ? "—" : `${fmtInt(model.training_rows)} readings`;
    return el(
      "tr",
      { dataset: { modelId: String(model.id), status: model.status, kind: model.strategy === "rul" ? "rul" : "detector" } },
      el("th", { scope: "row", text: `v${model.version}` }),
      el("td", { text: model.strategy }),
      el("td", { class: "status", text: model.status }),
      el("td", { class: "metrics", text: metricsText(model.metrics) }),
      el("td", { class: "metrics muted", text: baselineText }),
      el("td", { class: "reason", text: model.reason || "—" }),
      el("td", { class: "muted", text: rows }),
      el("td", { class: "muted", text: `${when(model.created_at)}${model.created_by ? ` · ${model.created_by}` : ""}` }),
      el("td", { class: "muted", text: when(model.activated_at) }),
    );
  }

  /** Follows a training job until it ends, then shows the registry as it now is. */
  follow(machineId, jobId, statusUrl) {
    const show = (text) => {
      this.jobs.set(machineId, text);
      const node = document.querySelector(`.model-machine[data-machine="${CSS.escape(machineId)}"] .job`);
      if (node) node.textContent = text;
    };
    show(`job ${jobId}: queued`);
    setStatus("models-status", `Machine ${machineId}: retraining queued (job ${jobId}).`);
    const poll = async () => {
      let job;
      try {
        job = await api(statusUrl);
      } catch (e) {
        show(`job ${jobId}: ${errorText(e)}`);
        return;
      }
      if (job.status === "done") {
        show(`job ${jobId}: done${job.model_id ? ` (model ${job.model_id})` : ""}`);
        await this.load();
      } else if (job.status === "failed") {
        show(`job ${jobId}: failed — ${job.error || "no reason given"}`);
      } else {
        show(`job ${jobId}: ${job.status}`);
        setTimeout(poll, JOB_POLL_MS);
      }
    };
    setTimeout(poll, JOB_POLL_MS);
  }
}

export async function startModels(context) {
  const section = new ModelsSection(context);
  const models = await section.load();
  setStatus("models-status", `${models.length} models.`);
  return section;
}
