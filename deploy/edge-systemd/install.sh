#!/usr/bin/env bash
# Installs (or upgrades in place) the Rig Alpha edge gateway as a systemd service on a rig PC.
#   sudo ./install.sh [--wheel-dir DIR] [--config FILE] [--python PYTHON]
# Lays out /opt/rig-edge (virtualenv, edge extras only: no TensorFlow), /etc/rig-edge
# (config, secrets; never overwritten), /var/lib/rig-edge (buffer, via StateDirectory), a
# dedicated system user, and the unit. The packages are the exact versions and hashes of
# requirements-edge.lock; --wheel-dir installs from an offline bundle (make wheelhouse).
# Run it again (from a newer checkout or bundle) to upgrade; a running service is restarted.
set -euo pipefail

# Overridable for the installer's own test (a scratch root instead of the system's).
PREFIX="${RIG_EDGE_PREFIX:-/opt/rig-edge}"
CONF_DIR="${RIG_EDGE_CONF_DIR:-/etc/rig-edge}"
UNIT_DIR="${RIG_EDGE_UNIT_DIR:-/etc/systemd/system}"
BIN_DIR="${RIG_EDGE_BIN_DIR:-/usr/local/bin}"
SRC_DIR="$(cd "$(dirname "$0")/../.." && pwd)"
CONFIG=""
WHEEL_DIR=""
PYTHON="${PYTHON:-python3}"
MIN_PYTHON="3.11"

while [ $# -gt 0 ]; do
  case "$1" in
    --wheel-dir) WHEEL_DIR="$2"; shift 2 ;;
    --config) CONFIG="$2"; shift 2 ;;
    --python) PYTHON="$2"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done

[ "$(id -u)" = 0 ] || { echo "run as root (sudo)" >&2; exit 1; }
command -v "$PYTHON" >/dev/null || { echo "$PYTHON is required (Python >= $MIN_PYTHON)" >&2; exit 1; }
# Checked here: pip would otherwise fail deep inside the install with a generic message.
if ! "$PYTHON" -c "import sys; sys.exit(sys.version_info < tuple(map(int, '$MIN_PYTHON'.split('.'))))"; then
  echo "Python >= $MIN_PYTHON is required; $PYTHON is $("$PYTHON" -V 2>&1)." >&2
  echo "Install a newer one (e.g. apt-get install python3.11 python3.11-venv) and pass --python python3.11" >&2
  exit 1
fi
"$PYTHON" -c "import venv, ensurepip" 2>/dev/null || {
  echo "$PYTHON has no venv/ensurepip module: install the python3-venv package" >&2; exit 1; }

# In a checkout and in the offline bundle alike, the lock sits two levels above this script.
LOCK="$SRC_DIR/requirements-edge.lock"
[ -e "$LOCK" ] || { echo "requirements-edge.lock not found ($LOCK)" >&2; exit 1; }

id rig-edge >/dev/null 2>&1 || useradd --system --home-dir /var/lib/rig-edge \
  --shell /usr/sbin/nologin --user-group rig-edge
getent group dialout >/dev/null && usermod -aG dialout rig-edge

install -d -m 0755 "$PREFIX"
# A venv made by another Python (the rig's python3 was upgraded) is rebuilt, not patched.
if [ -x "$PREFIX/venv/bin/python" ] && \
   [ "$("$PREFIX/venv/bin/python" -c 'import sys; print(sys.version_info[:2])')" != \
     "$("$PYTHON" -c 'import sys; print(sys.version_info[:2])')" ]; then
  echo "the existing $PREFIX/venv was made by another Python: rebuilding it"
  rm -rf "$PREFIX/venv"
fi
[ -x "$PREFIX/venv/bin/python" ] || "$PYTHON" -m venv "$PREFIX/venv"
before="$("$PREFIX/venv/bin/rig-edge" --version 2>/dev/null || echo none)"

PIP=("$PREFIX/venv/bin/pip" install --disable-pip-version-check)
if [ -n "$WHEEL_DIR" ]; then
  PIP+=(--no-index --find-links "$WHEEL_DIR")
fi
# Exactly the locked versions (upgrading or downgrading what is there), each checked
# against its hash; then the gateway itself, reinstalled even at the same version number
# so a newer checkout always replaces the old code.
echo "installing the edge's packages ($LOCK) …"
"${PIP[@]}" --require-hashes -r "$LOCK"
if [ -n "$WHEEL_DIR" ]; then
  "${PIP[@]}" --no-deps --force-reinstall rig-alpha
else
  "${PIP[@]}" --no-deps --force-reinstall "$SRC_DIR"
fi
after="$("$PREFIX/venv/bin/rig-edge" --version)"
echo "rig-edge: $before -> $after"

install -d -m 0755 "$PREFIX/deploy/edge-systemd"
install -m 0644 "$SRC_DIR/deploy/edge-systemd/README.md" "$PREFIX/deploy/edge-systemd/README.md"
install -m 0644 "$SRC_DIR/deploy/edge-systemd/edge.example.yaml" "$PREFIX/deploy/edge-systemd/edge.example.yaml"

install -d -m 0750 -o root -g rig-edge "$CONF_DIR"
if [ ! -e "$CONF_DIR/edge.yaml" ]; then
  install -m 0640 -o root -g rig-edge "${CONFIG:-$SRC_DIR/deploy/edge-systemd/edge.example.yaml}" \
    "$CONF_DIR/edge.yaml"
  echo "wrote $CONF_DIR/edge.yaml — edit it, then: rig-edge check-config -c $CONF_DIR/edge.yaml"
else
  # The new version may refuse a setting the old one took: say so before the restart.
  "$PREFIX/venv/bin/rig-edge" check-config -c "$CONF_DIR/edge.yaml" ||
    echo "WARNING: $CONF_DIR/edge.yaml does not pass check-config with the new version; fix it before starting" >&2
fi

install -d -m 0755 "$UNIT_DIR" "$BIN_DIR"
install -m 0644 "$SRC_DIR/deploy/edge-systemd/rig-edge.service" "$UNIT_DIR/rig-edge.service"
ln -sf "$PREFIX/venv/bin/rig-edge" "$BIN_DIR/rig-edge"
if [ "$UNIT_DIR" = /etc/systemd/system ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable rig-edge.service
  if systemctl is-active --quiet rig-edge.service; then
    systemctl restart rig-edge.service
    echo "restarted rig-edge.service on the new version"
  else
    echo "enabled rig-edge.service; start it with: systemctl start rig-edge"
  fi
else
  echo "systemd is not running here; the unit is installed for the next boot"
fi
