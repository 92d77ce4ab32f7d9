"""The probe ASGI app, called directly: which paths answer, with which status, headers and body."""

import json
from typing import Any

import pytest

from servicekit import health, metrics


class _Readiness:
    def __init__(self, ready: bool) -> None:
        self.ready = ready
        self.calls = 0

    async def __call__(self) -> tuple[bool, dict[str, Any]]:
        self.calls += 1
        return self.ready, {"database": "up" if self.ready else "down"}


async def _get(app: health.ProbeApp, path: str, scope_type: str = "http") -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": scope_type, "path": path}, None, send)
    return sent


def _status_headers_body(sent: list[dict[str, Any]]) -> tuple[int, dict[bytes, bytes], bytes]:
    start, body = sent
    assert start["type"] == "http.response.start"
    assert body["type"] == "http.response.body"
    return start["status"], dict(start["headers"]), body["body"]


@pytest.mark.parametrize("path", ["/livez", "/health"])
async def test_liveness_answers_ok_without_asking_readiness(path: str) -> None:
    readiness = _Readiness(ready=False)

    status, headers, body = _status_headers_body(await _get(health.ProbeApp(readiness), path))

    assert status == 200
    assert json.loads(body) == {"status": "ok"}
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"content-length"] == str(len(body)).encode()
    assert readiness.calls == 0


@pytest.mark.parametrize("path", ["/readyz", "/ready"])
async def test_readiness_is_200_with_detail_when_ready(path: str) -> None:
    status, headers, body = _status_headers_body(await _get(health.ProbeApp(_Readiness(ready=True)), path))

    assert status == 200
    assert json.loads(body) == {"status": "ready", "database": "up"}
    assert b"retry-after" not in headers


@pytest.mark.parametrize("path", ["/readyz", "/ready"])
async def test_readiness_is_503_with_retry_after_when_not_ready(path: str) -> None:
    status, headers, body = _status_headers_body(await _get(health.ProbeApp(_Readiness(ready=False)), path))

    assert status == 503
    assert json.loads(body) == {"status": "not ready", "database": "down"}
    assert headers[b"retry-after"] == b"1"


async def test_metrics_are_prometheus_text_with_the_process_metrics() -> None:
    metrics.GRPC_REQUEST_DURATION.labels("server", "sk.probe.v1.Probe", "Check", "OK").observe(0.003)

    status, headers, body = _status_headers_body(await _get(health.ProbeApp(_Readiness(ready=True)), "/metrics"))

    assert status == 200
    assert headers[b"content-type"].startswith(b"text/plain")
    assert b"# TYPE grpc_request_duration_seconds histogram" in body
    assert b"# TYPE db_query_duration_seconds histogram" in body
    assert (
        b'grpc_request_duration_seconds_count{code="OK",method="Check",role="server",service="sk.probe.v1.Probe"}'
        in body
    )


@pytest.mark.parametrize("path", ["/", "/livez/extra", "/metrics.json", "/admin"])
async def test_other_paths_are_404(path: str) -> None:
    status, _, body = _status_headers_body(await _get(health.ProbeApp(_Readiness(ready=True)), path))

    assert status == 404
    assert json.loads(body) == {"status": "not found"}


async def test_non_http_scopes_get_no_response() -> None:
    assert await _get(health.ProbeApp(_Readiness(ready=True)), "/livez", scope_type="lifespan") == []
