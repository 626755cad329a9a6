"""The cloud's Dockerfile, compose file and Kubernetes manifests checked against the code
(no image can be built here): every command parses with the real ``rig-cloud`` parser, every
environment variable is one the code reads and the required ones are set, ports and probe
paths are those the processes serve, images are pinned, no secret value is committed, and
the image copies every package (and its package data) the cloud imports."""

from __future__ import annotations

import re
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic.fields import FieldInfo

from cloud.cli import build_parser
from cloud.metrics import AGGREGATOR_METRICS_PORT, TRAINER_METRICS_PORT
from cloud.settings import AliasChoices, CloudSettings
from shared.logs import LOG_FORMAT_ENV

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
COMPOSE = yaml.safe_load((HERE / "docker-compose.yml").read_text())
K8S = [d for d in yaml.safe_load_all((HERE / "k8s" / "rig-alpha.yaml").read_text()) if d]
DOCKERFILE = (HERE / "Dockerfile").read_text()
PROMETHEUS = yaml.safe_load((HERE / "prometheus" / "prometheus.yml").read_text())
# What `cloud` imports (the import contracts in pyproject.toml): the image needs all of them.
CLOUD_PACKAGES = ("cloud", "models", "detector", "simulator", "shared")
# Read by the code outside CloudSettings.
OTHER_VARIABLES = {"RIG_MODEL_SIGNING_KEY_FILE", "RIG_USER_PASSWORD", LOG_FORMAT_ENV}
GENERIC_VARIABLES = {"HOME", "PYTHONUNBUFFERED", "PATH"}
TOPIC_PARTITIONS = 3


def _names(info: FieldInfo) -> list[str]:
    alias = info.validation_alias
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, AliasChoices):
        return [c for c in alias.choices if isinstance(c, str)]
    return []


@cache
def known_variables() -> frozenset[str]:
    names = set(OTHER_VARIABLES)
    for info in CloudSettings.model_fields.values():
        for name in _names(info):
            names.add(name)
            extra = info.json_schema_extra
            if isinstance(extra, dict) and extra.get("secret"):
                names.add(f"{name}_FILE")
    return frozenset(names)


@cache
def api_paths() -> frozenset[str]:
    from cloud.api.app import create_app

    app = create_app(CloudSettings(database_url="postgresql://unused/x"))
    # The documented operations, and the routes outside the schema (/metrics, the docs).
    paths = set(app.openapi()["paths"])
    return frozenset(paths | {str(getattr(route, "path", "")) for route in app.routes})


def _parse(command: list[str]) -> Any:
    assert command[0] == "rig-cloud", command
    return build_parser().parse_args(command[1:])


def _port_serving(command: list[str]) -> dict[int, set[str]]:
    """Port -> paths the process started by ``command`` answers (the API: its routes)."""
    args = _parse(command)
    if args.command == "serve":
        return {args.port: set(api_paths())}
    if args.command in ("aggregate", "trainer"):
        return {args.metrics_port: {"/metrics"}}
    return {}


def _check_env(where: str, env: dict[str, Any]) -> None:
    unknown = set(env) - known_variables() - GENERIC_VARIABLES
    assert not unknown, f"{where}: variables no code reads: {sorted(unknown)}"


def _pinned(image: str) -> bool:
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag not in ("", "latest") and "@" not in name


# -- compose ---------------------------------------------------------------------------


def _rig_services() -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in COMPOSE["services"].items()
        if str(svc.get("image", "")).startswith("rig-alpha-")
    }


def test_compose_has_the_whole_cloud() -> None:
    services = COMPOSE["services"]
    for name in ("kafka", "postgres", "api", "aggregator", "trainer", "prometheus", "grafana"):
        assert name in services, name
    kafka = services["kafka"]["environment"]
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"], "Kafka runs in KRaft mode"
    assert not any("zookeeper" in str(s.get("image", "")) for s in services.values())
    assert services["aggregator"]["deploy"]["replicas"] >= 2
    for name, svc in services.items():
        if "image" in svc:
            assert _pinned(svc["image"]), f"{name}: image {svc['image']} is not pinned"


def test_compose_commands_env_and_secrets_match_the_code() -> None:
    declared_secrets = set(COMPOSE["secrets"])
    for name, svc in _rig_services().items():
        args = _parse(svc["command"])
        env = dict(svc.get("environment") or {})
        _check_env(f"compose {name}", env)
        assert "DATABASE_URL_FILE" in env or "DATABASE_URL" in env, name
        if args.command in ("serve", "aggregate"):
            assert env.get("KAFKA_BOOTSTRAP_SERVERS") == "kafka:9092", name
        if args.command == "trainer":
            assert "RIG_MODEL_SIGNING_KEY_FILE" in env, name
        for value in env.values():
            for secret in re.findall(r"/run/secrets/(\w+)", str(value)):
                assert secret in svc.get("secrets", []), f"{name}: {secret} not mounted"
                assert secret in declared_secrets, secret
    api = COMPOSE["services"]["api"]
    assert _parse(api["command"]).port == 8080 and "8080:8080" in api["ports"]
    assert "RIG_BOOTSTRAP_ADMIN_PASSWORD_FILE" in api["environment"], "nobody could log in"


def test_compose_health_checks_ask_what_the_processes_serve() -> None:
    for name, svc in _rig_services().items():
        test = " ".join(svc.get("healthcheck", {}).get("test", []))
        if not test:
            continue
        serving = _port_serving(svc["command"])
        (port, path) = re.search(r"127\.0\.0\.1:(\d+)(/\w*)", test).groups()  # type: ignore[union-attr]
        assert path in serving.get(int(port), set()), f"{name}: {port}{path} is not served"


def test_prometheus_scrapes_the_ports_the_processes_serve() -> None:
    jobs = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    aggregator = _parse(COMPOSE["services"]["aggregator"]["command"])
    assert aggregator.metrics_port == AGGREGATOR_METRICS_PORT
    assert jobs["rig-aggregator"]["dns_sd_configs"][0]["port"] == aggregator.metrics_port
    trainer = _parse(COMPOSE["services"]["trainer"]["command"])
    assert trainer.metrics_port == TRAINER_METRICS_PORT
    assert jobs["rig-trainer"]["static_configs"][0]["targets"] == [
        f"trainer:{trainer.metrics_port}"
    ]
    assert jobs["rig-api"]["static_configs"][0]["targets"] == ["api:8080"]
    assert "/metrics" in api_paths()


# -- Kubernetes ------------------------------------------------------------------------


def _kinds(kind: str) -> list[dict[str, Any]]:
    return [d for d in K8S if d["kind"] == kind]


def test_k8s_commits_no_secret_values() -> None:
    assert not _kinds("Secret"), "create secrets with kubectl; never commit their values"
    assert "CHANGE-ME" not in (HERE / "k8s" / "rig-alpha.yaml").read_text()


def test_k8s_workloads_are_probed_pinned_and_configured() -> None:
    config = {k: v for cm in _kinds("ConfigMap") for k, v in cm["data"].items()}
    _check_env("ConfigMap", config)
    deployments = {d["metadata"]["name"]: d for d in _kinds("Deployment")}
    assert set(deployments) >= {"rig-alpha-api", "rig-alpha-aggregator", "rig-alpha-trainer"}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod["containers"]:
            assert _pinned(container["image"]), f"{name}: {container['image']}"
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            _check_env(name, env)
            assert "DATABASE_URL_FILE" in env, name
            serving = _port_serving(container["args"])
            for probe in ("livenessProbe", "readinessProbe"):
                assert probe in container, f"{name}: no {probe}"
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                if probe in container:
                    get = container[probe]["httpGet"]
                    assert get["path"] in serving.get(get["port"], set()), (
                        f"{name}: {probe} asks {get['port']}{get['path']}, not served"
                    )
            annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
            if "prometheus.io/port" in annotations:
                port = int(annotations["prometheus.io/port"])
                assert annotations["prometheus.io/path"] in serving.get(port, set()), name


def test_k8s_ingress_tls_pdb_and_lag_scaling() -> None:
    (ingress,) = _kinds("Ingress")
    tls = ingress["spec"]["tls"]
    assert tls and all(t.get("secretName") and t.get("hosts") for t in tls)
    service_names = {s["metadata"]["name"] for s in _kinds("Service")}
    for rule in ingress["spec"]["rules"]:
        assert rule["host"] in tls[0]["hosts"]
        for path in rule["http"]["paths"]:
            assert path["backend"]["service"]["name"] in service_names
    budgets = {p["spec"]["selector"]["matchLabels"]["app"] for p in _kinds("PodDisruptionBudget")}
    assert budgets >= {"rig-alpha-api", "rig-alpha-aggregator"}
    scalers = _kinds("ScaledObject") + _kinds("HorizontalPodAutoscaler")
    (scaler,) = [
        s for s in scalers if s["spec"]["scaleTargetRef"]["name"] == "rig-alpha-aggregator"
    ]
    assert scaler["spec"]["maxReplicaCount"] <= TOPIC_PARTITIONS, "idle consumers beyond partitions"
    (trigger,) = scaler["spec"]["triggers"]
    config = {k: v for cm in _kinds("ConfigMap") for k, v in cm["data"].items()}
    assert trigger["metadata"]["consumerGroup"] == config["KAFKA_CONSUMER_GROUP"]
    assert trigger["metadata"]["topic"] == config["KAFKA_TOPIC"]
    assert trigger["metadata"]["bootstrapServers"] == config["KAFKA_BOOTSTRAP_SERVERS"]


# -- the image -------------------------------------------------------------------------


def _copied() -> set[str]:
    return {
        src
        for line in DOCKERFILE.splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for src in line.split()[1:-1]
    }


def test_image_copies_every_package_and_its_data() -> None:
    copied = _copied()
    for package in CLOUD_PACKAGES:
        assert package in copied, f"the image does not COPY {package}/"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for package, patterns in pyproject["tool"]["setuptools"]["package-data"].items():
        if package not in CLOUD_PACKAGES:
            continue
        for pattern in patterns:
            found = list((ROOT / package).glob(pattern))
            assert found, f"package data {package}/{pattern} matches nothing"
    for lock in ("requirements-cloud.lock", "requirements-trainer.lock"):
        assert lock in copied and (ROOT / lock).exists(), lock
        assert f"--require-hashes -r {lock}" in DOCKERFILE


def test_image_has_the_dashboard_libraries() -> None:
    import json

    from cloud.api.docs import DOCS_FILES
    from cloud.dashboard.router import NODE_MODULES, VENDOR_FILES

    assert "npm ci --omit=dev" in DOCKERFILE
    package = json.loads((ROOT / "cloud/dashboard/package.json").read_text())
    for target in [*VENDOR_FILES.values(), *DOCS_FILES.values()]:
        # --omit=dev: what the browser loads must be a runtime dependency.
        assert target.split("/")[0] in package["dependencies"], target
    relative = NODE_MODULES.relative_to(ROOT)  # cloud/dashboard/node_modules
    site = r"/opt/cloud/lib/python3\.11/site-packages"
    assert re.search(rf"COPY --from=dashboard /src/{relative} {site}/{relative}", DOCKERFILE), (
        "node_modules must land where the installed router looks for it"
    )


def test_image_runs_unprivileged_with_a_health_check() -> None:
    stages = re.split(r"^FROM ", DOCKERFILE, flags=re.M)[1:]
    finals = {s.split()[2]: s for s in stages if " AS cloud" in s or " AS trainer" in s}
    assert set(finals) == {"cloud", "trainer"}
    for name, stage in finals.items():
        assert re.search(r"^USER 10001$", stage, flags=re.M), name
        assert "HEALTHCHECK" in stage, name
    health = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", finals["cloud"]).groups()  # type: ignore[union-attr]
    assert (int(health[0]), health[1]) == (8080, "/healthz") and "/healthz" in api_paths()
    assert "EXPOSE 8080 9471" in finals["cloud"] and "EXPOSE 9472" in finals["trainer"]
    for image in re.findall(r"^ARG \w+_IMAGE=(\S+)$", DOCKERFILE, flags=re.M):
        assert re.search(r":\d+\.\d+\.\d+", image), f"base image {image} is not pinned"


@pytest.mark.parametrize("script", ["make-secrets.sh"])
def test_compose_helper_scripts_exist(script: str) -> None:
    path = HERE / script
    assert path.exists() and path.stat().st_mode & 0o111, script
    for secret in COMPOSE["secrets"]:
        assert secret in path.read_text(), f"{script} does not create {secret}"
