// The audit trail for admins and auditors: filters (user, action, resource, category, time),
// newest first with "Older" paging, failed-login bursts highlighted, CSV and PDF exports of
// the filtered events, and a check of the hash chains and signed checkpoints.

import { api, query } from "./api.js";
import { setupPage } from "./chrome.js";
import { el, timeOf } from "./format.js";

const PAGE = 100;
let rows = [];
let next = null;
let bursts = [];

function filters() {
  const value = (id) => document.getElementById(id).value.trim();
  const iso = (id) => (value(id) ? new Date(value(id)).toISOString() : "");
  return {
    actor: value("f-actor"),
    action: value("f-action"),
    resource: value("f-resource"),
    category: value("f-category"),
    since: iso("f-since"),
    until: iso("f-until"),
  };
}

function change(event) {
  const parts = [];
  if (event.before !== null && event.before !== undefined) parts.push(`before ${JSON.stringify(event.before)}`);
  if (event.after !== null && event.after !== undefined) parts.push(`after ${JSON.stringify(event.after)}`);
  const detail = event.detail || {};
  if (Object.keys(detail).length) parts.push(`detail ${JSON.stringify(detail)}`);
  return parts.join(" · ");
}

function inBurst(event) {
  if (event.outcome !== "failure") return false;
  return bursts.some((b) => (b.kind === "ip" ? b.who === event.ip : b.who === event.actor));
}

function rowFor(event) {
  const classes = [event.outcome === "failure" ? "failure" : "", inBurst(event) ? "burst" : ""];
  return el(
    "tr",
    {
      class: classes.filter(Boolean).join(" ") || undefined,
      dataset: { seq: `${event.category}:${event.seq}`, action: event.action },
      title: `${event.category} #${event.seq} · sha256 ${event.hash}`,
    },
    el("td", { text: timeOf(event.at) }),
    el("td", { text: event.actor ? `${event.actor}${event.role ? ` (${event.role})` : ""}` : "—" }),
    el("td", { text: event.ip || event.source || "" }),
    el("td", { text: event.action }),
    el("td", { text: event.resource }),
    el("td", { text: event.outcome }),
    el("td", { class: "change", text: change(event) }),
  );
}

function render() {
  document.getElementById("event-rows").replaceChildren(...rows.map(rowFor));
  document.getElementById("events-empty").hidden = rows.length > 0;
  document.getElementById("events-more").hidden = !next;
  document.getElementById("audit-counts").textContent = `${rows.length} event(s) shown`;
  const list = document.getElementById("bursts");
  list.replaceChildren(
    ...bursts.map((b) =>
      el("li", {
        dataset: { kind: b.kind },
        text: `${b.failures} failed logins ${b.kind === "ip" ? "from" : "for"} ${b.who} between ${timeOf(b.first)} and ${timeOf(b.last)}`,
      }),
    ),
  );
  document.getElementById("bursts-panel").hidden = bursts.length === 0;
}

function exportLinks() {
  const f = filters();
  document.getElementById("export-csv").href = `/api/v1/audit${query({ ...f, format: "csv" })}`;
  document.getElementById("export-pdf").href = `/api/v1/audit${query({ ...f, format: "pdf" })}`;
}

async function load(more = false) {
  const params = { ...filters(), limit: PAGE };
  if (more && next) Object.assign(params, { before: next.at, before_seq: next.seq });
  document.body.dataset.loading = "true";
  const page = await api(`/api/v1/audit${query(params)}`);
  delete document.body.dataset.loading;
  rows = more ? rows.concat(page.events) : page.events;
  bursts = page.bursts;
  next = page.next_before ? { at: page.next_before, seq: page.next_before_seq } : null;
  exportLinks();
  render();
}

async function verify() {
  const out = document.getElementById("verify-result");
  out.hidden = false;
  out.textContent = "Verifying…";
  const result = await api("/api/v1/audit/verify");
  out.dataset.ok = String(result.ok);
  if (result.ok) {
    const signed = result.signature_checked
      ? `${result.checkpoints_checked} signed checkpoint(s) hold`
      : "no verification key on the server: signatures not checked";
    out.textContent = `Intact: every chain verified; ${signed}.`;
  } else {
    const p = result.problem;
    out.textContent = `TAMPERED: ${p.category} row ${p.seq ?? "?"} ${p.kind}: ${p.message}`;
  }
}

async function main() {
  await setupPage("audit");
  document.getElementById("audit-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    load().catch(showError);
  });
  document.getElementById("events-more").addEventListener("click", () => load(true).catch(showError));
  document.getElementById("verify").addEventListener("click", () => verify().catch(showError));
  for (const input of document.querySelectorAll("#audit-filters input, #audit-filters select")) {
    input.addEventListener("change", exportLinks);
  }
  await load();
  document.body.dataset.ready = "true";
}

function showError(error) {
  const out = document.getElementById("verify-result");
  out.hidden = false;
  out.dataset.ok = "false";
  out.textContent = `Error: ${error.message}`;
}

main().catch((error) => {
  document.body.dataset.error = String(error.message || error);
  showError(error);
});
