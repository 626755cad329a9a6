// Login form: POST /api/v1/auth/login sets the HttpOnly session cookie; then on to `next`.

import { api, ApiError } from "./api.js";

export function sameOriginPath(next, origin) {
  // Resolved the way the browser will navigate (the URL parser drops tabs and newlines and
  // reads "\\" as "/"), then kept only when it stays on this origin: "/%09/evil.example"
  // or "//evil.example" resolve to another host and fall back to "/".
  if (!next || !next.startsWith("/")) return "/";
  let url;
  try {
    url = new URL(next, origin);
  } catch {
    return "/";
  }
  return url.origin === origin ? url.pathname + url.search + url.hash : "/";
}

function nextPath() {
  return sameOriginPath(new URLSearchParams(location.search).get("next"), location.origin);
}

const form = document.getElementById("login-form");
const error = document.getElementById("login-error");
const submit = document.getElementById("login-submit");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.textContent = "";
  const username = form.username.value.trim();
  const password = form.password.value;
  if (!username || !password) {
    error.textContent = "Enter user name and password.";
    (username ? form.password : form.username).focus();
    return;
  }
  submit.disabled = true;
  try {
    await api("/api/v1/auth/login", {
      method: "POST",
      body: { username, password },
      redirectOn401: false,
    });
    location.assign(nextPath());
  } catch (e) {
    error.textContent =
      e instanceof ApiError && e.status === 401
        ? "Wrong user name or password."
        : `Login failed: ${e.message}`;
    form.password.select();
  } finally {
    submit.disabled = false;
  }
});

// Already logged in: straight on.
api("/api/v1/auth/me", { redirectOn401: false })
  .then(() => location.assign(nextPath()))
  .catch(() => {});
