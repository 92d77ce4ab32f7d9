"""Offline validation of the deployment and observability files (no Docker engine needed).

compose.yaml against the Compose Specification schema and against the code (every container's
environment loads with the real settings classes), the Prometheus rules with promtool (`apt-get install
prometheus`; a missing promtool fails, never skips), the Grafana dashboards against the metric names the
code defines, nginx, Fluent Bit, Render, the Dockerfile, .env.example, and a scan for secrets.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from servicekit import settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
COMPOSE = ROOT / "compose.yaml"
RENDER = ROOT / "render.yaml"

SERVICE_PACKAGES = {
    "orchestrator": "orchestrator",
    "order": "order_service",
    "payment": "payment_service",
    "inventory": "inventory_service",
}
PARTICIPANTS = ("order", "payment", "inventory")
OBSERVABILITY = {"prometheus", "grafana", "jaeger", "loki", "fluent-bit"}
REQUIRED_ALERTS = {
    "SagaFailedPresent",
    "SagaFailureRateHigh",
    "SagasStuckPastDeadline",
    "CircuitBreakerOpen",
    "TakeoverSpike",
    "ServiceDown",
}


# ------------------------------------------------------------------------------------------- helpers
def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [str(a) for a in args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)  # noqa: S603 - our tools


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed, so the Prometheus rules cannot be checked: `make tools` (which `make test` "
            "runs) installs it as root on Debian/Ubuntu; otherwise run `sudo apt-get install prometheus`"
        )
    return path


def venv_tool(name: str) -> str:
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed in the virtualenv (it is a dev dependency: run `make sync`)")
    return found


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = load_yaml(COMPOSE)
    return loaded


def interpolate(value: str) -> str:
    """Compose interpolation with every variable unset: `${VAR:-default}` and `${VAR-default}` give the default."""
    value = re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)
    return value.replace("$$", "$")


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "use the mapping form of `environment:` (anchors merge into it)"
    return {k: interpolate(str(v)) for k, v in env.items()}


def app_services(spec: dict[str, Any]) -> dict[str, str]:
    """Compose services running a Sagaline process, mapped to the process they run."""
    found = {}
    for name, service in spec["services"].items():
        command = service.get("command") or []
        if command[:2] == ["sagaline", "serve"]:
            found[name] = command[2]
    return found


def migrate_jobs(spec: dict[str, Any]) -> dict[str, str]:
    found = {}
    for name, service in spec["services"].items():
        command = service.get("command") or []
        if len(command) == 3 and command[1].endswith("deploy/docker/migrate.py"):
            found[name] = command[2]
    return found


def load_settings(process: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> Any:
    """The settings the given process would start with under exactly env."""
    import importlib
    import os

    for key in list(os.environ):
        if key.startswith(("SAGALINE_", "OTEL_", "PG")):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config: Any = importlib.import_module(f"{SERVICE_PACKAGES[process]}.config")
    return settings.load(config.Settings, **overrides)


SECRET_NAMES = {p.name.removesuffix(".txt.example") for p in (DEPLOY / "secrets").glob("*.txt.example")}


def mounted_secrets(service: dict[str, Any]) -> set[str]:
    """The secrets a container can read at /run/secrets: all of them when it mounts the `secrets` volume."""
    return SECRET_NAMES if "secrets:/run/secrets:ro" in service.get("volumes", []) else set()


def prometheus_targets() -> dict[str, set[str]]:
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    return {
        job["job_name"]: {t for sc in job.get("static_configs", []) for t in sc.get("targets", [])}
        for job in config["scrape_configs"]
    }


# ------------------------------------------------------------------------------------------- compose
def test_compose_matches_the_compose_specification() -> None:
    result = run(venv_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_references_resolve() -> None:
    spec = compose()
    services, volumes = spec["services"], spec.get("volumes", {})
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if not source.startswith((".", "/", "$")):
                assert source in volumes, f"{name} mounts undeclared volume {source}"
            elif source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    # No file-based secrets: those would have to exist before `docker compose up` (a manual step).
    assert "secrets" not in spec or not spec["secrets"]
    assert all("secrets" not in service for service in services.values())


def test_every_long_running_compose_service_has_a_healthcheck() -> None:
    services = compose()["services"]
    one_shot = {name for name, service in services.items() if service.get("restart") == "no"}
    assert one_shot == {"secrets", "certs", *migrate_jobs(compose())}
    for name, service in services.items():
        if name in one_shot or name == "fluent-bit":  # distroless: nothing in the image to probe with
            continue
        if name in app_services(compose()):  # the image's HEALTHCHECK, on $HEALTHCHECK_PORT
            assert "HEALTHCHECK_PORT" in environment(service), name
            continue
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert "disable" not in check, name
        assert check["test"][0] in {"CMD", "CMD-SHELL"}, name
    assert "No healthcheck" in COMPOSE.read_text()  # the exception says why, in the file


def test_compose_makes_its_own_secrets_before_anything_reads_them() -> None:
    spec = compose()
    services = spec["services"]
    job = services["secrets"]
    assert job["command"] == ["sh", "/app/deploy/docker/init-secrets.sh", "/run/secrets"]
    assert job["restart"] == "no"
    assert set(job["volumes"]) == {"secrets:/run/secrets", "./deploy/secrets:/run/secrets-seed:ro"}
    readers = {name for name, service in services.items() if mounted_secrets(service)}
    assert {"postgres-orchestrator", "prometheus", "grafana", "orchestrator-1", "order"} <= readers
    for name in readers:
        # Every reader waits for the job, directly or through the database server it waits on.
        depends = services[name].get("depends_on", {})
        chain = [d for d in depends if d == "secrets" or d.startswith(("postgres-", "migrate-"))]
        assert chain, f"{name} reads secrets but does not wait for them"
        if "secrets" in depends:
            assert depends["secrets"]["condition"] == "service_completed_successfully", name
    assert "secrets:/run/secrets:ro" not in job["volumes"]
    assert "secrets" in spec["volumes"]


def test_the_secrets_job_generates_keeps_and_takes_the_operators_values(tmp_path: Path) -> None:
    seed, target = tmp_path / "seed", tmp_path / "run"
    seed.mkdir()
    target.mkdir()
    for name in ("api_key_client", "postgres_order_password"):
        (seed / f"{name}.txt.example").write_text("replace-me\n")
    (seed / "api_key_client.txt").write_text("chosen-by-the-operator\n")
    script = DEPLOY / "docker" / "init-secrets.sh"
    env = {"PATH": "/usr/bin:/bin", "INIT_SEED_DIR": str(seed)}

    def job() -> str:
        command = ["/bin/sh", str(script), str(target)]
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # noqa: S603 - ours
        assert result.returncode == 0, result.stderr
        return result.stdout

    first = job()
    password = (target / "postgres_order_password").read_text()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", password)
    assert (target / "api_key_client").read_text() == "chosen-by-the-operator\n"
    assert "chosen-by-the-operator" not in first
    assert password not in first
    assert {oct(p.stat().st_mode & 0o777) for p in target.iterdir()} == {"0o644"}
    # A second `up`: nothing changes, not even when the operator's file changed since.
    (seed / "api_key_client.txt").write_text("changed-later\n")
    second = job()
    assert (target / "postgres_order_password").read_text() == password
    assert (target / "api_key_client").read_text() == "chosen-by-the-operator\n"
    assert "differs from the value in use" in second


def test_compose_start_order_postgres_then_migrations_then_services() -> None:
    spec = compose()
    services, jobs, apps = spec["services"], migrate_jobs(spec), app_services(spec)
    assert sorted(jobs.values()) == sorted(SERVICE_PACKAGES)
    assert sorted(apps.values()) == sorted(["orchestrator", "orchestrator", *PARTICIPANTS])
    for job, process in jobs.items():
        database = services[job]["depends_on"]
        assert list(database) == [f"postgres-{process}"]
        assert database[f"postgres-{process}"]["condition"] == "service_healthy"
        assert services[job]["restart"] == "no"
    job_of = {process: job for job, process in jobs.items()}
    for name, process in apps.items():
        depends = services[name]["depends_on"]
        assert depends[job_of[process]]["condition"] == "service_completed_successfully", name
        if process == "orchestrator":
            for participant in PARTICIPANTS:
                assert depends[participant]["condition"] == "service_healthy", name
    assert set(services["nginx"]["depends_on"]) == {"orchestrator-1", "orchestrator-2"}


def test_compose_postgres_servers() -> None:
    spec = compose()
    for process, database in {
        "orchestrator": "saga_orchestrator",
        "order": "order_service",
        "payment": "payment_service",
        "inventory": "inventory_service",
    }.items():
        server = spec["services"][f"postgres-{process}"]
        env = environment(server)
        assert server["image"] == "postgres:15"
        assert env["POSTGRES_DB"] == database
        secret = env["POSTGRES_PASSWORD_FILE"].removeprefix("/run/secrets/")
        assert secret in mounted_secrets(server)
        assert "POSTGRES_PASSWORD" not in env
        assert "pg_isready" in " ".join(server["healthcheck"]["test"])
        (volume,) = [v for v in server["volumes"] if not v.startswith("secrets:")]
        assert volume.endswith(":/var/lib/postgresql/data")
        assert volume.split(":")[0] in spec["volumes"]


def test_every_compose_container_environment_loads_with_the_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = compose()
    services = spec["services"]
    for name, process in {**app_services(spec), **migrate_jobs(spec)}.items():
        service = services[name]
        env = environment(service)
        overrides = {"auth": "off"} if name.startswith("migrate-") and process == "orchestrator" else {}
        cfg = load_settings(process, env, monkeypatch, **overrides)
        # The database: a password-less URL to this process's own server, password from the mounted secret.
        url = cfg.database.url.get_secret_value()
        match = re.fullmatch(r"postgresql://(\w+)@(postgres-\w+):5432/(\w+)", url)
        assert match, f"{name}: database URL {url!r} must carry no password"
        server = services[match.group(2)]
        assert match.group(2) == f"postgres-{process}"
        assert match.group(1) == environment(server)["POSTGRES_USER"]
        assert match.group(3) == environment(server)["POSTGRES_DB"]
        assert env["PGPASSWORD_FILE"] == environment(server)["POSTGRES_PASSWORD_FILE"]
        assert env["PGPASSWORD_FILE"].removeprefix("/run/secrets/") in mounted_secrets(service)
        if name.startswith("migrate-"):
            assert service["healthcheck"] == {"disable": True}
            continue
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
        assert cfg.log.format == "json"
        assert int(env["HEALTHCHECK_PORT"]) == cfg.http_port
        assert str(cfg.http_port) in service["expose"]


def test_compose_orchestrators_share_the_participants_and_require_api_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = compose()
    services = spec["services"]
    grpc_ports = {p: load_settings(p, environment(services[p]), monkeypatch).grpc_port for p in PARTICIPANTS}
    instances = set()
    for name in ("orchestrator-1", "orchestrator-2"):
        service = services[name]
        cfg = load_settings("orchestrator", environment(service), monkeypatch)
        instances.add(cfg.instance)
        assert cfg.auth == "on"
        assert cfg.http_port == 8080
        assert {k.role for k in cfg.api_keys} == {"client", "admin"}
        for key in cfg.api_keys:
            assert key.sha256 is None
            assert key.key_file is not None
            assert str(key.key_file).removeprefix("/run/secrets/") in mounted_secrets(service)
        for participant in PARTICIPANTS:
            assert getattr(cfg.participants, participant) == f"{participant}:{grpc_ports[participant]}"
        assert str(grpc_ports["order"]) in services["order"]["expose"]
    assert instances == {1, 2}


def test_compose_observability_profile() -> None:
    spec = compose()
    for name, service in spec["services"].items():
        if name in OBSERVABILITY:
            assert service.get("profiles") == ["observability"], name
        else:
            assert "profiles" not in service, f"{name} must run without a profile"
    # The observability UIs and APIs are published on loopback only; the REST API through nginx everywhere.
    for name, port in {"prometheus": 9090, "grafana": 3000, "jaeger": 16686, "loki": 3100}.items():
        assert spec["services"][name]["ports"] == [f"127.0.0.1:${{{name.upper()}_PUBLISH:-{port}}}:{port}"], name
    published = {n for n, s in spec["services"].items() if s.get("ports")}
    assert published == {"nginx", "prometheus", "grafana", "jaeger", "loki"}
    assert spec["services"]["nginx"]["ports"] == ["${SAGALINE_HTTP_PUBLISH:-8080}:8080"]
    jaeger = environment(spec["services"]["jaeger"])
    assert jaeger["COLLECTOR_OTLP_ENABLED"] == "true"
    assert "4318" in spec["services"]["jaeger"]["expose"]


def test_prometheus_scrapes_every_sagaline_process(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = compose()
    targets = set().union(*prometheus_targets().values())
    for name, process in app_services(spec).items():
        cfg = load_settings(process, environment(spec["services"][name]), monkeypatch)
        assert f"{name}:{cfg.http_port}" in targets, f"Prometheus does not scrape {name}"


# ---------------------------------------------------------------------------------------- Prometheus
def test_prometheus_config_and_rules_are_valid() -> None:
    tool = promtool()
    # --syntax-only: the scrape credentials file exists only inside the compose container.
    result = run(tool, "check", "config", "--syntax-only", PROMETHEUS / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    result = run(tool, "check", "rules", PROMETHEUS / "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_their_promtool_unit_tests() -> None:
    result = run(promtool(), "test", "rules", PROMETHEUS / "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_are_the_required_ones_and_each_is_tested() -> None:
    rules = [r for g in load_yaml(PROMETHEUS / "alerts.yml")["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} == REQUIRED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]
    tests = load_yaml(PROMETHEUS / "alerts_test.yml")
    assert tests["rule_files"] == ["alerts.yml"]
    firing = {t["alertname"] for c in tests["tests"] for t in c["alert_rule_test"] if t["exp_alerts"]}
    quiet = {t["alertname"] for c in tests["tests"] for t in c["alert_rule_test"] if not t["exp_alerts"]}
    assert firing == REQUIRED_ALERTS, "every alert needs a test where it fires"
    assert quiet, "at least one case must expect no alert"


# ------------------------------------------------------------------------------------------- Grafana
def code_metric_names() -> set[str]:
    sources = [*ROOT.glob("services/*/src/**/*.py"), *ROOT.glob("libs/servicekit/src/**/*.py")]
    pattern = re.compile(r"\b(?:Counter|Gauge|Histogram|Summary|Info|Enum)\(\s*[\"']([a-zA-Z_:][a-zA-Z0-9_:]*)[\"']")
    names = {m.group(1) for path in sources for m in pattern.finditer(path.read_text())}
    assert "saga_duration_seconds" in names
    assert "grpc_request_duration_seconds" in names
    return names


_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless"}
_PROMQL_WORDS |= {"offset", "inf", "nan", "atan2"}
_SERIES_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (strings, matchers, ranges, grouping clauses and variables removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\w+", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        if not match.group(2) and match.group(1) not in _PROMQL_WORDS:
            names.add(match.group(1))
    return names


def metric_exists(name: str, known: set[str]) -> bool:
    if name == "up" or name.startswith("process_") or name in known:
        return True
    return any(
        name.endswith(s) and (name.removesuffix(s) in known or name in {k + s for k in known}) for s in _SERIES_SUFFIXES
    )


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def prometheus_exprs(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in panels(board):
        for target in panel.get("targets", []):
            source = target.get("datasource") or panel.get("datasource") or {}
            if source.get("type") == "prometheus":
                yield panel["title"], target["expr"]


def test_promql_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, job) (rate(x_seconds_bucket{job=~"$job", code!="OK"}[$__rate_interval])))'
    )
    assert promql_metric_names(expr) == {"x_seconds_bucket"}
    assert promql_metric_names("time() - max by (instance) (y_timestamp) > 1e3 and on(job) up == 0") == {
        "y_timestamp",
        "up",
    }
    assert metric_exists("saga_duration_seconds_bucket", {"saga_duration_seconds"})
    assert metric_exists("saga_takeovers_total", {"saga_takeovers_total"})
    assert not metric_exists("saga_imaginary_total", {"saga_duration_seconds"})


def test_the_three_dashboards_are_valid_grafana_json() -> None:
    boards = dashboards()
    assert set(boards) == {"saga-overview", "service-health", "tracing"}
    datasources = load_yaml(DEPLOY / "grafana/provisioning/datasources/datasources.yml")["datasources"]
    known_uids = {d["uid"] for d in datasources} | {"-- Grafana --"}
    assert {d["type"] for d in datasources} == {"prometheus", "loki", "jaeger"}
    uids = [b["uid"] for b in boards.values()]
    assert len(set(uids)) == len(uids)
    for name, board in boards.items():
        assert board["title"].startswith("Sagaline / "), name
        assert board["schemaVersion"] >= 36, name
        assert isinstance(board["templating"]["list"], list), name
        assert board["time"]["from"], name
        ids = [p["id"] for p in panels(board)]
        assert ids, name
        assert len(ids) == len(set(ids)), f"{name}: panel ids must be unique"
        for panel in panels(board):
            assert {"type", "title", "gridPos"} <= panel.keys(), f"{name}: {panel.get('title')}"
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, f"{name}: {panel['title']}"
            assert grid["h"] > 0, f"{name}: {panel['title']}"
            for target in panel.get("targets", []):
                source = target.get("datasource") or panel.get("datasource")
                assert source["uid"] in known_uids, f"{name}: {panel['title']} uses unknown datasource"
                assert target.get("refId"), f"{name}: {panel['title']} target without refId"


@pytest.mark.parametrize("name", ["saga-overview", "service-health", "tracing"])
def test_dashboard_queries_reference_metrics_the_code_defines(name: str) -> None:
    known = code_metric_names()
    exprs = list(prometheus_exprs(dashboards()[name]))
    assert exprs
    for title, expr in exprs:
        names = promql_metric_names(expr)
        assert names, f"{name}: {title!r} selects no metric: {expr}"
        unknown = {n for n in names if not metric_exists(n, known)}
        assert not unknown, f"{name}: {title!r} uses metrics no code defines: {sorted(unknown)}"


def test_dashboard_promql_parses(tmp_path: Path) -> None:
    rules = []
    for name, board in dashboards().items():
        for index, (_, expr) in enumerate(prometheus_exprs(board)):
            concrete = expr.replace("$__rate_interval", "1m").replace("$__range", "1h").replace("$__interval", "1m")
            concrete = re.sub(r"\$\w+", ".*", concrete)
            rules.append({"record": f"dashboard:{name.replace('-', '_')}:{index}", "expr": concrete})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = run(promtool(), "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboards_cover_what_operators_need() -> None:
    boards = dashboards()

    def text(name: str) -> str:
        return json.dumps(boards[name])

    for metric in (
        "saga_total",
        "saga_duration_seconds_bucket",
        "saga_compensations_total",
        "saga_retry_total",
        "saga_leases_held",
        "saga_takeovers_total",
    ):
        assert metric in text("saga-overview"), metric
    for quantile in ("histogram_quantile(0.5,", "histogram_quantile(0.95,", "histogram_quantile(0.99,"):
        assert quantile in text("saga-overview")
    for metric in (
        "grpc_request_duration_seconds",
        "db_query_duration_seconds",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert metric in text("service-health"), metric
    tracing = boards["tracing"]
    assert any((p.get("datasource") or {}).get("type") == "jaeger" for p in panels(tracing))
    # The service dependency graph: a node graph fed by Jaeger's dependencies API (Grafana's `dependencyGraph`
    # query type), from a datasource with the node graph enabled.
    (graph,) = [p for p in panels(tracing) if p["type"] == "nodeGraph"]
    assert [(t["datasource"]["uid"], t["queryType"]) for t in graph["targets"]] == [("jaeger", "dependencyGraph")]
    sources = {
        d["uid"]: d for d in load_yaml(DEPLOY / "grafana/provisioning/datasources/datasources.yml")["datasources"]
    }
    assert sources["jaeger"]["type"] == "jaeger"
    assert sources["jaeger"]["jsonData"]["nodeGraph"]["enabled"] is True
    assert any(p["type"] == "table" and "saga_duration_seconds_bucket" in json.dumps(p) for p in panels(tracing))


def test_grafana_provisioning_matches_compose() -> None:
    provider = load_yaml(DEPLOY / "grafana/provisioning/dashboards/dashboards.yml")["providers"][0]
    grafana = compose()["services"]["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"] if v.endswith(":ro"))
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    home = environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/saga-overview.json"
    datasources = {
        d["uid"]: d for d in load_yaml(DEPLOY / "grafana/provisioning/datasources/datasources.yml")["datasources"]
    }
    assert datasources["prometheus"]["url"] == "http://prometheus:9090"
    assert datasources["loki"]["url"] == "http://loki:3100"
    assert datasources["jaeger"]["url"] == "http://jaeger:16686"


# ------------------------------------------------------------------------------ YAML, nginx, Fluent Bit
def yaml_files() -> list[Path]:
    found = sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yml", ".yaml"})
    return [*found, COMPOSE, RENDER]


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_file_parses(path: Path) -> None:
    assert isinstance(load_yaml(path), dict)


def test_nginx_balances_both_orchestrators() -> None:
    conf = (DEPLOY / "nginx/nginx.conf").read_text()
    upstream = re.search(r"upstream\s+orchestrators\s*\{(.*?)\}", conf, re.S)
    assert upstream, "no upstream block named orchestrators"
    body = upstream.group(1)
    assert "least_conn;" in body
    for instance in ("orchestrator-1:8080", "orchestrator-2:8080"):
        assert re.search(rf"server\s+{instance}\s+[^;]*max_fails=\d+", body), instance
    assert "listen 8080;" in conf
    assert "proxy_pass http://orchestrators;" in conf
    assert conf.count("{") == conf.count("}")


def fluent_bit_sections(path: Path) -> list[tuple[str, dict[str, str]]]:
    sections: list[tuple[str, dict[str, str]]] = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if re.fullmatch(r"\[[A-Z]+\]", line):
            sections.append((line[1:-1], {}))
        else:
            assert sections, f"{path.name}: {raw!r} before the first section"
            assert raw.startswith("    "), f"{path.name}: {raw!r} is not indented under its section"
            key, _, value = line.partition(" ")
            sections[-1][1][key.lower()] = value.strip()
    return sections


def test_fluent_bit_parses_json_logs_and_ships_them_to_loki() -> None:
    sections = fluent_bit_sections(DEPLOY / "fluent-bit/fluent-bit.conf")
    parsers = {s["name"]: s for kind, s in fluent_bit_sections(DEPLOY / "fluent-bit/parsers.conf") if kind == "PARSER"}
    (service,) = [s for kind, s in sections if kind == "SERVICE"]
    assert service["parsers_file"] == "/fluent-bit/etc/sagaline-parsers.conf"
    inputs = [s for kind, s in sections if kind == "INPUT"]
    assert inputs
    assert all(s["name"] in {"tail", "forward"} for s in inputs)
    for section in inputs:
        if section["name"] == "tail":
            assert section["path"].startswith("/var/lib/docker/containers/")
            assert section["parser"] in parsers
    json_filters = [s for kind, s in sections if kind == "FILTER" and s["name"] == "parser"]
    assert json_filters
    assert all(parsers[s["parser"]]["format"] == "json" for s in json_filters)
    (output,) = [s for kind, s in sections if kind == "OUTPUT"]
    assert output["name"] == "loki"
    assert output["host"] == "loki"
    assert output["port"] == "3100"
    assert "saga_id" not in output.get("label_keys", "") + output.get("labels", ""), "saga ids are not labels"
    mounts = compose()["services"]["fluent-bit"]["volumes"]
    assert "./deploy/fluent-bit/parsers.conf:/fluent-bit/etc/sagaline-parsers.conf:ro" in mounts
    assert any(m.endswith(":/var/lib/docker/containers:ro") for m in mounts)


# -------------------------------------------------------------------------------------------- Render
_RENDER_SERVICE_KEYS = {
    "type", "name", "runtime", "dockerfilePath", "dockerContext", "dockerCommand", "preDeployCommand", "plan",
    "region", "numInstances", "healthCheckPath", "envVars", "maxShutdownDelaySeconds", "autoDeploy", "branch",
}  # fmt: skip
_RENDER_DATABASE_KEYS = {"name", "databaseName", "user", "plan", "region", "postgresMajorVersion", "ipAllowList"}


def test_render_blueprint_structure() -> None:
    blueprint = load_yaml(RENDER)
    assert set(blueprint) == {"services", "databases"}
    services = {s["name"]: s for s in blueprint["services"]}
    databases = {d["name"]: d for d in blueprint["databases"]}
    assert len(services) == 4
    assert len(databases) == 4
    web = [s for s in services.values() if s["type"] == "web"]
    assert [s["name"] for s in web] == ["sagaline-orchestrator"]
    assert web[0]["healthCheckPath"] == "/readyz"
    assert sorted(s["name"] for s in services.values() if s["type"] == "pserv") == [
        "sagaline-inventory",
        "sagaline-order",
        "sagaline-payment",
    ]
    for service in services.values():
        assert set(service) <= _RENDER_SERVICE_KEYS, set(service) - _RENDER_SERVICE_KEYS
        assert service["runtime"] == "docker"
        assert service["dockerfilePath"] == "./Dockerfile"
        assert service["preDeployCommand"].startswith("python /app/deploy/docker/migrate.py ")
        for var in service["envVars"]:
            assert len({"value", "fromDatabase", "fromService", "sync", "generateValue"} & set(var)) == 1, var
            if "value" in var:
                assert isinstance(var["value"], str), f"quote {var['key']}: Render wants strings"
            if "fromDatabase" in var:
                assert var["fromDatabase"]["name"] in databases
                assert var["fromDatabase"]["property"] == "connectionString"
            if "fromService" in var:
                assert var["fromService"]["name"] in services
                assert var["fromService"]["type"] == services[var["fromService"]["name"]]["type"]
    for database in databases.values():
        assert set(database) <= _RENDER_DATABASE_KEYS
        assert isinstance(database["postgresMajorVersion"], str)
    assert sorted(d["databaseName"] for d in databases.values()) == sorted(
        ["saga_orchestrator", "order_service", "payment_service", "inventory_service"]
    )


def test_render_environments_load_with_the_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    blueprint = load_yaml(RENDER)
    for service in blueprint["services"]:
        process = service["dockerCommand"].removeprefix("sagaline serve ")
        assert service["preDeployCommand"].endswith(f" {process}")
        env = {}
        for var in service["envVars"]:
            if "value" in var:
                env[var["key"]] = var["value"]
            elif "fromDatabase" in var:
                env[var["key"]] = f"postgresql://sagaline:pw@{var['fromDatabase']['name']}/db"
            elif "fromService" in var:
                env[var["key"]] = f"{var['fromService']['name']}-host"
            elif var.get("sync") is False:
                env[var["key"]] = '[{"name": "ops", "role": "admin", "sha256": "' + "0" * 64 + '"}]'
        if "SAGALINE_CONFIG" in env:
            env["SAGALINE_CONFIG"] = str(ROOT / env["SAGALINE_CONFIG"].removeprefix("/app/"))
        cfg = load_settings(process, env, monkeypatch)
        url = cfg.database.url.get_secret_value()
        assert url.startswith(f"postgresql://sagaline:pw@sagaline-{process}-db/")
        if process == "orchestrator":
            assert cfg.auth == "on"
            assert cfg.http_port == int(env["PORT"])
            for participant, port in (("order", 50051), ("payment", 50052), ("inventory", 50053)):
                assert getattr(cfg.participants, participant) == f"sagaline-{participant}-host:{port}"
        else:
            assert (cfg.grpc_port, cfg.http_port) in {(50051, 9101), (50052, 9102), (50053, 9103)}


# ------------------------------------------------------------------------------------ Dockerfile, env
def test_dockerfile_builds_from_the_lock_and_runs_unprivileged() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", dockerfile, re.M)
    assert [s[1] for s in stages] == ["uv", "builder", "runtime"]
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in dockerfile
    assert "uv sync --frozen --no-dev --all-packages" in dockerfile
    assert "UV_PROJECT_ENVIRONMENT=/app/.venv" in dockerfile
    runtime = dockerfile.split(" AS runtime", 1)[1]
    assert re.search(r"^USER\s+sagaline", runtime, re.M)
    assert "useradd" in runtime
    assert "--from=uv" not in runtime, "the runtime image ships no uv"
    assert "uv sync" not in runtime, "the runtime image installs nothing"
    healthcheck = re.search(r"^HEALTHCHECK .*\n.*CMD (\[.*\])", runtime, re.M)
    assert healthcheck, "runtime stage has no HEALTHCHECK"
    command = json.loads(healthcheck.group(1))
    assert command[:2] == ["python", "-c"]
    assert "urllib" in command[2]
    assert "/livez" in command[2]
    assert "HEALTHCHECK_PORT" in command[2]
    # Every workspace member's manifest is copied before the dependency layer is installed.
    workspace = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]["members"]
    members = sorted(str(p.parent.relative_to(ROOT)) for g in workspace for p in ROOT.glob(f"{g}/pyproject.toml"))
    copied = sorted(re.findall(r"^COPY (\S+)/pyproject\.toml \1/$", dockerfile, re.M))
    assert copied == members


def test_healthcheck_command_probes_livez(tmp_path: Path) -> None:
    import http.server
    import threading

    dockerfile = (ROOT / "Dockerfile").read_text()
    found = re.search(r"^\s*CMD (\[\"python\", \"-c\".*\])", dockerfile, re.M)
    assert found, "no python healthcheck command in the Dockerfile"
    command = json.loads(found.group(1))

    class Probe(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/livez" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Probe)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        probe_env = {"HEALTHCHECK_PORT": str(port)}
        healthy = subprocess.run([sys.executable, "-c", command[2]], env=probe_env, check=False)  # noqa: S603
        assert healthy.returncode == 0
    finally:
        server.shutdown()
        server.server_close()
    dead = subprocess.run([sys.executable, "-c", command[2]], env=probe_env, capture_output=True, check=False)  # noqa: S603
    assert dead.returncode != 0


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", ".data", ".env", "deploy/secrets"} <= ignored
    assert "!deploy/docker" in ignored


def settings_env_names() -> set[str]:
    import importlib

    def walk(model: type[BaseModel], prefix: str) -> Iterator[str]:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                yield from walk(annotation, f"{prefix}{name.upper()}__")
            else:
                yield f"{prefix}{name.upper()}"

    names = set()
    for process, package in SERVICE_PACKAGES.items():
        prefix = "SAGALINE_" if process == "orchestrator" else f"SAGALINE_{process.upper()}_"
        names |= set(walk(importlib.import_module(f"{package}.config").Settings, prefix))
    return names


def env_example() -> dict[str, str]:
    entries = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.fullmatch(r"(?:# )?([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            entries[match.group(1)] = match.group(2)
    return entries


def test_env_example_documents_every_variable_and_holds_no_secret() -> None:
    documented = env_example()
    missing = settings_env_names() - set(documented)
    assert not missing, f".env.example does not document {sorted(missing)}"
    compose_text = COMPOSE.read_text()
    interpolated = set(re.findall(r"\$\{(\w+)", compose_text)) | {"COMPOSE_PROFILES"}
    assert interpolated <= set(documented), sorted(interpolated - set(documented))
    for key, value in documented.items():
        if re.search(r"PASSWORD|SECRET|TOKEN|API_KEY$", key) and not key.endswith("_FILE"):
            assert value == "", f"{key} has a value in .env.example"
        assert not re.search(r"://[^/@\s]+:[^/@\s]+@", value), f"{key} holds a URL with a password"


# ------------------------------------------------------------------------------------------- secrets
_SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "AWS access key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),
    "Slack token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    "bearer token": re.compile(r"\bBearer\s+[A-Za-z0-9._~+/=-]{20,}"),
    "password in a URL": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"${}]+:([^@\s/'\"]+)@"),
    "assigned secret": re.compile(
        r"(?i)[\w.-]*(?:password|passwd|secret|token|api_?key)[\w.-]*[\"']?[ \t]*[:=][ \t]*[\"']?([^\s'\",}#]+)"
    ),
    "random-looking string": re.compile(
        r"(?<![\w/+-])(?=[\w+/-]*\d)(?=[\w+/-]*[a-z])(?=[\w+/-]*[A-Z])[\w+/-]{32,}(?![\w/+-])"
    ),
    "SHA-256 digest": re.compile(r"\b[0-9a-f]{64}\b"),
}
# Values that are references, not secrets: variables, secret-file paths, placeholders, JSON structure.
_PLACEHOLDER = re.compile(
    r"^(?:\$|<|`|\[|\{|/run/secrets\b|/app/|replace-me|example|change-?me|\.\.\.|\*+$|false$|true$)"
)


def secret_findings(text: str) -> list[str]:
    findings = []
    # `word: value` in prose is no assignment: the key-value pattern skips comment lines (the others do not).
    code = "\n".join("" if line.lstrip().startswith("#") else line for line in text.splitlines())
    for label, pattern in _SECRET_PATTERNS.items():
        for match in pattern.finditer(code if label == "assigned secret" else text):
            value = match.group(1) if pattern.groups else match.group(0)
            if pattern.groups and (_PLACEHOLDER.match(value) or "secrets/" in value or len(value) < 6):
                continue
            findings.append(f"{label}: {match.group(0)[:60]}")
    return findings


def scanned_files() -> list[Path]:
    ignored = [p for p in (DEPLOY / "secrets").glob("*.txt")]  # the real, git-ignored secret files
    files = [p for p in DEPLOY.rglob("*") if p.is_file() and p not in ignored and "__pycache__" not in p.parts]
    return sorted([*files, COMPOSE, RENDER, ROOT / ".env.example", ROOT / "Dockerfile"])


@pytest.mark.parametrize(
    "leak",
    [
        "password: hunter2hunter2",
        'POSTGRES_PASSWORD="s3cr3t-Value"',
        "url: postgresql://sagaline:Tr0ub4dor@db:5432/x",
        "Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345",
        "key: vYAJeEn08unBW6tl7gMwli6zXasoYvyHNpuoNxbqEMU",
        '"sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"',
        "-----BEGIN RSA PRIVATE KEY-----",
    ],
)
def test_the_secret_scanner_catches_leaks(leak: str) -> None:
    assert secret_findings(leak)


def test_no_file_under_deploy_holds_a_secret() -> None:
    findings = {
        str(path.relative_to(ROOT)): found for path in scanned_files() if (found := secret_findings(path.read_text()))
    }
    assert not findings, findings


def test_real_secret_files_are_git_ignored_and_only_placeholders_committed() -> None:
    rules = (DEPLOY / "secrets/.gitignore").read_text().split()
    assert "*.txt" in rules
    assert "!*.txt.example" in rules
    for example in (DEPLOY / "secrets").glob("*.txt.example"):
        assert example.read_text().strip().startswith("replace-me"), example.name
    git = shutil.which("git")
    if git is not None and (ROOT / ".git").exists():
        probe = run(git, "-C", ROOT, "check-ignore", "-q", "deploy/secrets/api_key_admin.txt")
        assert probe.returncode == 0, "deploy/secrets/*.txt is not ignored by git"
        probe = run(git, "-C", ROOT, "check-ignore", "-q", "deploy/secrets/api_key_admin.txt.example")
        assert probe.returncode == 1, "the *.txt.example placeholders must not be ignored"


def test_production_configs_put_metrics_and_docs_behind_a_key_and_prometheus_has_it() -> None:
    spec = compose()
    for name in app_services(spec):
        if name.startswith("orchestrator"):
            assert environment(spec["services"][name])["SAGALINE_OPERATOR_ENDPOINTS"] == "authenticated", name
    render_env = {
        e["key"]: e.get("value")
        for s in load_yaml(RENDER)["services"]
        if "orchestrator" in s["name"]
        for e in s.get("envVars", [])
    }
    assert render_env["SAGALINE_OPERATOR_ENDPOINTS"] == "authenticated"
    [job] = [j for j in load_yaml(PROMETHEUS / "prometheus.yml")["scrape_configs"] if j["job_name"] == "orchestrator"]
    secret = Path(job["authorization"]["credentials_file"]).name
    assert secret in mounted_secrets(spec["services"]["prometheus"]), "Prometheus can read the key it scrapes with"
