// The edge fleet: every edge as it last reported itself (GET /api/v1/edges): last seen,
// version, backlog, drops, the health of each data source, the models and thresholds in
// service per machine. Polled: edges report every few seconds, nothing here needs a push.

import { api } from "./api.js";
import { bootSequence, setupPage, showConnection } from "./chrome.js";
import { durationText, el, fmtInt, timeOf } from "./format.js";

const POLL_MS = 5000;
// An edge silent for longer than this is shown offline (it reports every 10 s by default;
// the alert rule edge_offline has its own bound).
const OFFLINE_S = 60;

function stateOf(edge) {
  if (edge.silent_s > OFFLINE_S) return "offline";
  return edge.status || "unknown";
}

function sources(inputs) {
  const items = Object.entries(inputs).map(([name, input]) => {
    const age = input.last_reading_age_s === null ? "no reading yet" : `last reading ${durationText(input.last_reading_age_s * 1000)} ago`;
    const down = input.down.length ? ` · down: ${input.down.join(", ")}` : "";
    return el(
      "li",
      { class: "source", dataset: { source: name, healthy: String(input.healthy) } },
      `${name} ${input.healthy ? "OK" : "FAILING"}`,
      el("span", { class: "meta", text: ` (${age}${down})` }),
    );
  });
  return items.length ? el("ul", {}, ...items) : "—";
}

function versions(byMachine, kind) {
  const items = Object.entries(byMachine).map(([machine, version]) =>
    el("li", { dataset: { [kind]: machine } }, `${machine}: ${version}`),
  );
  return items.length ? el("ul", {}, ...items) : "—";
}

function rowFor(edge) {
  const state = stateOf(edge);
  return el(
    "tr",
    { dataset: { edge: edge.edge_id, state } },
    el("td", {}, edge.edge_id, el("div", { class: "meta", text: edge.machines.join(", ") })),
    el("td", {}, el("span", { class: "state", dataset: { state }, text: state })),
    el("td", { class: "last-seen", title: timeOf(edge.last_seen), text: `${durationText(edge.silent_s * 1000)} ago` }),
    el("td", { class: "version", text: edge.version || "—" }),
    el("td", { class: "backlog", text: edge.backlog === null ? "—" : fmtInt(edge.backlog) }),
    el("td", {
      class: "drops",
      dataset: { drops: String((edge.dropped_total || 0) > 0) },
      text: edge.dropped_total === null ? "—" : fmtInt(edge.dropped_total),
    }),
    el("td", { class: "sources" }, sources(edge.inputs)),
    el("td", { class: "models" }, versions(edge.models, "model")),
    el("td", { class: "thresholds" }, versions(edge.thresholds, "thresholds")),
  );
}

function render(edges) {
  document.getElementById("edge-rows").replaceChildren(...edges.map(rowFor));
  document.getElementById("edges-empty").hidden = edges.length > 0;
  const offline = edges.filter((e) => stateOf(e) === "offline").length;
  document.getElementById("edge-counts").textContent = `${edges.length} edges · ${offline} offline`;
}

async function refresh() {
  try {
    render((await api("/api/v1/edges")).edges);
    showConnection({ state: "live", detail: `fleet status fetched ${new Date().toLocaleTimeString("en-GB")}` });
  } catch (error) {
    showConnection({ state: "stale", detail: String(error.message || error) });
  }
}

async function main() {
  const boot = bootSequence();
  await setupPage("edges");
  await refresh();
  setInterval(refresh, POLL_MS);
  await boot;
  document.body.dataset.ready = "true";
}

main().catch((error) => {
  document.body.dataset.error = String(error.message || error);
  console.error(error);
});
