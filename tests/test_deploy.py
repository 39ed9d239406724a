"""The deployment files: they parse, agree with the config schema and with each other.

No Docker engine, cluster or running systemd is needed. ``kubectl kustomize`` and
``systemd-analyze verify`` run when those tools are installed and are skipped with the reason
otherwise; so are the schema checks that need ``kubernetes-validate`` or ``check-jsonschema``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from anomalyd.config import Config, load_config, load_config_text
from anomalyd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
SERVICE_CONFIG = ROOT / "config" / "service.yaml"
COMPOSE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
UNIT = DEPLOY / "systemd" / "anomalyd.service"

EXEC_START = "/opt/anomalyd/venv/bin/anomalyd run -c /etc/anomalyd/config.yaml"
CONFIG_IN_IMAGE = "/etc/anomalyd/config.yaml"
STATE_DIR = "/var/lib/anomalyd"
YAML_FILES = sorted(
    p for p in [*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml"), *(ROOT / "config").glob("*.yaml")]
)


def _docs(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Unset every ``${VAR}`` the service configs name, so their defaults are what loads."""
    names: set[str] = set()
    for path in (SERVICE_CONFIG, K8S / "configmap.yaml"):
        names.update(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", path.read_text(encoding="utf-8")))
    for name in names:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def service_config(clean_env: pytest.MonkeyPatch) -> Config:
    return load_config(SERVICE_CONFIG)


# -- every YAML file ------------------------------------------------------------------------


@pytest.mark.parametrize("path", YAML_FILES, ids=[str(p.relative_to(ROOT)) for p in YAML_FILES])
def test_yaml_file_parses(path: Path) -> None:
    assert _docs(path), f"{path} holds no YAML document"


def test_yaml_files_are_found() -> None:
    names = {str(p.relative_to(ROOT)) for p in YAML_FILES}
    assert {"config/service.yaml", "deploy/docker-compose.yml", "deploy/k8s/deployment.yaml"} <= names


# -- config/service.yaml --------------------------------------------------------------------


def test_service_config_loads_with_no_environment(service_config: Config) -> None:
    cfg = service_config
    assert cfg.source.type == "kafka"
    assert cfg.source.kafka is not None
    assert cfg.source.kafka.topics == ("sensors",)
    assert cfg.source.kafka.group_id == "anomalyd"
    assert cfg.kafka.bootstrap_servers == ("127.0.0.1:9092",)
    assert cfg.kafka.security.protocol == "PLAINTEXT"
    assert [(s.type, s.topic) for s in cfg.output.alerts] == [("kafka", "anomalies")]
    assert cfg.output.dead_letter is not None
    assert (cfg.output.dead_letter.type, cfg.output.dead_letter.topic) == ("kafka", "anomalyd-dead-letters")
    assert (cfg.service.metrics.host, cfg.service.metrics.port) == ("127.0.0.1", 9108)
    assert cfg.logging.format == "json"
    assert (cfg.model.scope, cfg.window.length, cfg.model.hidden_size) == ("shared", 64, 32)
    assert cfg.training.warmup_events == 750


def test_service_config_takes_values_from_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("KAFKA_BOOTSTRAP", "kafka:9092")
    clean_env.setenv("ANOMALYD_METRICS_HOST", "0.0.0.0")
    clean_env.setenv("ANOMALYD_LOG_LEVEL", "debug")
    cfg = load_config(SERVICE_CONFIG)
    assert cfg.kafka.bootstrap_servers == ("kafka:9092",)
    assert cfg.service.metrics.host == "0.0.0.0"
    assert cfg.logging.level == "debug"


def _with_sasl_uncommented(text: str) -> str:
    uncommented, count = re.subn(r"(?m)^(\s*)# (sasl_\w+:.*)$", r"\1\2", text)
    assert count == 3, "expected commented sasl_mechanism, sasl_username and sasl_password lines"
    return uncommented


def test_service_config_sasl_block_validates_once_uncommented(clean_env: pytest.MonkeyPatch) -> None:
    text = _with_sasl_uncommented(SERVICE_CONFIG.read_text(encoding="utf-8"))
    clean_env.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    clean_env.setenv("KAFKA_SASL_USERNAME", "svc-anomalyd")
    with pytest.raises(ConfigError, match="KAFKA_SASL_PASSWORD"):
        load_config_text(text)  # a missing secret fails at start-up, naming it
    clean_env.setenv("KAFKA_SASL_PASSWORD", "s3cret-pw")
    security = load_config_text(text).kafka.security
    assert (security.protocol, security.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert security.sasl_username == "svc-anomalyd"
    assert security.sasl_password is not None
    assert security.sasl_password.get_secret_value() == "s3cret-pw"
    assert "s3cret-pw" not in repr(security)


# -- docker-compose.yml ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    (doc,) = _docs(COMPOSE)
    return doc


def test_compose_has_the_four_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"kafka", "topics", "anomalyd", "producer"}


def test_compose_starts_in_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "healthcheck" in services["kafka"]
    assert services["topics"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    for name in ("anomalyd", "producer"):
        assert services[name]["depends_on"] == {"topics": {"condition": "service_completed_successfully"}}


def test_compose_creates_the_topics_the_config_uses(compose: dict[str, Any], service_config: Config) -> None:
    script = " ".join(compose["services"]["topics"]["command"])
    assert service_config.source.kafka is not None
    assert service_config.output.dead_letter is not None
    topics = [
        *service_config.source.kafka.topics,
        *(s.topic for s in service_config.output.alerts),
        service_config.output.dead_letter.topic,
    ]
    for topic in topics:
        assert f"--topic {topic} " in script
    assert "--topic sensors --partitions 4" in script


def test_compose_publishes_ports_on_host_loopback_only(compose: dict[str, Any]) -> None:
    anomalyd = compose["services"]["anomalyd"]
    assert anomalyd["ports"] == ["127.0.0.1:9108:9108"]
    assert anomalyd["environment"]["KAFKA_BOOTSTRAP"] == "kafka:9092"
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond the host"


def test_compose_builds_the_image_from_the_repo_root(compose: dict[str, Any]) -> None:
    for name in ("anomalyd", "producer"):
        service = compose["services"][name]
        context = (COMPOSE.parent / service["build"]["context"]).resolve()
        assert context == ROOT
        assert (context / service["build"]["dockerfile"]).resolve() == DOCKERFILE
        assert service["image"] == compose["services"]["anomalyd"]["image"]


def test_compose_producer_streams_a_file_the_image_contains(
    compose: dict[str, Any], service_config: Config
) -> None:
    producer = compose["services"]["producer"]
    assert producer["entrypoint"] == ["anomalyd"]
    command = [str(arg) for arg in producer["command"]]
    assert command[0] == "produce"
    assert "--loop" in command
    assert service_config.source.kafka is not None
    assert command[command.index("--topic") + 1] in service_config.source.kafka.topics
    assert command[command.index("--bootstrap-servers") + 1] == "kafka:9092"
    assert _host_path_of_image_path(command[1]).is_file()
    assert producer["healthcheck"] == {"disable": True}  # it serves no /healthz


def test_compose_waits_longer_than_the_shutdown_deadline(
    compose: dict[str, Any], service_config: Config
) -> None:
    grace = _seconds(compose["services"]["anomalyd"]["stop_grace_period"])
    assert grace > service_config.service.shutdown_deadline_s


# -- Dockerfile and .dockerignore -----------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    lines = [
        ln for ln in DOCKERFILE.read_text(encoding="utf-8").splitlines() if not ln.lstrip().startswith("#")
    ]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    pairs = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            pairs.append((word.upper(), " ".join(rest.split())))
    return pairs


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def _copies_from_context() -> Iterator[tuple[str, str]]:
    for word, args in _instructions():
        if word == "COPY" and not args.startswith("--from"):
            *sources, dest = args.split()
            for source in sources:
                yield source, dest


def _host_path_of_image_path(image_path: str) -> Path:
    for source, dest in _copies_from_context():
        if image_path == dest or image_path.startswith(dest.rstrip("/") + "/"):
            return ROOT / source / image_path[len(dest) :].lstrip("/")
    raise AssertionError(f"the Dockerfile copies nothing to {image_path}")


def test_dockerfile_installs_cpu_torch_before_the_project() -> None:
    runs = [args for word, args in _instructions() if word == "RUN"]
    torch_at = next(i for i, args in enumerate(runs) if "pip install torch==" in args)
    project_at = next(i for i, args in enumerate(runs) if re.search(r"pip install \.(\s|$)", args))
    assert torch_at < project_at
    assert "--index-url https://download.pytorch.org/whl/cpu" in runs[torch_at]
    make_torch = re.search(r"^TORCH \?= (\S+)", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M)
    assert make_torch is not None
    assert make_torch.group(1) in runs[torch_at], "the image pins the torch the Makefile installs"


def _image_uid() -> int:
    users = [args for word, args in _final_stage() if word == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    match = re.fullmatch(r"(\d+)(?::\d+)?", users[-1])
    assert match, f"USER {users[-1]} is not numeric; Kubernetes' runAsNonRoot cannot check a name"
    return int(match.group(1))


def test_dockerfile_runs_as_a_non_root_user() -> None:
    assert _image_uid() != 0


def test_dockerfile_runs_the_service() -> None:
    final = _final_stage()
    assert final[0] == ("FROM", "python:3.11-slim")
    args = {word: a for word, a in final}
    assert "/healthz" in args["HEALTHCHECK"]
    assert "127.0.0.1:9108" in args["HEALTHCHECK"]
    assert args["EXPOSE"] == "9108"
    assert STATE_DIR in args["VOLUME"]
    assert args["ENTRYPOINT"] == '["anomalyd"]'
    assert args["CMD"] == f'["run", "-c", "{CONFIG_IN_IMAGE}"]'
    assert ("ENV", "ANOMALYD_METRICS_HOST=0.0.0.0") in final
    assert ("config/service.yaml", CONFIG_IN_IMAGE) in set(_copies_from_context())
    assert ("examples/", "/app/examples/") in set(_copies_from_context())


def test_dockerignore_lets_through_only_what_the_dockerfile_copies() -> None:
    patterns = [
        ln.strip()
        for ln in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert patterns[0] == "*", "an allow-list: everything is left out unless named"
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]

    def let_through(path: str) -> bool:
        return any(path == a or path.startswith(a + "/") for a in allowed)

    for source, _ in _copies_from_context():
        assert let_through(source.rstrip("/")), f"COPY {source} is excluded by .dockerignore"
    for path in (".venv", ".git", "tests", "anomalyd.egg-info", "machine.png"):
        assert not let_through(path)


# -- Kubernetes ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    (doc,) = _docs(K8S / "kustomization.yaml")
    return doc


@pytest.fixture(scope="module")
def k8s(kustomization: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The objects kustomization.yaml lists, by kind."""
    objects = [doc for name in kustomization["resources"] for doc in _docs(K8S / name)]
    by_kind = {doc["kind"]: doc for doc in objects}
    assert len(by_kind) == len(objects), "one object of each kind expected"
    return by_kind


def _container(k8s: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (container,) = k8s["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def test_kustomization_lists_every_manifest(kustomization: dict[str, Any]) -> None:
    listed = set(kustomization["resources"])
    assert all((K8S / name).is_file() for name in listed)
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


def test_kustomize_renders_the_manifests() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; `kubectl kustomize` would render deploy/k8s")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    rendered = [doc for doc in yaml.safe_load_all(out.stdout) if doc]
    assert sorted(doc["kind"] for doc in rendered) == ["ConfigMap", "Deployment", "Service"]


def test_deployment_probes_health_and_readiness(k8s: dict[str, dict[str, Any]]) -> None:
    container = _container(k8s)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert ports.get(get["port"], get["port"]) == 9108


def test_deployment_has_scrape_annotations(k8s: dict[str, dict[str, Any]], service_config: Config) -> None:
    annotations = k8s["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(service_config.service.metrics.port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_deployment_runs_locked_down(k8s: dict[str, dict[str, Any]]) -> None:
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == _image_uid()
    container = _container(k8s)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    assert "emptyDir" in mounts["/tmp"]
    assert "emptyDir" in mounts[STATE_DIR]
    config_dir = str(Path(CONFIG_IN_IMAGE).parent)
    assert mounts[config_dir]["configMap"]["name"] == k8s["ConfigMap"]["metadata"]["name"]
    assert Path(CONFIG_IN_IMAGE).name in k8s["ConfigMap"]["data"]
    assert container["args"] == ["run", "-c", CONFIG_IN_IMAGE]


def test_deployment_environment(k8s: dict[str, dict[str, Any]]) -> None:
    assert k8s["Deployment"]["spec"]["replicas"] == 2
    env = {e["name"]: e for e in _container(k8s)["env"]}
    assert env["ANOMALYD_METRICS_HOST"]["value"] == "0.0.0.0"
    secret = env["KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert (secret["name"], secret["optional"]) == ("anomalyd-kafka", True)


def test_deployment_waits_longer_than_the_shutdown_deadline(
    k8s: dict[str, dict[str, Any]], service_config: Config
) -> None:
    grace = k8s["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > service_config.service.shutdown_deadline_s


def test_configmap_holds_the_service_config(k8s: dict[str, dict[str, Any]], service_config: Config) -> None:
    text = k8s["ConfigMap"]["data"][Path(CONFIG_IN_IMAGE).name]
    assert load_config_text(text) == service_config  # validates with no environment set
    assert yaml.safe_load(text) == yaml.safe_load(SERVICE_CONFIG.read_text(encoding="utf-8"))


def test_service_exposes_the_metrics_port(k8s: dict[str, dict[str, Any]]) -> None:
    service = k8s["Service"]["spec"]
    assert service.get("type", "ClusterIP") == "ClusterIP"
    assert service["selector"].items() <= k8s["Deployment"]["spec"]["template"]["metadata"]["labels"].items()
    (port,) = service["ports"]
    assert port["port"] == 9108
    assert port["targetPort"] in ("metrics", 9108)


def test_k8s_objects_match_the_api_schemas(k8s: dict[str, dict[str, Any]]) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="pip install kubernetes-validate to check against the API schemas"
    )
    for doc in k8s.values():
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_compose_matches_the_compose_spec() -> None:
    pytest.importorskip("check_jsonschema", reason="pip install check-jsonschema to check the compose spec")
    out = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


# -- systemd ---------------------------------------------------------------------------------


def _unit() -> dict[str, dict[str, str]]:
    """Section -> key -> value (a repeated key keeps its last value)."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip()
    return sections


def _seconds(value: str | int) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec)?", str(value))
    assert match, f"cannot read {value!r} as seconds"
    return float(match.group(1))


def test_systemd_unit_runs_the_daemon_as_its_own_user(service_config: Config) -> None:
    unit, service = _unit()["Unit"], _unit()["Service"]
    assert service["ExecStart"] == EXEC_START
    assert service["Type"] in ("simple", "exec")
    assert (service["User"], service["Group"], service["DynamicUser"]) == ("anomalyd", "anomalyd", "no")
    assert service["Restart"] == "on-failure"
    assert "RestartSec" in service
    assert {"StartLimitIntervalSec", "StartLimitBurst"} <= unit.keys()
    assert service["KillSignal"] == "SIGTERM"
    assert _seconds(service["TimeoutStopSec"]) > service_config.service.shutdown_deadline_s
    assert service["StateDirectory"] == "anomalyd"
    assert STATE_DIR in service["ReadWritePaths"].split()
    assert service["EnvironmentFile"] == "-/etc/anomalyd/env"


def test_systemd_unit_is_hardened() -> None:
    service = _unit()["Service"]
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "no",  # PyTorch's CPU kernels generate code at run time
        "SystemCallArchitectures": "native",
        "CapabilityBoundingSet": "",
    }
    assert {key: service.get(key) for key in expected} == expected


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    true = shutil.which("true")
    assert true is not None
    # verify refuses an ExecStart binary that does not exist here; check a copy that names one.
    text = UNIT.read_text(encoding="utf-8")
    assert EXEC_START in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace("/opt/anomalyd/venv/bin/anomalyd", true), encoding="utf-8")
    out = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=120, check=False
    )
    output = out.stdout + out.stderr
    # Unknown keys and bad values are only warnings (exit 0): any line about the unit fails.
    assert out.returncode == 0, output
    assert UNIT.name not in output, output
