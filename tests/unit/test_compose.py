"""docker-compose.yml runs the same system: PostgreSQL 16, then migrate, listener and web, each
with a `cascade` command that exists. No Docker engine runs here, so the file is checked, not
run."""

from __future__ import annotations

import tomllib
from typing import Any

import yaml

from cascade.cli import build_parser
from cascade.database import PROJECT_ROOT


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    return loaded


def test_compose__runs_postgres_16_with_migrate_listener_and_web() -> None:
    services = compose()["services"]

    assert set(services) == {"db", "migrate", "listener", "web"}
    assert services["db"]["image"] == "postgres:16"


def test_compose__every_command_is_a_cascade_subcommand_that_parses() -> None:
    parser = build_parser()

    for name in ("migrate", "listener", "web"):
        command = compose()["services"][name]["command"]
        assert command[0] == "cascade", name
        parser.parse_args(command[1:])  # exits (failing the test) on an unknown subcommand


def test_compose__services_start_in_order_against_the_db_service() -> None:
    services = compose()["services"]

    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("listener", "web"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
        assert "@db:5432/" in services[name]["environment"]["DATABASE_URL"]


def test_dockerfile__installs_the_project_and_ships_its_sql() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()

    assert "pip install --no-cache-dir -e ." in dockerfile
    for folder in ("schema", "triggers", "handlers", "cascade"):
        assert f"COPY {folder} ./{folder}" in dockerfile


def test_dockerfile__copies_every_package_and_folder_the_code_reads() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    top_level = {package.split(".")[0] for package in setuptools["packages"]}
    modules = {f"{module}.py" for module in setuptools["py-modules"]}

    for folder in top_level | {"schema", "triggers", "maintenance"}:
        assert f"COPY {folder} ./{folder}" in dockerfile, folder
    for module in modules:
        assert module in dockerfile, module
