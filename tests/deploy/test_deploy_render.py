"""The Render blueprints: what the paid one costs, and a free-plan variant that really runs on free types.

deploy/render/free.yaml runs the whole system in one free web service (`sagaline up` with one orchestrator
on 0.0.0.0:$PORT, the participants on loopback) against one free PostgreSQL instance. These checks parse
its command with the real CLI, build the supervisor's children from its environment exactly as the
container would, and load every child's settings, offline.
"""

from __future__ import annotations

import importlib
import os
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from sagaline import cli, pg, stack
from servicekit import settings

ROOT = Path(__file__).resolve().parents[2]
PAID = ROOT / "render.yaml"
FREE = ROOT / "deploy" / "render" / "free.yaml"
PACKAGES = {"orchestrator": "orchestrator", "order": "order_service", "payment": "payment_service",
            "inventory": "inventory_service"}  # fmt: skip
FREE_PLANS = {"free"}
SERVER_URL = "postgresql://sagaline:pw@sagaline-demo-db/sagaline"
API_KEYS = '[{"name": "ops", "role": "admin", "sha256": "' + "0" * 64 + '"}]'


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def header(path: Path) -> str:
    lines = path.read_text().splitlines()
    return " ".join(
        line.lstrip("# ") for line in lines[: next(i for i, x in enumerate(lines) if not x.startswith("#"))]
    )


def blueprint_env(service: dict[str, Any]) -> dict[str, str]:
    """The variables Render would set, with database URLs and dashboard secrets stood in for."""
    env = {}
    for var in service["envVars"]:
        if "value" in var:
            assert isinstance(var["value"], str), f"quote {var['key']}: Render wants strings"
            env[var["key"]] = var["value"]
        elif "fromDatabase" in var:
            env[var["key"]] = SERVER_URL
        elif var.get("sync") is False:
            env[var["key"]] = API_KEYS
    return env


def up_options(command: str) -> dict[str, Any]:
    """The options `sagaline up` receives from command, parsed by the real CLI."""
    argv = shlex.split(command)
    assert argv[:2] == ["sagaline", "up"]
    group = typer.main.get_command(cli.app)
    parent = group.make_context("sagaline", ["up"], resilient_parsing=True)
    up = group.get_command(parent, "up")  # type: ignore[attr-defined]
    assert up is not None
    return dict(up.make_context("up", argv[2:], parent=parent).params)


def child_settings(process: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    for key in list(os.environ):
        if key.startswith(("SAGALINE_", "OTEL_", "PG")):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return settings.load(importlib.import_module(f"{PACKAGES[process]}.config").Settings)


def free_web_service() -> dict[str, Any]:
    services: list[dict[str, Any]] = load(FREE)["services"]
    assert len(services) == 1, "the free variant is one web service"
    return services[0]


def container(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> stack.Supervisor:
    """The supervisor `sagaline up` builds in the container from env and the blueprint's command (not started)."""
    for key in list(os.environ):
        if key.startswith("SAGALINE_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    url, source = pg.server_url()
    assert (url, source) == (SERVER_URL, "env"), "the container must use the blueprint's database"
    options = up_options(free_web_service()["dockerCommand"])
    topology = stack.Topology(url)
    topology.listen_host = options["listen"]
    topology.orchestrator_ports = [options["port"] + i for i in range(options["orchestrators"])]
    return stack.Supervisor(topology)


# ------------------------------------------------------------------------------------------------ paid
def test_the_paid_blueprint_says_what_it_costs_and_where_the_free_variant_is() -> None:
    blueprint = load(PAID)
    plans = {s["plan"] for s in blueprint["services"]} | {d["plan"] for d in blueprint["databases"]}
    assert not plans & FREE_PLANS
    assert any(s["type"] == "pserv" for s in blueprint["services"])
    text = header(PAID)
    assert "not free" in text
    assert "Private services have no free instance type" in text
    assert "$" in text
    assert "deploy/render/free.yaml" in text


# ------------------------------------------------------------------------------------------------ free
def test_the_free_blueprint_uses_free_instance_types_only() -> None:
    blueprint = load(FREE)
    assert set(blueprint) == {"services", "databases"}
    service = free_web_service()
    (database,) = blueprint["databases"]
    assert service["type"] == "web"  # the only service type with a free instance type
    assert service["plan"] == "free"
    assert database["plan"] == "free"
    assert service.get("numInstances", 1) == 1
    assert "preDeployCommand" not in service  # the supervisor migrates when the container starts
    assert service["runtime"] == "docker"
    assert service["dockerfilePath"] == "./Dockerfile"
    assert service["healthCheckPath"] == "/livez"
    (url_var,) = [v for v in service["envVars"] if "fromDatabase" in v]
    assert url_var == {
        "key": "SAGALINE_DATABASE_URL",
        "fromDatabase": {"name": database["name"], "property": "connectionString"},
    }
    text = header(FREE)
    for limit in ("15 minutes", "512 MB", "expires"):
        assert limit in text, limit


def test_the_free_command_runs_one_orchestrator_on_the_port_render_routes_to() -> None:
    service = free_web_service()
    options = up_options(service["dockerCommand"])
    assert options["orchestrators"] == 1
    assert options["listen"] == "0.0.0.0"  # noqa: S104 - Render's proxy reaches the container from outside
    assert options["port"] == int(blueprint_env(service)["PORT"])


def test_every_process_in_the_free_container_starts_with_the_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = blueprint_env(free_web_service())
    supervisor = container(monkeypatch, env)
    assert set(supervisor.children) == {"order", "payment", "inventory", "orchestrator-1"}
    orchestrator = supervisor.children["orchestrator-1"]
    assert orchestrator.health_url.endswith(f":{env['PORT']}/livez")  # what Render's health check calls
    cfg = child_settings("orchestrator", orchestrator.env, monkeypatch)
    assert (cfg.http_host, cfg.http_port) == ("0.0.0.0", int(env["PORT"]))  # noqa: S104
    assert cfg.auth == "on"
    assert cfg.auth_off_exposure() is None
    assert cfg.operator_endpoints == "authenticated"
    assert cfg.database.url.get_secret_value() == pg.with_database(SERVER_URL, "saga_orchestrator")
    for name in ("order", "payment", "inventory"):
        child = child_settings(name, supervisor.children[name].env, monkeypatch)
        assert (child.grpc_host, child.http_host) == ("127.0.0.1", "127.0.0.1"), name  # not reachable from outside
        assert child.database.url.get_secret_value() == pg.with_database(SERVER_URL, f"{name}_service")
        assert getattr(cfg.participants, name) == f"127.0.0.1:{child.grpc_port}"


def test_without_auth_the_public_orchestrator_would_refuse_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Why the blueprint sets SAGALINE_AUTH=on: the supervisor's local default (off) is refused on 0.0.0.0."""
    env = {k: v for k, v in blueprint_env(free_web_service()).items() if k != "SAGALINE_AUTH"}
    supervisor = container(monkeypatch, env)
    cfg = child_settings("orchestrator", supervisor.children["orchestrator-1"].env, monkeypatch)
    assert cfg.auth == "off"
    assert cfg.auth_off_exposure() is not None


def test_locally_the_orchestrators_stay_on_loopback() -> None:
    topology = stack.Topology("postgresql://postgres@127.0.0.1:5432/postgres")
    assert topology.orchestrator_env(0)["SAGALINE_HTTP_HOST"] == "127.0.0.1"
    topology.listen_host = "0.0.0.0"  # noqa: S104
    assert topology.orchestrator_env(0)["SAGALINE_HTTP_HOST"] == "0.0.0.0"  # noqa: S104
    assert topology.service_env("order")["SAGALINE_ORDER_HTTP_HOST"] == "127.0.0.1"
