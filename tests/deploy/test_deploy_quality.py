"""Quality gates measured here, offline, by the tools a hosted service would run.

- the Dockerfile passes hadolint with no warning or error (`--failure-threshold warning`);
- the SQL migrations pass sqlfluff (PostgreSQL dialect, rules in `.sqlfluff`);
- duplicated lines stay at 3% or less (jscpd, the Rust build on PyPI; the same limit as the Sonar gate),
  for the application code and for the tests, each measured on its own;
- `.pre-commit-config.yaml` is valid and its hooks run the tools and fail on what they should catch.

Each gate is also shown failing on a planted defect, so a tool that silently checks nothing fails here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DUPLICATION_LIMIT = 3.0
SOURCES = (
    "src",
    "libs/servicekit/src",
    "services/orchestrator/src",
    "services/order/src",
    "services/payment/src",
    "services/inventory/src",
    "scripts",
    "bench",
)
TESTS = (
    "conftest.py",
    "tests",
    "libs/servicekit/tests",
    "services/orchestrator/tests",
    "services/order/tests",
    "services/payment/tests",
    "services/inventory/tests",
)
GENERATED = "**/*_pb2.py,**/*_pb2_grpc.py"


def run(
    *args: str | Path, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    command = [str(a) for a in args]
    return subprocess.run(  # noqa: S603 - our tools
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def venv_tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in the virtualenv (a dev dependency: run `make sync`)")
    return str(path)


# -------------------------------------------------------------------------------------------- hadolint
def hadolint(path: Path) -> tuple[int, list[dict[str, Any]]]:
    result = run(venv_tool("hadolint"), "--no-color", "--format", "json", "--failure-threshold", "warning", path)
    findings: list[dict[str, Any]] = json.loads(result.stdout or "[]")
    return result.returncode, findings


def test_dockerfile_has_no_hadolint_warning_or_error() -> None:
    code, findings = hadolint(ROOT / "Dockerfile")
    serious = [f for f in findings if f["level"] in ("warning", "error")]
    assert serious == [], serious
    assert code == 0
    # Informational findings are allowed but must stay known: DL3066 is `USER sagaline:sagaline` (a
    # name, not a uid), which is why deploy/k8s sets runAsUser 10001 explicitly.
    assert {f["code"] for f in findings} <= {"DL3066"}, findings


def test_hadolint_fails_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\nADD app.py /app/\n")
    code, findings = hadolint(careless)
    assert code == 1
    assert {"DL3007", "DL3008", "DL3020"} <= {f["code"] for f in findings}


# -------------------------------------------------------------------------------------------- sqlfluff
def sqlfluff(*paths: Path) -> subprocess.CompletedProcess[str]:
    return run(venv_tool("sqlfluff"), "lint", "--config", ROOT / ".sqlfluff", "--format", "json", *paths)


def test_migrations_pass_sqlfluff() -> None:
    migrations = sorted(ROOT.glob("services/*/migrations/*.sql"))
    assert len(migrations) >= 5
    result = sqlfluff(*migrations)
    report = json.loads(result.stdout)
    violations = [(f["filepath"], v["code"], v["description"]) for f in report for v in f["violations"]]
    assert violations == []
    assert result.returncode == 0, result.stderr
    assert len(report) == len(migrations), "every migration was linted"


def test_sqlfluff_fails_a_careless_migration(tmp_path: Path) -> None:
    careless = tmp_path / "0001_careless.sql"
    careless.write_text("select * from orders o, customers where o.customer_id = NULL;\n")
    result = sqlfluff(careless)
    assert result.returncode == 1
    codes = {v["code"] for f in json.loads(result.stdout) for v in f["violations"]}
    assert {"CP01", "AM04", "CV05"} <= codes, codes


# ----------------------------------------------------------------------------------------- duplication
def duplication(tmp_path: Path, *paths: str | Path) -> tuple[int, dict[str, Any]]:
    output = tmp_path / "jscpd"
    result = run(
        venv_tool("jscpd"),
        "--format",
        "python",
        "--ignore",
        GENERATED,
        "--reporters",
        "json",
        "--output",
        output,
        "--threshold",
        str(DUPLICATION_LIMIT),
        *paths,
    )
    report = json.loads((output / "jscpd-report.json").read_text())
    total: dict[str, Any] = report["statistics"]["total"]
    return result.returncode, total


@pytest.mark.parametrize("part", ["sources", "tests"])
def test_duplicated_lines_are_at_most_three_percent(part: str, tmp_path: Path) -> None:
    code, total = duplication(tmp_path, *(SOURCES if part == "sources" else TESTS))
    assert total["sources"] > 50, "jscpd read too few files: wrong paths?"
    assert total["percentage"] <= DUPLICATION_LIMIT, f"{part}: {total['percentage']:.2f}% duplicated lines"
    assert code == 0


def test_the_duplication_gate_fails_copied_code(tmp_path: Path) -> None:
    body = "".join(
        f"def handler_{i}(order, ledger):\n"
        f"    total = sum(line.price * line.quantity for line in order.lines)\n"
        f"    if total > ledger.limit + {i}:\n"
        f"        raise ValueError('over the limit', total, ledger.limit)\n"
        f"    ledger.debit(order.customer, total, reason='order {i}')\n"
        f"    return {{'order': order.id, 'total': total, 'step': {i}}}\n\n"
        for i in range(8)
    )
    code_dir = tmp_path / "code"
    code_dir.mkdir()
    (code_dir / "first.py").write_text(body)
    (code_dir / "second.py").write_text(body)
    code, total = duplication(tmp_path, code_dir)
    assert total["percentage"] >= 45, total  # the second copy's lines are the duplicated half
    assert code == 1


# ------------------------------------------------------------------------------------------ pre-commit
def hook_ids() -> set[str]:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    assert [repo["repo"] for repo in config["repos"]] == ["local"]
    return {hook["id"] for repo in config["repos"] for hook in repo["hooks"]}


def test_pre_commit_config_is_valid_and_runs_the_lint_tools() -> None:
    result = run(venv_tool("pre-commit"), "validate-config", ".pre-commit-config.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert hook_ids() == {
        "ruff",
        "ruff-format",
        "mypy",
        "lint-imports",
        "proto-freshness",
        "actionlint",
        "hadolint",
        "sqlfluff",
    }


def test_pre_commit_validate_config_rejects_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("repos:\n  - repo: local\n    hooks:\n      - id: x\n        entry: x\n")
    result = run(venv_tool("pre-commit"), "validate-config", bad)
    assert result.returncode == 1
    assert "Missing required key" in result.stdout


@pytest.fixture
def hook_repo(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A throwaway git repository with this config, the .venv, and room for files the hooks judge."""
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["PRE_COMMIT_HOME"] = str(tmp_path / "pre-commit-home")
    git = shutil.which("git")
    assert git is not None, "git is a prerequisite (README)"
    assert run(git, "init", "-q", cwd=repo, env=env).returncode == 0
    for name in (".pre-commit-config.yaml", ".sqlfluff"):
        shutil.copy(ROOT / name, repo / name)
    (repo / ".venv").symlink_to(ROOT / ".venv")
    return repo, env


def run_hook(
    hook_repo: tuple[Path, dict[str, str]], hook: str, files: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    repo, env = hook_repo
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    return run(venv_tool("pre-commit"), "run", hook, "--color", "never", "--files", *files, cwd=repo, env=env)


def test_pre_commit_hooks_pass_the_real_files(hook_repo: tuple[Path, dict[str, str]]) -> None:
    workflows = {f".github/workflows/{p.name}": p.read_text() for p in (ROOT / ".github/workflows").glob("*.yml")}
    assert run_hook(hook_repo, "actionlint", workflows).returncode == 0
    assert run_hook(hook_repo, "hadolint", {"Dockerfile": (ROOT / "Dockerfile").read_text()}).returncode == 0
    migration = ROOT / "services/orchestrator/migrations/0001_init.sql"
    sql = {"services/orchestrator/migrations/0001_init.sql": migration.read_text()}
    assert run_hook(hook_repo, "sqlfluff", sql).returncode == 0


def test_pre_commit_hooks_fail_on_defects(hook_repo: tuple[Path, dict[str, str]]) -> None:
    workflow = "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    needs: [nope]\n    steps:\n      - run: true\n"
    result = run_hook(hook_repo, "actionlint", {".github/workflows/bad.yml": workflow})
    assert result.returncode == 1
    assert 'needs job "nope"' in result.stdout
    result = run_hook(hook_repo, "hadolint", {"Dockerfile": "FROM python:latest\n"})
    assert result.returncode == 1
    assert "DL3007" in result.stdout
    result = run_hook(hook_repo, "sqlfluff", {"services/x/migrations/0001_x.sql": "select a from t where b = NULL;\n"})
    assert result.returncode == 1
    assert "CV05" in result.stdout


def test_make_hooks_installs_pre_commit(hook_repo: tuple[Path, dict[str, str]]) -> None:
    result = run("make", "-n", "hooks")
    assert result.returncode == 0, result.stderr
    command = next(line for line in result.stdout.splitlines() if "pre-commit install" in line).split()
    repo, env = hook_repo
    installed = run(ROOT / command[0], *command[1:], cwd=repo, env=env)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "pre-commit" in (repo / ".git" / "hooks" / "pre-commit").read_text()
