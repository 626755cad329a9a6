// Anomaly page: what was detected (machine, time, method, score, the contributing sensors
// and their values in the reading) and its root-cause report (report.js).

import { api, ApiError } from "./api.js";
import { bootSequence, fillMachineSelect, setupPage } from "./chrome.js";
import { el, fmt, timeOf } from "./format.js";
import { ReportPanel } from "./report.js";

function renderAnomaly(anomaly) {
  document.title = `Anomaly ${anomaly.id} · Rig Alpha`;
  document.getElementById("anomaly-title").textContent = `ANOMALY ${anomaly.id}`;
  const machine = document.getElementById("anomaly-machine");
  machine.href = `/machines/${encodeURIComponent(anomaly.machine_id)}`;
  machine.textContent = `machine ${anomaly.machine_id}`;
  document.getElementById("anomaly-meta").textContent =
    `${timeOf(anomaly.timestamp)} · ${anomaly.method} · score ${fmt(anomaly.score)}`;
  const reading = anomaly.reading || { values: {}, custom_sensors: {} };
  const contributions = new Map(
    ((anomaly.details && anomaly.details.contributions) || []).map((c) => [c.sensor, c.share]),
  );
  const rows = anomaly.sensors.map((name) => {
    const value = reading.values[name] ?? reading.custom_sensors[name];
    const share = contributions.get(name);
    return el(
      "tr",
      { dataset: { sensor: name } },
      el("td", { text: name }),
      el("td", { text: fmt(value) }),
      el("td", { text: typeof share === "number" ? `${Math.round(share * 100)} %` : "—" }),
    );
  });
  document.getElementById("anomaly-sensors").replaceChildren(...rows);
  document.getElementById("anomaly-sensors-empty").hidden = rows.length > 0;
}

async function main() {
  const boot = bootSequence();
  const anomalyId = decodeURIComponent(location.pathname.split("/")[2] || "");
  const context = await setupPage("anomaly");
  let anomaly;
  try {
    anomaly = await api(`/api/v1/anomalies/${encodeURIComponent(anomalyId)}`);
  } catch (error) {
    if (error instanceof ApiError && (error.status === 404 || error.status === 422)) {
      document.getElementById("anomaly-title").textContent = "ANOMALY NOT FOUND";
      document.getElementById("report").hidden = true;
      fillMachineSelect(context.machines, null, (id) => location.assign(`/machines/${encodeURIComponent(id)}`));
      await boot;
      document.body.dataset.ready = "true";
      return;
    }
    throw error;
  }
  if (!context.machines.some((m) => m.machine_id === anomaly.machine_id)) {
    context.machines.push({ machine_id: anomaly.machine_id });
  }
  fillMachineSelect(context.machines, anomaly.machine_id, (id) => {
    location.assign(`/machines/${encodeURIComponent(id)}`);
  });
  renderAnomaly(anomaly);
  const panel = new ReportPanel(document.getElementById("report"), anomaly.id);
  await panel.load();
  await boot;
  document.body.dataset.ready = "true";
}

main().catch((error) => {
  document.body.dataset.error = String(error.message || error);
  console.error(error);
});
