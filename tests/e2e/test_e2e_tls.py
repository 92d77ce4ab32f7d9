"""The whole stack with mutual TLS on every internal gRPC call, from certificates `sagaline certs` made.

`SAGALINE_CERTS_DIR` is the only switch: the supervisor gives every participant its server certificate
and every orchestrator the client certificate. A saga that completes proves the orchestrators call with
their certificate; a plaintext caller and a TLS caller without a client certificate are refused.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from typer.testing import CliRunner

from sagaline import check, pg, stack
from sagaline.cli import app
from tests.e2e.conftest import ALICE, order, running_stack


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    result = CliRunner().invoke(app, ["certs", str(directory)])
    assert result.exit_code == 0, result.output
    return directory


@pytest.fixture(scope="module")
async def tls_system(pg_server: str, certs: Path) -> AsyncIterator[stack.Supervisor]:
    async for supervisor in running_stack(pg_server, extra_env={stack.CERTS_DIR_ENV: str(certs)}):
        yield supervisor


def _target(system: stack.Supervisor, service: str) -> str:
    return f"{system.topology.host}:{system.topology.grpc_ports[service]}"


def _tls(certs: Path, *, client_certificate: bool) -> grpc.ChannelCredentials:
    root = (certs / "ca.crt").read_bytes()
    if not client_certificate:
        return grpc.ssl_channel_credentials(root_certificates=root)
    key, chain = (certs / "orchestrator.key").read_bytes(), (certs / "orchestrator.crt").read_bytes()
    return grpc.ssl_channel_credentials(root, key, chain)


async def _health(channel: grpc.aio.Channel) -> int:
    async with channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return int(response.status)


async def _wait_terminal(client: httpx.AsyncClient, saga_id: str, within: float = 30.0) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            saga: dict[str, Any] = (await client.get(f"/v1/sagas/{saga_id}")).json()
            if saga["status"] in ("COMPLETED", "COMPENSATED", "FAILED"):
                return saga
            await asyncio.sleep(0.05)


async def test_a_saga_completes_over_mutual_tls(tls_system: stack.Supervisor) -> None:
    async with httpx.AsyncClient(base_url=tls_system.topology.orchestrator_url(0)) as client:
        response = await client.post("/v1/sagas", json=order(ALICE), headers={"Idempotency-Key": str(uuid.uuid4())})
        assert response.status_code == 202, response.text
        saga = await _wait_terminal(client, response.json()["id"])

    assert saga["status"] == "COMPLETED", saga
    topology = tls_system.topology
    report = await check.run({role: topology.url(role) for role in pg.DATABASES})
    assert report.ok, report.violations


@pytest.mark.parametrize("service", stack.SERVICES)
async def test_a_participant_serves_a_caller_with_the_client_certificate(
    tls_system: stack.Supervisor, certs: Path, service: str
) -> None:
    channel = grpc.aio.secure_channel(_target(tls_system, service), _tls(certs, client_certificate=True))

    assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("service", stack.SERVICES)
async def test_a_participant_refuses_plaintext_and_tls_without_a_client_certificate(
    tls_system: stack.Supervisor, certs: Path, service: str
) -> None:
    callers = {
        "plaintext": grpc.aio.insecure_channel(_target(tls_system, service)),
        "tls without a client certificate": grpc.aio.secure_channel(
            _target(tls_system, service), _tls(certs, client_certificate=False)
        ),
    }
    for caller, channel in callers.items():
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _health(channel)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE, caller


async def test_the_local_stack_turns_reflection_on_behind_the_same_mutual_tls(
    tls_system: stack.Supervisor, certs: Path
) -> None:
    target = _target(tls_system, "order")
    async with grpc.aio.secure_channel(target, _tls(certs, client_certificate=True)) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        responses = [r async for r in stub.ServerReflectionInfo(iter([request]), timeout=5)]

    names = {s.name for s in responses[0].list_services_response.service}
    assert "sagaline.order.v1.OrderService" in names
