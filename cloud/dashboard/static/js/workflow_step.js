// The acknowledge / resolve step: a dialog asks for a note, the API records who and when.
// Used by the feed (feed.js) and the anomaly page (workflow.js). Whether the user may take a
// step is the API's decision; the buttons are only offered to operators and admins.

import { api, ApiError } from "./api.js";
import { el, timeOf } from "./format.js";

export const STEP_ROLES = new Set(["admin", "operator"]);
const TITLES = { acknowledge: "Acknowledge", resolve: "Resolve" };

function dialog() {
  let node = document.getElementById("step-dialog");
  if (node) return node;
  // Pages without the dialog in their HTML get the same one built here.
  node = el(
    "dialog",
    { id: "step-dialog", class: "step-dialog", "aria-labelledby": "step-title" },
    el(
      "form",
      { method: "dialog", id: "step-form" },
      el("h2", { id: "step-title", text: "Acknowledge" }),
      el("label", {}, "Note ", el("textarea", { id: "step-note", name: "note", rows: "3", maxlength: "2000" })),
      el("p", { class: "error", id: "step-error", role: "alert" }),
      el(
        "div",
        { class: "dialog-buttons" },
        el("button", { type: "button", id: "step-cancel", text: "Cancel" }),
        el("button", { type: "submit", class: "primary", id: "step-confirm", text: "Confirm" }),
      ),
    ),
  );
  document.body.append(node);
  return node;
}

/** Asks for a note and takes the step; resolves to the updated anomaly, or null if cancelled. */
export function takeStep(action, anomaly) {
  const box = dialog();
  const form = box.querySelector("#step-form");
  const note = box.querySelector("#step-note");
  const error = box.querySelector("#step-error");
  box.querySelector("#step-title").textContent = `${TITLES[action]} anomaly ${anomaly.id} (machine ${anomaly.machine_id})`;
  note.value = "";
  error.textContent = "";
  return new Promise((resolve) => {
    const cleanup = () => {
      form.removeEventListener("submit", onSubmit);
      box.querySelector("#step-cancel").removeEventListener("click", onCancel);
    };
    const onCancel = () => {
      cleanup();
      box.close();
      resolve(null);
    };
    const onSubmit = async (event) => {
      event.preventDefault();
      try {
        const updated = await api(`/api/v1/anomalies/${anomaly.id}/${action}`, {
          method: "POST",
          body: { note: note.value },
        });
        cleanup();
        box.close();
        resolve(updated);
      } catch (e) {
        error.textContent = e instanceof ApiError ? e.message : String(e);
      }
    };
    form.addEventListener("submit", onSubmit);
    box.querySelector("#step-cancel").addEventListener("click", onCancel);
    box.showModal();
    note.focus();
  });
}

/** The step buttons for an anomaly in its state (none for viewers or when resolved). */
export function stepButtons(user, anomaly, onDone) {
  if (!STEP_ROLES.has(user.role) || anomaly.state === "resolved") return [];
  const buttons = [];
  const add = (action, label) => {
    buttons.push(
      el("button", {
        type: "button",
        class: action === "resolve" ? "primary" : "",
        dataset: { step: action, anomaly: String(anomaly.id) },
        text: label,
        onclick: async () => {
          const updated = await takeStep(action, anomaly);
          if (updated) onDone(updated);
        },
      }),
    );
  };
  if (anomaly.state === "open") add("acknowledge", "Acknowledge");
  add("resolve", "Resolve");
  return buttons;
}

export function auditText(anomaly) {
  const parts = [];
  if (anomaly.acknowledged_at) {
    parts.push(`acknowledged by ${anomaly.acknowledged_by} ${timeOf(anomaly.acknowledged_at)}${anomaly.ack_note ? `: “${anomaly.ack_note}”` : ""}`);
  }
  if (anomaly.resolved_at) {
    parts.push(`resolved by ${anomaly.resolved_by} ${timeOf(anomaly.resolved_at)}${anomaly.resolution_note ? `: “${anomaly.resolution_note}”` : ""}`);
  }
  return parts.join(" · ");
}
