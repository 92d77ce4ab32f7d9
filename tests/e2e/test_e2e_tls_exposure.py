"""What the processes expose when nobody configured security: the auth-off guard and the local defaults.

`SAGALINE_AUTH=off` makes every caller an admin, so an orchestrator refuses to start with it on an HTTP
bind others can reach (exit 2, before it binds anything) unless `SAGALINE_ALLOW_INSECURE_AUTH_OFF=true`
says the operator means it. `sagaline up` binds every port to 127.0.0.1, so its auth-off default still
starts, with gRPC reflection on for local exploration; a participant on its own keeps reflection off.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from orchestrator import bootstrap as orchestrator_bootstrap
from orchestrator import config as orchestrator_config
from order_service import config as order_config
from sagaline import stack
from sagaline.cli import app
from servicekit import settings

MakeDatabase = Callable[[Path | None], Awaitable[str]]
UNREACHABLE_DB = "postgresql://nobody@127.0.0.1:1/nothing"


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGALINE_", "OTEL_", "PG"))}
    return {**env, **extra}


def _load(cls: type[settings.S], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> settings.S:
    for key in list(os.environ):
        if key.startswith("SAGALINE_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("SAGALINE_"):
            monkeypatch.setenv(key, value)
    return settings.load(cls)


# ------------------------------------------------------------------------------- the guard's rule
@pytest.mark.parametrize(
    ("auth", "host", "allow", "refused"),
    [
        ("off", "0.0.0.0", False, True),  # noqa: S104
        ("off", "::", False, True),
        ("off", "10.1.2.3", False, True),
        ("off", "orchestrator-1", False, True),
        ("off", "0.0.0.0", True, False),  # noqa: S104
        ("off", "127.0.0.1", False, False),
        ("off", "::1", False, False),
        ("off", "localhost", False, False),
        ("on", "0.0.0.0", False, False),  # noqa: S104
    ],
)
def test_auth_off_is_refused_only_on_a_reachable_bind_without_the_override(
    auth: str, host: str, allow: bool, refused: bool
) -> None:
    keys = [orchestrator_config.ApiKey(name="k", role="admin", key_file=Path("/dev/null"))] if auth == "on" else []
    cfg = orchestrator_config.Settings(
        auth=auth,  # type: ignore[arg-type]
        api_keys=keys,
        http_host=host,
        allow_insecure_auth_off=allow,
    )

    problem = cfg.auth_off_exposure()

    assert (problem is not None) is refused
    if refused:
        assert problem is not None
        assert "SAGALINE_ALLOW_INSECURE_AUTH_OFF=true" in problem


def test_the_override_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"SAGALINE_AUTH": "off", "SAGALINE_HTTP_HOST": "0.0.0.0", "SAGALINE_ALLOW_INSECURE_AUTH_OFF": "true"}  # noqa: S104

    cfg = _load(orchestrator_config.Settings, env, monkeypatch)

    assert cfg.allow_insecure_auth_off
    assert cfg.auth_off_exposure() is None


# ------------------------------------------------------------------------------- real processes
def test_an_orchestrator_with_auth_off_on_a_reachable_bind_exits_2_before_binding() -> None:
    port = stack.free_port()
    env = _clean_env(
        SAGALINE_AUTH="off",
        SAGALINE_HTTP_HOST="0.0.0.0",  # noqa: S104
        SAGALINE_HTTP_PORT=str(port),
        SAGALINE_DATABASE__URL=UNREACHABLE_DB,
        SAGALINE_LOG__FORMAT="json",
    )

    result = subprocess.run(
        [sys.executable, "-m", "orchestrator"], env=env, capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 2, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "refuses to start" in output
    assert "SAGALINE_ALLOW_INSECURE_AUTH_OFF" in output
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2)


async def test_with_the_override_it_starts_on_a_reachable_bind(make_database: MakeDatabase) -> None:
    url = await make_database(orchestrator_bootstrap.MIGRATIONS_DIR)
    port = stack.free_port()
    env = _clean_env(
        SAGALINE_AUTH="off",
        SAGALINE_ALLOW_INSECURE_AUTH_OFF="true",
        SAGALINE_HTTP_HOST="0.0.0.0",  # noqa: S104
        SAGALINE_HTTP_PORT=str(port),
        SAGALINE_DATABASE__URL=url,
        SAGALINE_SHUTDOWN_GRACE="2s",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orchestrator", env=env, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(timeout=1) as client, asyncio.timeout(30):
            while True:
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/livez")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.returncode is None, f"exited with {process.returncode}"
                await asyncio.sleep(0.1)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)

    assert code == 0


# ------------------------------------------------------------------------------ `sagaline up` defaults
def test_the_local_stack_binds_loopback_so_its_auth_off_default_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAGALINE_AUTH", raising=False)
    monkeypatch.delenv(stack.CERTS_DIR_ENV, raising=False)
    supervisor = stack.Supervisor(stack.Topology("postgresql://postgres@127.0.0.1:5432/postgres"))

    cfg = _load(orchestrator_config.Settings, supervisor.children["orchestrator-1"].env, monkeypatch)

    assert cfg.auth == "off"
    assert cfg.http_host == "127.0.0.1"
    assert cfg.auth_off_exposure() is None
    assert not cfg.tls.enabled


def test_the_local_stack_turns_reflection_on_and_a_lone_participant_keeps_it_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in list(os.environ):
        if key.endswith("_GRPC_REFLECTION"):
            monkeypatch.delenv(key)
    supervisor = stack.Supervisor(stack.Topology("postgresql://postgres@127.0.0.1:5432/postgres"))

    under_up = _load(order_config.Settings, supervisor.children["order"].env, monkeypatch)
    alone = _load(order_config.Settings, {}, monkeypatch)

    assert under_up.grpc_reflection
    assert under_up.grpc_host == "127.0.0.1"
    assert not alone.grpc_reflection


def test_up_with_a_certs_directory_without_a_ca_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["up", "--certs", str(tmp_path)])

    assert result.exit_code == 2
    assert "sagaline certs" in result.output
