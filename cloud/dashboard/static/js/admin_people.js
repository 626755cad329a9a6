// Admin sections for who may reach the cloud: users (create, role, machine scope, disable,
// password reset, delete) and the edges' ingest keys (create — the key shown once — revoke).
// The API decides (an admin cannot demote, disable or delete themselves, names are checked
// there): the page shows its answer next to the row.

import { api } from "./api.js";
import { confirmButton, errorText, flash, machineList, setStatus, showSecret, when } from "./admin_common.js";
import { el } from "./format.js";

const ROLES = ["viewer", "operator", "admin"];

class UsersSection {
  constructor(context) {
    this.me = context.user.username;
  }

  async load() {
    const { users } = await api("/api/v1/users");
    document.getElementById("user-rows").replaceChildren(...users.map((u) => this.row(u)));
    return users;
  }

  row(user) {
    const error = el("div", { class: "row-error", role: "alert" });
    const name = user.username;
    const role = el(
      "select",
      { "aria-label": `Role of ${name}`, name: "role" },
      ...ROLES.map((r) => el("option", { value: r, text: r, selected: r === user.role })),
    );
    const all = el("input", { type: "checkbox", name: "all", "aria-label": `${name} sees every machine` });
    all.checked = user.machines === null;
    const machines = el("input", {
      name: "machines",
      placeholder: "A, B",
      "aria-label": `Machines of ${name}`,
      value: (user.machines || []).join(", "),
    });
    machines.disabled = all.checked;
    all.addEventListener("change", () => (machines.disabled = all.checked));
    const state = user.disabled ? "disabled" : "active";
    const row = el("tr", { dataset: { username: name, state } });
    const run = async (work, done) => {
      error.textContent = "";
      try {
        await work();
        await this.load();
        setStatus("user-status", done);
        const fresh = document.querySelector(`#user-rows tr[data-username="${CSS.escape(name)}"]`);
        if (fresh) flash(fresh);
      } catch (e) {
        error.textContent = errorText(e);
      }
    };
    const path = `/api/v1/users/${encodeURIComponent(name)}`;
    const save = el("button", {
      type: "button",
      class: "primary",
      text: "Save",
      "aria-label": `Save role and machines of ${name}`,
      onclick: () => {
        const body = { role: role.value };
        if (all.checked) body.all_machines = true;
        else body.machines = machineList(machines.value);
        return run(() => api(path, { method: "PATCH", body }), `Saved ${name}.`);
      },
    });
    const toggle = el("button", {
      type: "button",
      name: "toggle",
      text: user.disabled ? "Enable" : "Disable",
      "aria-label": `${user.disabled ? "Enable" : "Disable"} ${name}`,
      onclick: () =>
        run(
          () => api(path, { method: "PATCH", body: { disabled: !user.disabled } }),
          user.disabled ? `${name} may log in again.` : `${name} is disabled and logged out.`,
        ),
    });
    const reset = el("button", {
      type: "button",
      name: "reset",
      text: "Reset password",
      "aria-label": `Reset the password of ${name}`,
      onclick: async () => {
        error.textContent = "";
        try {
          const answer = await api(`${path}/password-reset`, { method: "POST" });
          showSecret("user-secret", "user-secret-name", answer.username, answer.password);
          setStatus("user-status", `New password for ${name}; their sessions are ended.`);
        } catch (e) {
          error.textContent = errorText(e);
        }
      },
    });
    // Your own password is changed with the current one, not reset from here (a stolen
    // session must not be enough to take the account over).
    reset.hidden = name === this.me;
    const remove = confirmButton("Delete", `Delete ${name}`, () =>
      run(() => api(path, { method: "DELETE" }), `Deleted ${name}.`),
    );
    remove.name = "delete";
    row.append(
      el("th", { scope: "row", text: name + (name === this.me ? " (you)" : "") }),
      el("td", {}, role),
      el("td", {}, el("label", {}, all, " all"), " ", machines),
      el("td", { class: "state", text: state }),
      el("td", { class: "muted", text: when(user.created_at) }),
      el("td", { class: "actions" }, save, " ", toggle, " ", reset, " ", remove, error),
    );
    return row;
  }

  async create(event) {
    event.preventDefault();
    const name = document.getElementById("user-new-name");
    const password = document.getElementById("user-new-password");
    const all = document.getElementById("user-new-all").checked;
    const body = {
      username: name.value.trim(),
      password: password.value,
      role: document.getElementById("user-new-role").value,
      machines: all ? null : machineList(document.getElementById("user-new-machines").value),
    };
    try {
      await api("/api/v1/users", { method: "POST", body });
      setStatus("user-status", `Created ${body.username} (${body.role}).`);
      name.value = "";
      password.value = "";
      await this.load();
    } catch (e) {
      setStatus("user-status", `Not created — ${errorText(e)}`);
    }
  }
}

export async function startUsers(context) {
  const section = new UsersSection(context);
  const all = document.getElementById("user-new-all");
  const machines = document.getElementById("user-new-machines");
  all.addEventListener("change", () => (machines.disabled = all.checked));
  document.getElementById("user-form").addEventListener("submit", (e) => section.create(e));
  const users = await section.load();
  setStatus("user-status", `${users.length} users.`);
  return section;
}

class KeysSection {
  async load() {
    const { keys } = await api("/api/v1/edge-keys");
    keys.reverse(); // newest first
    document.getElementById("key-rows").replaceChildren(...keys.map((k) => this.row(k)));
    document.getElementById("keys-empty").hidden = keys.length > 0;
    return keys;
  }

  row(key) {
    const state = key.revoked_at ? "revoked" : "active";
    const error = el("div", { class: "row-error", role: "alert" });
    const actions = el("td", { class: "actions" });
    if (!key.revoked_at) {
      const revoke = confirmButton("Revoke", `Revoke key ${key.key_id} of ${key.edge_id}`, async () => {
        error.textContent = "";
        try {
          await api(`/api/v1/edge-keys/${encodeURIComponent(key.key_id)}`, { method: "DELETE" });
          await this.load();
          setStatus("key-status", `Key ${key.key_id} of ${key.edge_id} is revoked: the edge is refused from now on.`);
        } catch (e) {
          error.textContent = errorText(e);
        }
      });
      revoke.name = "revoke";
      actions.append(revoke);
    }
    actions.append(error);
    return el(
      "tr",
      { dataset: { keyId: key.key_id, edge: key.edge_id, state } },
      el("th", { scope: "row" }, el("code", { text: key.key_id })),
      el("td", { text: key.edge_id }),
      el("td", { class: "machines", text: key.machines ? key.machines.join(", ") : "unbound" }),
      el("td", { class: "muted", text: when(key.created_at) }),
      el("td", { text: key.created_by || "—" }),
      el("td", { class: "muted", text: when(key.last_used) }),
      el("td", { class: "state", text: key.revoked_at ? `revoked ${when(key.revoked_at)}` : "active" }),
      actions,
    );
  }

  async create(event) {
    event.preventDefault();
    const edge = document.getElementById("key-edge");
    const edgeId = edge.value.trim();
    const machines = machineList(document.getElementById("key-machines").value);
    try {
      const answer = await api(`/api/v1/edges/${encodeURIComponent(edgeId)}/keys`, {
        method: "POST",
        body: machines.length ? { machines } : undefined,
      });
      showSecret("key-secret", "key-secret-edge", answer.edge_id, answer.api_key);
      setStatus("key-status", `Key ${answer.key_id} issued for ${answer.edge_id}.`);
      edge.value = "";
      document.getElementById("key-machines").value = "";
      await this.load();
    } catch (e) {
      document.getElementById("key-secret").hidden = true;
      setStatus("key-status", `No key issued — ${errorText(e)}`);
    }
  }
}

export async function startKeys() {
  const section = new KeysSection();
  document.getElementById("key-form").addEventListener("submit", (e) => section.create(e));
  const keys = await section.load();
  setStatus("key-status", `${keys.filter((k) => !k.revoked_at).length} active keys.`);
  return section;
}
