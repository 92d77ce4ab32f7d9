"""Mutual TLS on a real grpc.aio server: who gets in, who is refused, and what the server says at start.

Certificates are made per module by `servicekit.tls` (the code behind `sagaline certs`) with the real
`openssl`: a trusted CA with a server certificate, a client certificate and a second server certificate,
and an unrelated CA with a client certificate of its own. A refused caller must never reach a handler.
"""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from servicekit import grpc_client, grpc_server, tls
from servicekit.settings import ClientTlsSettings, ConfigError, TlsSettings

SERVICE = "sagaline.sktls.v1.Echo"


def _identity(data: bytes) -> bytes:
    return data


@dataclass
class Echo:
    calls: list[bytes] = field(default_factory=list)

    async def ok(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.calls.append(request)
        return b"echo:" + request

    def handler(self) -> grpc.GenericRpcHandler:
        method = grpc.unary_unary_rpc_method_handler(
            self.ok, request_deserializer=_identity, response_serializer=_identity
        )
        return grpc.method_handlers_generic_handler(SERVICE, {"Ok": method})


@dataclass(frozen=True)
class Pki:
    ca: tls.Issued
    server: tls.Issued  # names localhost and 127.0.0.1
    named: tls.Issued  # names only `order`
    other_server: tls.Issued  # also a server certificate from the trusted CA (serverAuth only)
    client: tls.Issued
    stranger_ca: tls.Issued
    stranger: tls.Issued  # a client certificate from the unrelated CA
    stranger_server: tls.Issued

    def server_settings(self, issued: tls.Issued | None = None) -> TlsSettings:
        issued = issued or self.server
        return TlsSettings(cert_file=issued.cert, key_file=issued.key, ca_file=self.ca.cert)

    def client_settings(self, issued: tls.Issued | None = None, **extra: Any) -> ClientTlsSettings:
        issued = issued or self.client
        return ClientTlsSettings(cert_file=issued.cert, key_file=issued.key, ca_file=self.ca.cert, **extra)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    trusted, unrelated = tmp_path_factory.mktemp("trusted"), tmp_path_factory.mktemp("unrelated")
    ca = tls.create_authority(trusted, "sk test CA")
    stranger_ca = tls.create_authority(unrelated, "sk unrelated CA")
    return Pki(
        ca=ca,
        server=tls.issue(ca, trusted, "echo", "server", ["localhost", "127.0.0.1"]),
        named=tls.issue(ca, trusted, "order", "server"),
        other_server=tls.issue(ca, trusted, "payment", "server", ["127.0.0.1"]),
        client=tls.issue(ca, trusted, "orchestrator", "client"),
        stranger_ca=stranger_ca,
        stranger=tls.issue(stranger_ca, unrelated, "orchestrator", "client"),
        stranger_server=tls.issue(stranger_ca, unrelated, "echo", "server", ["127.0.0.1"]),
    )


@dataclass
class Served:
    echo: Echo
    port: int


async def _serve(server_tls: TlsSettings | None, *, reflection: bool = False) -> tuple[grpc_server.GrpcServer, Served]:
    echo = Echo()
    server = grpc_server.GrpcServer(host="127.0.0.1", port=0, tls=server_tls, reflection=reflection)
    server.server.add_generic_rpc_handlers((echo.handler(),))
    server.add_service_name(SERVICE)
    return server, Served(echo, await server.start())


@pytest.fixture
async def served(pki: Pki) -> AsyncIterator[Served]:
    server, served = await _serve(pki.server_settings())
    yield served
    await server.stop(0)


async def _call(channel: grpc.aio.Channel, request: bytes = b"hi") -> bytes:
    async with channel:
        method = channel.unary_unary(f"/{SERVICE}/Ok", request_serializer=_identity, response_deserializer=_identity)
        response: bytes = await method(request, timeout=5)
        return response


async def _refused(channel: grpc.aio.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _call(channel)
    code: grpc.StatusCode = info.value.code()
    return code


def _credentials(pki: Pki, client: tls.Issued | None) -> grpc.ChannelCredentials:
    root = pki.ca.cert.read_bytes()
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=root)
    return grpc.ssl_channel_credentials(root, client.key.read_bytes(), client.cert.read_bytes())


# ------------------------------------------------------------------------------------------ who gets in
async def test_a_caller_with_a_client_certificate_from_the_ca_is_served(pki: Pki, served: Served) -> None:
    channel = grpc_client.channel(f"127.0.0.1:{served.port}", pki.client_settings())

    assert await _call(channel, b"over tls") == b"echo:over tls"
    assert served.echo.calls == [b"over tls"]


async def test_a_caller_without_a_client_certificate_is_refused(pki: Pki, served: Served) -> None:
    channel = grpc.aio.secure_channel(f"127.0.0.1:{served.port}", _credentials(pki, None))

    assert await _refused(channel) == grpc.StatusCode.UNAVAILABLE
    assert served.echo.calls == []


async def test_a_caller_with_a_certificate_from_another_ca_is_refused(pki: Pki, served: Served) -> None:
    # It trusts the right CA, so only the server's check of the client certificate can refuse it.
    channel = grpc.aio.secure_channel(f"127.0.0.1:{served.port}", _credentials(pki, pki.stranger))

    assert await _refused(channel) == grpc.StatusCode.UNAVAILABLE
    assert served.echo.calls == []


async def test_a_plaintext_caller_is_refused(served: Served) -> None:
    channel = grpc_client.insecure_channel(f"127.0.0.1:{served.port}")

    assert await _refused(channel) == grpc.StatusCode.UNAVAILABLE
    assert served.echo.calls == []


async def test_a_server_certificate_cannot_be_used_to_call_another_server(pki: Pki, served: Served) -> None:
    # A participant's own key is no ticket to its peers: its certificate is for serverAuth only.
    channel = grpc.aio.secure_channel(f"127.0.0.1:{served.port}", _credentials(pki, pki.other_server))

    assert await _refused(channel) == grpc.StatusCode.UNAVAILABLE
    assert served.echo.calls == []


async def test_the_client_refuses_a_server_whose_certificate_another_ca_signed(pki: Pki) -> None:
    impostor = pki.stranger_server
    server, served = await _serve(TlsSettings(cert_file=impostor.cert, key_file=impostor.key, ca_file=pki.ca.cert))
    try:
        channel = grpc_client.channel(f"127.0.0.1:{served.port}", pki.client_settings())
        assert await _refused(channel) == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)
    assert served.echo.calls == []


async def test_the_server_name_override_checks_the_service_name_instead_of_the_host(pki: Pki) -> None:
    server, served = await _serve(pki.server_settings(pki.named))
    target = f"127.0.0.1:{served.port}"
    try:
        assert await _refused(grpc_client.channel(target, pki.client_settings())) == grpc.StatusCode.UNAVAILABLE
        wrong = pki.client_settings(server_name="{service}")
        assert await _refused(grpc_client.channel(target, wrong, "payment")) == grpc.StatusCode.UNAVAILABLE
        named = pki.client_settings(server_name="{service}")
        assert await _call(grpc_client.channel(target, named, "order")) == b"echo:hi"
    finally:
        await server.stop(0)
    assert served.echo.calls == [b"hi"]


async def test_without_certificates_the_channel_and_the_server_speak_plaintext() -> None:
    server, served = await _serve(TlsSettings())
    try:
        assert await _call(grpc_client.channel(f"127.0.0.1:{served.port}", ClientTlsSettings())) == b"echo:hi"
    finally:
        await server.stop(0)


# ------------------------------------------------------------------------------------ what is exposed
async def _list_services(port: int, credentials: grpc.ChannelCredentials) -> set[str]:
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        responses = [r async for r in stub.ServerReflectionInfo(iter([request]), timeout=5)]
    return {service.name for service in responses[0].list_services_response.service}


async def test_reflection_is_off_unless_asked_for(pki: Pki, served: Served) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _list_services(served.port, _credentials(pki, pki.client))

    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_reflection_when_asked_for_answers_only_through_mutual_tls(pki: Pki) -> None:
    server, served = await _serve(pki.server_settings(), reflection=True)
    try:
        names = await _list_services(served.port, _credentials(pki, pki.client))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _list_services(served.port, _credentials(pki, None))
    finally:
        await server.stop(0)

    assert SERVICE in names
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


class _Log:
    """Stands in for the server module's logger: the warning at start is the behaviour under test."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def info(self, event: str, **_: Any) -> None:
        pass

    def warning(self, event: str, **_: Any) -> None:
        self.warnings.append(event)


@pytest.mark.parametrize(
    ("host", "secure", "warned"),
    [("0.0.0.0", False, True), ("127.0.0.1", False, False), ("0.0.0.0", True, False)],  # noqa: S104
)
async def test_a_plaintext_server_on_a_reachable_interface_warns_at_start(
    pki: Pki, monkeypatch: pytest.MonkeyPatch, host: str, secure: bool, warned: bool
) -> None:
    log = _Log()
    monkeypatch.setattr(grpc_server, "log", log)
    server = grpc_server.GrpcServer(host=host, port=0, tls=pki.server_settings() if secure else None)
    await server.start()
    await server.stop(0)

    assert any("PLAINTEXT" in w for w in log.warnings) is warned


# ------------------------------------------------------------------------------- files and settings
async def test_an_unreadable_certificate_file_stops_the_start_and_names_the_file(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "gone.key"
    server = grpc_server.GrpcServer(
        host="127.0.0.1", tls=TlsSettings(cert_file=pki.server.cert, key_file=missing, ca_file=pki.ca.cert)
    )

    with pytest.raises(ConfigError, match=r"gone\.key"):
        await server.start()
    await server.stop(0)


def test_private_keys_are_readable_by_their_owner_only_and_certificates_by_all(pki: Pki) -> None:
    for issued in (pki.ca, pki.server, pki.client):
        assert stat.S_IMODE(issued.key.stat().st_mode) == 0o600
        assert stat.S_IMODE(issued.cert.stat().st_mode) == 0o644
        assert issued.key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
