"""compose.yaml and render.yaml wire mutual TLS into every internal gRPC call (offline, no Docker engine).

Compose: the one-shot `certs` job runs `sagaline certs`; running its exact command here must produce every
file each service is configured to read, while the CA key stays in a volume no service mounts. Render:
every service reads its files from Render's secret files, and the orchestrator checks service names.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sagaline.cli import app
from tests.deploy.test_deploy_files import RENDER, app_services, compose, environment, load_settings, load_yaml

PARTICIPANTS = ("order", "payment", "inventory")


def _tls_paths(cfg: Any) -> list[Path]:
    return [cfg.tls.cert_file, cfg.tls.key_file, cfg.tls.ca_file]


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> `volume[:ro]` for the named-volume mounts of a service."""
    found = {}
    for mount in service.get("volumes", []):
        source, target, *mode = mount.split(":")
        found[target] = ":".join([source, *mode])
    return found


def _certs_command(spec: dict[str, Any]) -> list[str]:
    command = spec["services"]["certs"]["command"]
    assert command[:2] == ["sh", "-c"], command
    first = command[2].split("&&")[0]
    return shlex.split(first)


def test_compose_services_speak_mutual_tls_with_files_from_the_read_only_tls_volume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = compose()
    services = spec["services"]
    for name, process in app_services(spec).items():
        service = services[name]
        cfg = load_settings(process, environment(service), monkeypatch)
        assert cfg.tls.enabled, name
        assert _mounts(service)["/tls"] == "tls:ro", name
        assert all(path.parent == Path("/tls") for path in _tls_paths(cfg)), name
        assert service["depends_on"]["certs"]["condition"] == "service_completed_successfully", name
        if process == "orchestrator":
            # The participants' certificates name their compose service, so the targets verify as they are.
            assert cfg.tls.server_name == ""
            assert {getattr(cfg.participants, p).split(":")[0] for p in PARTICIPANTS} == set(PARTICIPANTS)


def test_the_ca_key_volume_is_mounted_by_the_certs_job_only() -> None:
    spec = compose()
    owners = {name for name, service in spec["services"].items() if any(
        mount.split(":")[0] == "tls-ca" for mount in service.get("volumes", [])
    )}  # fmt: skip
    assert owners == {"certs"}
    job = spec["services"]["certs"]
    assert job["restart"] == "no"
    assert job["healthcheck"] == {"disable": True}
    assert _certs_command(spec)[:2] == ["sagaline", "certs"]


def test_the_certs_job_command_makes_every_file_the_services_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = compose()
    mounts = _mounts(spec["services"]["certs"])
    local = {target: tmp_path / source for target, source in mounts.items()}
    args = [str(local.get(arg, arg)) for arg in _certs_command(spec)[1:]]

    result = CliRunner().invoke(app, args)

    assert result.exit_code == 0, result.output
    for name, process in app_services(spec).items():
        cfg = load_settings(process, environment(spec["services"][name]), monkeypatch)
        for path in _tls_paths(cfg):
            assert (tmp_path / "tls" / path.name).is_file(), f"{name} reads {path}, which the job does not make"
    assert not (tmp_path / "tls" / "ca.key").exists(), "the CA key must not land in the volume services mount"
    assert (tmp_path / "tls-ca" / "ca.key").is_file()


def test_render_services_speak_mutual_tls_with_render_secret_files(monkeypatch: pytest.MonkeyPatch) -> None:
    for service in load_yaml(RENDER)["services"]:
        process = service["dockerCommand"].removeprefix("sagaline serve ")
        # Only the TLS variables (the whole environment is checked by test_deploy_files).
        env = {var["key"]: var["value"] for var in service["envVars"] if "TLS__" in var["key"]}
        overrides = {"auth": "off"} if process == "orchestrator" else {}
        cfg = load_settings(process, env, monkeypatch, **overrides)
        assert cfg.tls.enabled, service["name"]
        assert all(path.parent == Path("/etc/secrets") for path in _tls_paths(cfg)), service["name"]
        expected = "orchestrator" if process == "orchestrator" else process
        assert cfg.tls.cert_file.name == f"{expected}.crt"
        if process == "orchestrator":
            assert cfg.tls.server_name == "{service}", "Render host names are not in the certificates"
