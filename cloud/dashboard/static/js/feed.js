// The fleet's anomaly feed: filters (machine, severity, state, time), newest first with
// "Older" paging, acknowledge / resolve from the row, kept current by the live stream (new
// anomalies reload the first page; workflow steps update their row), and the recent alerts
// with where their notifications went.

import { api, query } from "./api.js";
import { bootSequence, fillMachineSelect, setupPage, showConnection } from "./chrome.js";
import { el, fmt, timeOf } from "./format.js";
import { LiveStream } from "./live.js";
import { stepButtons } from "./workflow_step.js";

const PAGE = 50;
let context;
let rows = [];
let next = null;
let reloadTimer = null;
// Acknowledgements and resolutions made on this page (a list fetched before one is stale).
let changes = 0;

function filters() {
  const value = (id) => document.getElementById(id).value;
  const iso = (id) => (value(id) ? new Date(value(id)).toISOString() : "");
  return {
    machine_id: value("f-machine"),
    severity: value("f-severity"),
    state: value("f-state"),
    from: iso("f-from"),
    to: iso("f-to"),
  };
}

function badge(kind, value) {
  return el("span", { class: kind, dataset: kind === "sev" ? { severity: value } : { state: value }, text: value });
}

function rowFor(anomaly) {
  const by = anomaly.state === "resolved" ? anomaly.resolved_by : anomaly.acknowledged_by;
  return el(
    "tr",
    { dataset: { anomaly: String(anomaly.id), state: anomaly.state } },
    el("td", {}, el("a", { href: `/anomalies/${anomaly.id}`, text: timeOf(anomaly.timestamp) })),
    el("td", {}, el("a", { href: `/machines/${encodeURIComponent(anomaly.machine_id)}`, text: anomaly.machine_id })),
    el("td", { text: anomaly.sensors.join(", ") || "—" }),
    el("td", { text: `${anomaly.method} ${fmt(anomaly.score)}` }),
    el("td", {}, badge("sev", anomaly.severity)),
    el("td", { class: "state-cell" }, badge("state", anomaly.state)),
    el("td", { text: by || "" }),
    el("td", { class: "actions" }, ...stepButtons(context.user, anomaly, replaceRow)),
  );
}

function replaceRow(updated) {
  // A list fetched before this change must not bring the old row back (see load).
  changes += 1;
  const index = rows.findIndex((r) => r.id === updated.id);
  if (index < 0) return;
  rows[index] = { ...rows[index], ...updated };
  const f = filters();
  // A row that no longer matches the state filter leaves the feed.
  if (f.state && rows[index].state !== f.state) rows.splice(index, 1);
  render();
}

function render() {
  document.getElementById("feed-rows").replaceChildren(...rows.map(rowFor));
  document.getElementById("feed-empty").hidden = rows.length > 0;
  document.getElementById("feed-more").hidden = !next;
  const open = rows.filter((r) => r.state === "open").length;
  document.getElementById("feed-counts").textContent = `${rows.length} shown · ${open} open`;
}

async function load(more = false) {
  const params = { ...filters(), limit: PAGE, before: more ? next : undefined };
  const seen = changes;
  const page = await api(`/api/v1/anomalies${query(params)}`);
  if (seen !== changes) {
    // A row was acknowledged or resolved here while this list was on its way: it may be
    // older than that change. Ask again rather than show a resolved anomaly as open.
    scheduleReload();
    return;
  }
  rows = more ? rows.concat(page.anomalies) : page.anomalies;
  next = page.next;
  render();
}

async function loadAlerts() {
  const list = (await api("/api/v1/alerts?limit=10")).alerts;
  const items = list.map((a) => {
    const deliveries = a.notifications
      .map((n) => `${n.channel_name}: ${n.event} ${n.status}${n.attempts > 1 ? ` (${n.attempts} attempts)` : ""}`)
      .join(" · ");
    return el(
      "li",
      { dataset: { alert: String(a.id), status: a.status } },
      badge("sev", a.severity),
      ` ${a.status.toUpperCase()} ${a.summary} `,
      a.last_anomaly_id ? el("a", { href: `/anomalies/${a.last_anomaly_id}`, text: "anomaly" }) : null,
      el("div", { class: "deliveries", text: deliveries || "no channel" }),
    );
  });
  document.getElementById("alerts").replaceChildren(...items);
  document.getElementById("alerts-empty").hidden = items.length > 0;
}

// Predicted anomalies change state on the alert evaluator's tick (confirmed, expired), which
// the live stream does not announce: polled, and reloaded with the feed.
const PREDICTED_POLL_MS = 10_000;

function predictedItem(p) {
  const confirmed = p.confirmed_by ? el("a", { href: `/anomalies/${p.confirmed_by}`, text: "anomaly" }) : null;
  return el(
    "li",
    { dataset: { predicted: String(p.id), machine: p.machine_id, state: p.state } },
    el("span", { class: "state", dataset: { state: p.state }, text: p.state }),
    ` ${p.machine_id} · probability ${fmt(p.probability)} · ${timeOf(p.predicted_at)} `,
    confirmed,
  );
}

async function loadPredicted() {
  const params = { machine_id: filters().machine_id, limit: 20 };
  const items = (await api(`/api/v1/predicted-anomalies${query(params)}`)).predicted.map(predictedItem);
  document.getElementById("predicted").replaceChildren(...items);
  document.getElementById("predicted-empty").hidden = items.length > 0;
}

function scheduleReload() {
  // A burst of anomalies is one reload, not one per event.
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(() => {
    load().catch((e) => console.error(e));
    loadAlerts().catch((e) => console.error(e));
    loadPredicted().catch((e) => console.error(e));
  }, 300);
}

function onEvent(event) {
  if (event.type === "anomaly") scheduleReload();
  else if (event.type === "anomaly_state") {
    const row = rows.find((r) => r.id === event.id);
    if (row && row.state !== event.state) scheduleReload();
    else loadAlerts().catch((e) => console.error(e));
  } else if (event.type === "alert") loadAlerts().catch((e) => console.error(e));
  else if (event.type === "gap") scheduleReload();
}

async function main() {
  const boot = bootSequence();
  context = await setupPage("anomalies");
  const params = new URLSearchParams(location.search);
  const machineFilter = document.getElementById("f-machine");
  machineFilter.append(...context.machines.map((m) => el("option", { value: m.machine_id, text: m.machine_id })));
  for (const [id, key] of [["f-machine", "machine_id"], ["f-severity", "severity"], ["f-state", "state"]]) {
    if (params.get(key)) document.getElementById(id).value = params.get(key);
  }
  fillMachineSelect(context.machines, null, (id) => location.assign(`/machines/${encodeURIComponent(id)}`));
  document.getElementById("feed-filters").addEventListener("change", () => {
    load().catch((e) => console.error(e));
    loadPredicted().catch((e) => console.error(e));
  });
  document.getElementById("feed-filters").addEventListener("submit", (e) => e.preventDefault());
  document.getElementById("feed-more").addEventListener("click", () => load(true));
  await Promise.all([load(), loadAlerts(), loadPredicted()]);
  setInterval(() => loadPredicted().catch((e) => console.error(e)), PREDICTED_POLL_MS);
  new LiveStream({ onEvent, onState: showConnection }).start();
  await boot;
  document.body.dataset.ready = "true";
}

main().catch((error) => {
  document.body.dataset.error = String(error.message || error);
  console.error(error);
});
