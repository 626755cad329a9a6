// Small pieces the admin sections share: status lines, API errors in words, the saved flash,
// two-step buttons for what cannot be undone, and secrets shown once.

import { ApiError } from "./api.js";
import { el, timeOf } from "./format.js";

/** An API error as the admin should read it: the field the API names, then its message. */
export function errorText(error) {
  const field = error instanceof ApiError ? error.field : null;
  return field && field !== "$" ? `${field}: ${error.message}` : error.message;
}

export function setStatus(id, text) {
  document.getElementById(id).textContent = text;
}

export function when(iso) {
  return iso ? timeOf(iso) : "—";
}

export function flash(row) {
  row.classList.remove("saved");
  void row.offsetWidth; // restart the animation
  row.classList.add("saved");
}

/** A button that asks to be pressed again before ``action`` runs (no window.confirm: it
 *  blocks the page, and a second press on the same spot is as deliberate). */
export function confirmButton(text, ariaLabel, action) {
  const button = el("button", { type: "button", text, "aria-label": ariaLabel });
  let armed = false;
  button.addEventListener("click", async () => {
    if (!armed) {
      armed = true;
      button.textContent = `Confirm ${text.toLowerCase()}`;
      button.dataset.armed = "true";
      return;
    }
    armed = false;
    button.textContent = text;
    delete button.dataset.armed;
    await action();
  });
  button.addEventListener("blur", () => {
    armed = false;
    button.textContent = text;
    delete button.dataset.armed;
  });
  return button;
}

/** Shows a secret in its box (``<id>``, ``<id>-value`` and a label node) until the page is
 *  left: it is never fetched again. */
export function showSecret(id, labelId, labelText, value) {
  document.getElementById(labelId).textContent = labelText;
  document.getElementById(`${id}-value`).textContent = value;
  document.getElementById(id).hidden = false;
}

/** "A, B c" → ["A", "B", "c"]. */
export function machineList(text) {
  return text
    .split(/[\s,]+/)
    .map((m) => m.trim())
    .filter(Boolean);
}
