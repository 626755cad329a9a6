#!/usr/bin/env bash
# Creates ./secrets for docker-compose.yml (once; existing files are kept): random passwords
# for PostgreSQL, the first admin and Grafana, an ingest API key, and the Ed25519 key pair
# that signs model bundles (the .pub goes to every edge: models.public_key_file).
# The folder is private to you (0700); the files are readable by the containers' user.
set -euo pipefail
cd "$(dirname "$0")"
install -d -m 0700 secrets
random() { openssl rand -base64 33 | tr -d '/+=\n' | cut -c1-32; }
keep_or_write() { [ -s "secrets/$1" ] || { printf '%s' "$2" > "secrets/$1"; chmod 0644 "secrets/$1"; echo "wrote secrets/$1"; }; }

keep_or_write postgres_password "$(random)"
keep_or_write database_url "postgresql://rigalpha:$(cat secrets/postgres_password)@postgres:5432/rigalpha"
keep_or_write ingest_api_key "$(random)"
keep_or_write admin_password "$(random)"
keep_or_write grafana_password "$(random)"
if [ ! -s secrets/model_signing_key ]; then
  openssl genpkey -algorithm ed25519 -out secrets/model_signing_key
  openssl pkey -in secrets/model_signing_key -pubout -out secrets/model_signing_key.pub
  chmod 0644 secrets/model_signing_key secrets/model_signing_key.pub
  echo "wrote secrets/model_signing_key (+ .pub for the edges)"
fi
echo "log in to the dashboard as admin / $(cat secrets/admin_password)"
