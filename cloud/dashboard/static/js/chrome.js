// What every logged-in page shares: boot sequence, user and navigation, machine selector,
// connection indicator.

import { api } from "./api.js";
import { el } from "./format.js";

const BOOT_KEY = "rig-alpha-booted";
const MACHINE_KEY = "rig-alpha-machine";

/** docs/manifest.md §4.1: INITIALIZING → CONNECTING SATELLITE → SYSTEM NOMINAL, fade,
 *  reveal. Shown once per browser session, not on every page change. */
export function bootSequence() {
  const overlay = document.getElementById("boot");
  if (!overlay) return Promise.resolve();
  let seen;
  try {
    seen = sessionStorage.getItem(BOOT_KEY) === "1";
    sessionStorage.setItem(BOOT_KEY, "1");
  } catch {
    seen = false;
  }
  if (seen || matchMedia("(prefers-reduced-motion: reduce)").matches) {
    overlay.remove();
    return Promise.resolve();
  }
  overlay.hidden = false;
  const text = document.getElementById("boot-text");
  return new Promise((resolve) => {
    setTimeout(() => (text.textContent = "CONNECTING SATELLITE..."), 800);
    setTimeout(() => (text.textContent = "SYSTEM NOMINAL."), 1600);
    setTimeout(() => overlay.classList.add("fading"), 2200);
    setTimeout(() => {
      overlay.remove();
      resolve();
    }, 2500);
  });
}

export function showConnection({ state, detail }) {
  const node = document.getElementById("conn");
  if (!node) return;
  node.dataset.state = state;
  node.textContent = { live: "LIVE", stale: "STALE", connecting: "CONNECTING", offline: "OFFLINE · STALE", refused: "REFUSED" }[state] || state.toUpperCase();
  node.title = detail;
  node.setAttribute("aria-label", `Live stream: ${state} (${detail})`);
}

export function preferredMachine(machines) {
  const ids = machines.map((m) => m.machine_id);
  const fromUrl = new URLSearchParams(location.search).get("machine");
  let stored;
  try {
    stored = localStorage.getItem(MACHINE_KEY);
  } catch {
    stored = null;
  }
  for (const candidate of [fromUrl, stored]) if (candidate && ids.includes(candidate)) return candidate;
  return ids[0] || null;
}

export function rememberMachine(id) {
  try {
    localStorage.setItem(MACHINE_KEY, id);
  } catch {
    /* private mode: fine */
  }
}

/** Logged-in page set-up. Resolves to {user, machines, catalog}. */
export async function setupPage(pageName) {
  const [user, machineList, catalog] = await Promise.all([
    api("/api/v1/auth/me"),
    api("/api/v1/machines"),
    api("/api/v1/sensors"),
  ]);
  // The name links to the account page (change your own password).
  const account = document.createElement("a");
  account.href = "/account";
  account.title = "Your account: change your password";
  account.textContent = `${user.username} · ${user.role}`;
  document.getElementById("user-name").replaceChildren(account);
  document.getElementById("nav-admin").hidden = user.role !== "admin";
  const auditNav = document.getElementById("nav-audit");
  if (auditNav) auditNav.hidden = user.role !== "admin";
  // The edge fleet is for operators and admins (GET /api/v1/edges).
  const edgesNav = document.getElementById("nav-edges");
  if (edgesNav) edgesNav.hidden = user.role === "viewer";
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === pageName) link.setAttribute("aria-current", "page");
  }
  document.getElementById("logout").addEventListener("click", async () => {
    try {
      await api("/api/v1/auth/logout", { method: "POST", redirectOn401: false });
    } finally {
      location.assign("/login");
    }
  });
  const machines = machineList.machines;
  // Assigned machines that have not reported yet are still selectable.
  for (const id of user.machines || []) {
    if (!machines.some((m) => m.machine_id === id)) {
      machines.push({ machine_id: id, total_readings: 0, first_seen: null, last_timestamp: null });
    }
  }
  machines.sort((a, b) => a.machine_id.localeCompare(b.machine_id));
  return { user, machines, catalog: catalog.sensors };
}

export function fillMachineSelect(machines, selected, onChange) {
  const select = document.getElementById("machine-select");
  select.replaceChildren(
    ...machines.map((m) => el("option", { value: m.machine_id, text: m.machine_id })),
  );
  if (!machines.length) select.append(el("option", { value: "", text: "no machines" }));
  if (selected) select.value = selected;
  select.addEventListener("change", () => onChange(select.value));
  const nav = document.getElementById("nav-machine");
  if (nav && selected) nav.href = `/machines/${encodeURIComponent(selected)}`;
}

/** Adds a machine first seen by the live stream to the selector. */
export function addMachineOption(id) {
  const select = document.getElementById("machine-select");
  if ([...select.options].some((o) => o.value === id)) return false;
  const placeholder = [...select.options].find((o) => o.value === "");
  if (placeholder) placeholder.remove();
  select.append(el("option", { value: id, text: id }));
  return true;
}
