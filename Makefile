# Rig Alpha — every target installs what it needs (virtualenv, Python packages, Kafka jars,
# and Debian packages when run as root).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Every extra, at the versions (and hashes) of the lock file; `make lock` after changing a
# dependency in pyproject.toml (make lint and make venv fail until then, saying so).
LOCK ?= requirements.lock
STAMP := $(VENV)/.installed-$(shell cat $(LOCK) pyproject.toml | sha256sum | cut -c1-16)
UV_PIN = $(shell grep -o '"uv==[^"]*"' pyproject.toml | tr -d '"')
WHEELHOUSE ?= dist
WHEEL_PLATFORM ?=
WHEEL_PYTHON ?= 3.11
PYTEST_ARGS ?=
# make test spreads test files over this many pytest-xdist workers (one file stays on one
# worker, so its module fixtures start once). Most integration tests wait on real services,
# so two workers keep both cores busy; TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
PYTEST_PARALLEL = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile) --durations=25

.PHONY: help venv lock wheelhouse system-deps kafka-jars test test-unit test-integration lint demo kafka \
        bench-e2e bench-sim bench-edge bench-cloud bench-ml bench-dashboard bench-faults bench-rul bench-alerts bench-security bench-peers dashboard-deps peer-deps peer-telegraf clean

help:
	@echo "make demo        simulator with scheduled faults + edge + cloud (embedded PostgreSQL) + alerts, on http://127.0.0.1:8080"
	@echo "make test        the whole test suite against real Kafka, PostgreSQL and Modbus"
	@echo "make test-unit   fast tests only (no services)"
	@echo "make lint        ruff, import directions, types (mypy), ESLint for the dashboard"
	@echo "make kafka       a local Kafka broker for manual use"
	@echo "make lock        relock requirements*.lock after changing a dependency in pyproject.toml"
	@echo "make wheelhouse  offline edge bundle (wheels at the locked versions + installer) in dist/"
	@echo "make bench-e2e   end-to-end throughput and latency benchmark (JSON on the last line)"
	@echo "make bench-sim   simulator rate for 1, 10 and 100 machines at 100 Hz (JSON)"
	@echo "make bench-edge  edge pipeline, Modbus acquisition, backlog drain, RSS, idle CPU (JSON)"
	@echo "make bench-cloud Kafka -> PostgreSQL ingest vs plain COPY, /api/stats latency (JSON)"
	@echo "make bench-ml    edge ONNX scoring cost and SKAB F1/FAR/MAR (JSON)"
	@echo "make bench-dashboard  push latency ingest -> screen, 3D view fps in Chromium (JSON)"
	@echo "make bench-faults  fault suite: kills, outages, full disk, poison, bad clocks (JSON)"
	@echo "make bench-rul   remaining-useful-life model: edge prediction cost and bundle size (JSON)"
	@echo "make bench-alerts  reading in -> alert received by a webhook and an SMTP server (JSON)"
	@echo "make bench-security  attack battery against a live API: got_through must be 0 (JSON)"
	@echo "make bench-peers rig-edge vs ThingsBoard gateway and Telegraf on one Modbus device (JSON)"

$(STAMP): pyproject.toml $(LOCK)
	@command -v $(PYTHON) >/dev/null || { echo "python3 is required"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Python >= 3.11 is required ($(PYTHON) is $$($(PYTHON) -V 2>&1)); pass PYTHON=..."; exit 1; }
	@$(PYTHON) -m tools.lock --check
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing the locked Python packages ($(LOCK)) into $(VENV): the first time downloads ~600 MB (TensorFlow, Playwright) …"
	$(PY) -m pip install --disable-pip-version-check --require-hashes -r $(LOCK)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP)

# Relock after changing a dependency in pyproject.toml (keeps every pin that still fits;
# `make lock LOCK_ARGS=--upgrade` moves everything to the newest allowed).
lock:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(VENV)/bin/uv || $(PY) -m pip install -q --disable-pip-version-check "$(UV_PIN)"
	$(PY) -m tools.lock $(LOCK_ARGS)

# An offline bundle a technician carries to a rig: the edge's wheels at the locked versions,
# the installer, its unit and the example config (deploy/edge-systemd/bundle.sh). For a rig
# of another kind: make wheelhouse WHEEL_PLATFORM=manylinux_2_28_aarch64 WHEEL_PYTHON=3.11
wheelhouse: venv
	bash deploy/edge-systemd/bundle.sh $(PY) $(WHEELHOUSE) "$(WHEEL_PLATFORM)" $(WHEEL_PYTHON)

# Java 17 and Maven run the Kafka broker, Mosquitto is the MQTT broker of the tests (and
# mosquitto_pub, from mosquitto-clients, a publisher nobody here wrote),
# systemd-analyze verifies the edge unit, promtool (prometheus) the alert rules, kcat is the
# independent Kafka client of the peer tests (tests/peers/test_kcat_peer.py), Alertmanager the
# peer of the alerting channel (tests/peers/test_alertmanager_peer.py);
# Debian packages them. Installed only when missing
# and only as root (otherwise the message says what to install).
system-deps:
	@missing=""; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v mosquitto_pub >/dev/null || missing="$$missing mosquitto-clients"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v kcat >/dev/null || missing="$$missing kcat"; \
	command -v prometheus-alertmanager >/dev/null || missing="$$missing prometheus-alertmanager"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$missing; \
	  else echo "please install:$$missing"; exit 1; fi; \
	fi

kafka-jars: system-deps
	@bash tools/fetch_kafka.sh

# three.js and uPlot for the dashboard, from the npm registry through the lock file.
DASH_MODULES := cloud/dashboard/node_modules/.package-lock.json
$(DASH_MODULES): cloud/dashboard/package-lock.json
	@command -v npm >/dev/null || { echo "node 20 + npm are required"; exit 1; }
	npm ci --prefix cloud/dashboard --no-audit --no-fund --loglevel=error

dashboard-deps: $(DASH_MODULES)

# Peers for the protocol tests (tests/peers/): an OPC-UA server not built on asyncua
# (node-opcua), from the npm registry through the lock file.
PEER_OPCUA_MODULES := tests/peers/opcua/node_modules/.package-lock.json
$(PEER_OPCUA_MODULES): tests/peers/opcua/package-lock.json
	@command -v npm >/dev/null || { echo "node 20 + npm are required"; exit 1; }
	npm ci --prefix tests/peers/opcua --no-audit --no-fund --loglevel=error

# The Sparkplug B node (pysparkplug, which needs paho-mqtt<2) in a venv of its own,
# <venv>/peers/sparkplug, from PyPI through tests/peers/requirements-sparkplug.txt.
peer-deps: $(PEER_OPCUA_MODULES)
	$(PY) -c "from tests.peers.sparkplug import peer_python; peer_python()"

# Optional peer: Telegraf, built from the Go module proxy with only the plugins its test uses
# (about ten minutes on two cores, so not part of make test; tests/peers/test_telegraf_peer.py
# skips without it).
TELEGRAF_VERSION := v1.37.2
TELEGRAF_TAGS := custom,inputs.file,inputs.mem,outputs.http,parsers.influx,serializers.influx
.cache/bin/telegraf:
	@command -v go >/dev/null || { echo "Go is required to build Telegraf"; exit 1; }
	GOBIN=$(abspath .cache/bin) go install -tags "$(TELEGRAF_TAGS)" \
	  github.com/influxdata/telegraf/cmd/telegraf@$(TELEGRAF_VERSION)

peer-telegraf: .cache/bin/telegraf

# Telegraf with its Modbus input and file output for bench-peers (optional: when the Go module
# proxy or the build fails, the benchmark lists Telegraf with the build log's last lines).
TELEGRAF_BENCH_TAGS := custom,inputs.modbus,outputs.file,serializers.influx
.cache/peers-bin/telegraf:
	@mkdir -p .cache/peers-bin
	@command -v go >/dev/null || { echo "go not found" > .cache/peers-bin/telegraf-build.log; exit 1; }
	GOBIN=$(abspath .cache/peers-bin) go install -tags "$(TELEGRAF_BENCH_TAGS)" \
	  github.com/influxdata/telegraf/cmd/telegraf@$(TELEGRAF_VERSION) > .cache/peers-bin/telegraf-build.log 2>&1

# Lint first: a lint, format, import-direction or type error fails the test run (CI too).
test: venv system-deps kafka-jars dashboard-deps peer-deps lint
	$(PY) -m pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest -m "not integration and not slow" $(PYTEST_ARGS)

test-integration: venv system-deps kafka-jars dashboard-deps peer-deps
	$(PY) -m pytest -m integration $(PYTEST_PARALLEL) $(PYTEST_ARGS)

lint: venv dashboard-deps
	$(PY) -m tools.lock --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	cd cloud/dashboard && npx --no-install eslint .

demo: venv dashboard-deps
	$(PY) -m tools.demo

kafka: venv kafka-jars
	$(PY) -m tools.kafka_broker

bench-e2e: venv kafka-jars
	$(PY) -m benchmarks.bench_e2e

bench-sim: venv
	$(PY) -m benchmarks.bench_sim

bench-edge: venv system-deps kafka-jars
	$(PY) -m benchmarks.bench_edge

bench-ml: venv system-deps kafka-jars
	$(PY) -m benchmarks.bench_ml

bench-dashboard: venv system-deps dashboard-deps
	$(PY) -m benchmarks.bench_dashboard

bench-cloud: venv kafka-jars
	$(PY) -m benchmarks.bench_cloud

# Runs as root for the network-namespace and tmpfs scenarios (skipped, and said so, otherwise).
bench-faults: venv system-deps kafka-jars
	$(PY) -m benchmarks.bench_faults

bench-rul: venv
	$(PY) -m benchmarks.bench_rul

bench-alerts: venv
	$(PY) -m benchmarks.bench_alerts

# Login brute force, oversize bodies, cross-origin POSTs and WebSocket, every route as the
# wrong principal or machine scope, edge-key scope, stale streams; exits 1 if any got through.
bench-security: venv
	$(PY) -m benchmarks.bench_security

# ThingsBoard IoT Gateway (PyPI, its own venv <venv>/peers/thingsboard, built by the benchmark)
# and Telegraf (above) beside rig-edge on one simulator Modbus device at 1 s, 100 ms and 10 ms.
bench-peers: venv
	-@$(MAKE) -s .cache/peers-bin/telegraf
	nice -n 10 $(PY) -m benchmarks.bench_peers

clean:
	rm -rf var .pytest_cache .ruff_cache
