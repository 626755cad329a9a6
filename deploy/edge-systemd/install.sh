#!/usr/bin/env bash
# Installs the Rig Alpha edge gateway as a systemd service on a rig PC.
#   sudo ./install.sh [--wheel-dir DIR] [--config FILE]
# Lays out /opt/rig-edge (virtualenv, edge extras only: no TensorFlow), /etc/rig-edge
# (config, secrets; never overwritten), /var/lib/rig-edge (buffer, via StateDirectory), a
# dedicated system user, and the unit. Safe to run again to upgrade.
set -euo pipefail

PREFIX=/opt/rig-edge
CONF_DIR=/etc/rig-edge
SRC_DIR="$(cd "$(dirname "$0")/../.." && pwd)"
CONFIG=""
WHEEL_DIR=""

while [ $# -gt 0 ]; do
  case "$1" in
    --wheel-dir) WHEEL_DIR="$2"; shift 2 ;;
    --config) CONFIG="$2"; shift 2 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done

[ "$(id -u)" = 0 ] || { echo "run as root (sudo)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }

id rig-edge >/dev/null 2>&1 || useradd --system --home-dir /var/lib/rig-edge \
  --shell /usr/sbin/nologin --user-group rig-edge
getent group dialout >/dev/null && usermod -aG dialout rig-edge

install -d -m 0755 "$PREFIX"
[ -x "$PREFIX/venv/bin/python" ] || python3 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install -q --upgrade pip
if [ -n "$WHEEL_DIR" ]; then
  "$PREFIX/venv/bin/pip" install -q --no-index --find-links "$WHEEL_DIR" "rig-alpha[edge]"
else
  "$PREFIX/venv/bin/pip" install -q "$SRC_DIR[edge]"
fi
install -d -m 0755 "$PREFIX/deploy/edge-systemd"
install -m 0644 "$SRC_DIR/deploy/edge-systemd/README.md" "$PREFIX/deploy/edge-systemd/README.md"

install -d -m 0750 -o root -g rig-edge "$CONF_DIR"
if [ ! -e "$CONF_DIR/edge.yaml" ]; then
  install -m 0640 -o root -g rig-edge "${CONFIG:-$SRC_DIR/deploy/edge-systemd/edge.example.yaml}" \
    "$CONF_DIR/edge.yaml"
  echo "wrote $CONF_DIR/edge.yaml — edit it, then: rig-edge check-config -c $CONF_DIR/edge.yaml"
fi

install -m 0644 "$SRC_DIR/deploy/edge-systemd/rig-edge.service" /etc/systemd/system/rig-edge.service
ln -sf "$PREFIX/venv/bin/rig-edge" /usr/local/bin/rig-edge
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable rig-edge.service
  echo "enabled rig-edge.service; start it with: systemctl start rig-edge"
else
  echo "systemd is not running here; the unit is installed for the next boot"
fi
