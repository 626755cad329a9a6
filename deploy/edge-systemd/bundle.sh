#!/usr/bin/env bash
# Builds the offline edge bundle a technician carries to a rig (`make wheelhouse` runs it):
#   deploy/edge-systemd/bundle.sh PYTHON OUT_DIR [PLATFORM [PYTHON_VERSION]]
# OUT_DIR/rig-edge-VERSION-PLATFORM/ holds wheels/ (rig-alpha and every package of
# requirements-edge.lock, hash-checked, binary only), the lock, and deploy/edge-systemd/
# (installer, unit, example config, README); OUT_DIR/rig-edge-VERSION-PLATFORM.tar.gz is the
# same folder packed. PLATFORM (a pip platform tag such as manylinux_2_28_aarch64) fetches
# the wheels of another kind of rig; empty: this machine's. On the rig:
#   tar xzf rig-edge-*.tar.gz && sudo rig-edge-*/deploy/edge-systemd/install.sh --wheel-dir rig-edge-*/wheels
set -euo pipefail

PYTHON="$1"
OUT_DIR="$2"
PLATFORM="${3:-}"
PY_VERSION="${4:-3.11}"
SRC_DIR="$(cd "$(dirname "$0")/../.." && pwd)"

version="$("$PYTHON" -c 'import tomllib, sys; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$SRC_DIR/pyproject.toml")"
platform="${PLATFORM:-$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_platform().replace("-", "_").replace(".", "_"))')}"
name="rig-edge-$version-$platform"
bundle="$OUT_DIR/$name"

rm -rf "$bundle" "$bundle.tar.gz"
mkdir -p "$bundle/wheels" "$bundle/deploy/edge-systemd"
PIP=("$PYTHON" -m pip --disable-pip-version-check)
"${PIP[@]}" wheel --quiet --no-deps -w "$bundle/wheels" "$SRC_DIR"
echo "downloading the locked edge packages for $platform …"
extra=()
[ -n "$PLATFORM" ] && extra=(--platform "$PLATFORM" --python-version "$PY_VERSION" --implementation cp)
"${PIP[@]}" download --require-hashes --only-binary=:all: -d "$bundle/wheels" \
  -r "$SRC_DIR/requirements-edge.lock" "${extra[@]}"
cp "$SRC_DIR/requirements-edge.lock" "$bundle/"
for file in install.sh rig-edge.service edge.example.yaml README.md; do
  cp "$SRC_DIR/deploy/edge-systemd/$file" "$bundle/deploy/edge-systemd/"
done
tar -C "$OUT_DIR" -czf "$bundle.tar.gz" "$name"
echo "offline edge bundle: $bundle.tar.gz"
