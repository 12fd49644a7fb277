"""docker-compose.yml and the Dockerfile agree with the code, and Compose accepts the file.

No Docker engine runs on these machines; `docker-compose config` (Debian's `docker-compose`
package) or the `docker compose` plugin parses and validates the file without one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from workers.app import QUEUES
from workers.cli import main
from workers.settings import read_settings

ROOT = Path(__file__).resolve().parent.parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
IMAGE = "eventops:latest"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def app_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in services.items() if svc.get("image") == IMAGE}


def worker_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: svc for name, svc in app_services(services).items() if svc["command"][0] == "worker"
    }


def option_value(args: list[str], *names: str) -> str | None:
    for i, arg in enumerate(args):
        if arg in names:
            return args[i + 1]
        for name in names:
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} and ${VAR}, as it would with an empty environment."""
    return re.sub(
        r"\$\{(\w+)(?::?-([^}]*))?\}",
        lambda m: m.group(2) or "",
        value,
    )


def duration(value: str) -> timedelta:
    units = {"h": "hours", "m": "minutes", "s": "seconds"}
    total = timedelta()
    for amount, unit in re.findall(r"(\d+)([hms])", value):
        total += timedelta(**{units[unit]: int(amount)})
    return total


def compose_validators() -> list[list[str]]:
    found = []
    if shutil.which("docker-compose"):
        found.append(["docker-compose"])
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=60
        )
        if probe.returncode == 0:
            found.append([docker, "compose"])
    return found


def test_compose_file_is_valid_for_compose() -> None:
    validators = compose_validators()
    if not validators:
        reason = (
            "no Compose validator: install Debian's docker-compose package "
            "(apt-get install docker-compose) or the docker compose plugin"
        )
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(reason)
        pytest.skip(reason)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    for tool in validators:
        result = subprocess.run(
            [*tool, "-f", str(COMPOSE_FILE), "config"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"{' '.join(tool)} config:\n{result.stderr}"
        # Every variable has a default, so a bare `up` works on a fresh machine.
        assert "is not set" not in result.stderr, result.stderr


def test_compose_file_uses_the_compose_spec_without_version_key(
    compose: dict[str, Any],
) -> None:
    assert "version" not in compose


def test_exactly_one_beat_with_one_replica(services: dict[str, dict[str, Any]]) -> None:
    beats = {
        name: svc for name, svc in app_services(services).items() if svc["command"][0] == "beat"
    }
    assert list(beats) == ["beat"]
    assert beats["beat"]["deploy"]["replicas"] == 1


def test_app_service_commands_are_registered_cli_commands_with_existing_options(
    services: dict[str, dict[str, Any]],
) -> None:
    apps = app_services(services)
    assert set(apps) == {
        "migrate",
        "worker-probes",
        "worker-escalations",
        "worker-slow",
        "beat",
        "flower",
        "dashboard",
    }
    for name, svc in apps.items():
        args = svc["command"]
        assert isinstance(args, list) and all(isinstance(a, str) for a in args), name
        command = main.commands.get(args[0])
        assert isinstance(command, click.Command), f"{name}: no `eventops {args[0]}` command"
        known = {opt for param in command.params for opt in param.opts}
        used = {arg.split("=", 1)[0] for arg in args[1:] if arg.startswith("-")}
        assert used <= known, f"{name}: unknown options {sorted(used - known)}"
        # Click itself accepts the arguments (types, arity) without running the command.
        command.make_context(args[0], list(args[1:]), parent=click.Context(main))


def test_every_queue_has_a_worker_in_compose(services: dict[str, dict[str, Any]]) -> None:
    consumed: set[str] = set()
    for name, svc in worker_services(services).items():
        queues = option_value(svc["command"], "--queues", "-Q")
        assert queues, f"{name} names no queues (the default would consume them all)"
        listed = set(queues.split(","))
        assert listed <= set(QUEUES), f"{name} consumes unknown queues {listed - set(QUEUES)}"
        consumed |= listed
    assert consumed == set(QUEUES)


def test_workers_have_distinct_node_names(services: dict[str, dict[str, Any]]) -> None:
    names = [
        option_value(svc["command"], "--hostname", "-n")
        for svc in worker_services(services).values()
    ]
    assert None not in names
    assert len(set(names)) == len(names)


def test_worker_node_names_survive_a_redeploy(services: dict[str, dict[str, Any]]) -> None:
    # `%h` is the container's hostname: without a fixed one it is the container id, so a
    # recreated container reports under a new name and the old one pages as missing.
    hostnames = [svc.get("hostname") for svc in worker_services(services).values()]
    assert None not in hostnames
    assert len(set(hostnames)) == len(hostnames)


def test_workers_get_init_and_time_for_a_warm_shutdown(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, svc in worker_services(services).items():
        assert svc.get("init") is True, name
        assert duration(svc.get("stop_grace_period", "10s")) >= timedelta(seconds=30), name


def test_postgres_and_redis_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]


def test_redis_never_evicts_queued_tasks(services: dict[str, dict[str, Any]]) -> None:
    command = services["redis"]["command"]
    assert option_value(command, "--maxmemory-policy") == "noeviction"


def test_app_services_start_after_migrate_and_healthy_services(
    services: dict[str, dict[str, Any]],
) -> None:
    migrate = services["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name, svc in app_services(services).items():
        assert svc["build"] == ".", name
        if name == "migrate":
            continue
        assert svc["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"


def test_app_environment_is_accepted_by_settings(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.startswith("EVENTOPS_"):
            monkeypatch.delenv(key)
    environment = services["worker-probes"]["environment"]
    for key, value in environment.items():
        monkeypatch.setenv(key, interpolate(str(value)))
    settings = read_settings()
    assert settings.database_url and "@postgres:5432/" in settings.database_url
    assert settings.broker_url == "redis://redis:6379/0"
    assert settings.platform_url


def test_flower_is_published_and_listens_beyond_localhost(
    services: dict[str, dict[str, Any]],
) -> None:
    flower = services["flower"]
    assert option_value(flower["command"], "--address") == "0.0.0.0"
    assert any(str(port).endswith("5555:5555") for port in flower["ports"])


def test_dashboard_is_published_listens_beyond_localhost_and_keeps_its_secrets(
    services: dict[str, dict[str, Any]],
) -> None:
    dashboard = services["dashboard"]
    assert option_value(dashboard["command"], "--address") == "0.0.0.0"
    port = option_value(dashboard["command"], "--port")
    assert any(str(p) == f"{port}:{port}" for p in dashboard["ports"])
    assert "/healthz" in " ".join(dashboard["healthcheck"]["test"])
    # The generated password and cookie secret live in var/, which must be a volume.
    assert any(str(v).endswith(":/app/var") for v in dashboard["volumes"])


def test_dockerfile_installs_every_package_and_runs_eventops_as_non_root() -> None:
    dockerfile = DOCKERFILE.read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    copied = " ".join(line for line in dockerfile.splitlines() if line.startswith("COPY"))
    packages = [name.rstrip("*") for name in project["packages"]["find"]["include"]]
    for package in packages:
        assert f"COPY {package} " in copied, f"Dockerfile does not copy package {package}"
    for module in project["py-modules"]:
        assert f"{module}.py" in copied, f"Dockerfile does not copy module {module}"
    assert "COPY config " in copied
    assert "EVENTOPS_CONFIG_FILE=/app/config/eventops.yaml" in dockerfile
    runs = " ".join(line for line in dockerfile.splitlines() if line.startswith("RUN"))
    assert "pip install ." in runs and "[dev]" not in runs
    assert 'ENTRYPOINT ["eventops"]' in dockerfile
    users = re.findall(r"^USER\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert users and users[-1] not in {"root", "0"}
