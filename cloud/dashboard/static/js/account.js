// Change your own password: POST /api/v1/auth/password (the current one required). The
// server ends every other session of the account; this one stays logged in.

import { api, ApiError } from "./api.js";

const form = document.getElementById("password-form");
const error = document.getElementById("password-error");
const done = document.getElementById("password-done");
const submit = document.getElementById("password-submit");

function problem(e) {
  if (!(e instanceof ApiError)) return `Could not change the password: ${e.message}`;
  if (e.status === 401) return "The current password is wrong.";
  if (e.status === 429) return "Too many wrong passwords: wait a while and try again.";
  return `Could not change the password: ${e.message}`;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.textContent = "";
  done.textContent = "";
  const current = form.current.value;
  const fresh = form.fresh.value;
  if (!current || !fresh) {
    error.textContent = "Enter the current and the new password.";
    return;
  }
  if (fresh.length < 10) {
    error.textContent = "The new password needs at least 10 characters.";
    form.fresh.focus();
    return;
  }
  if (fresh !== form.repeat.value) {
    error.textContent = "The two new passwords differ.";
    form.repeat.select();
    return;
  }
  submit.disabled = true;
  try {
    await api("/api/v1/auth/password", {
      method: "POST",
      body: { current_password: current, new_password: fresh },
    });
    form.reset();
    done.textContent = "Password changed. Your other sessions were logged out.";
  } catch (e) {
    error.textContent = problem(e);
  } finally {
    submit.disabled = false;
  }
});

api("/api/v1/auth/me").then((user) => {
  document.getElementById("account-user").textContent = `${user.username} · ${user.role}`;
});
