"""Metrics and the API's documents behind an API key in production; the probes stay open.

`SAGALINE_OPERATOR_ENDPOINTS=authenticated` (compose and Render set it) keeps `/metrics`, `/docs`,
`/openapi.json` and the Swagger assets from anyone without a key, while load balancers keep calling
`/livez` and `/readyz` without credentials.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from orchestrator import bootstrap
from orchestrator.bootstrap import MIGRATIONS_DIR
from services.orchestrator.tests.integration.test_orchestrator_it_api import CLIENT, settings

OPERATOR_PATHS = ["/metrics", "/docs", "/openapi.json", "/static/swagger/swagger-ui.css"]


@pytest.fixture(params=["authenticated", "public"])
async def instance(request: pytest.FixtureRequest, make_database: Any) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    url = await make_database(MIGRATIONS_DIR)
    cfg = settings(url).model_copy(update={"operator_endpoints": request.param})
    running = await bootstrap.start(cfg)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.http_port}", timeout=10) as http:
        yield request.param, http
    await running.stop()


@pytest.mark.parametrize("path", OPERATOR_PATHS)
async def test_operator_paths_need_a_key_only_when_protected(
    instance: tuple[str, httpx.AsyncClient], path: str
) -> None:
    mode, http = instance

    anonymous = await http.get(path)
    with_key = await http.get(path, headers=CLIENT)

    assert with_key.status_code == 200
    if mode == "authenticated":
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        assert "saga_" not in anonymous.text, "nothing of the metrics leaks into the refusal"
    else:
        assert anonymous.status_code == 200


@pytest.mark.parametrize("path", ["/livez", "/health"])
async def test_the_probes_stay_open_either_way(instance: tuple[str, httpx.AsyncClient], path: str) -> None:
    _, http = instance

    assert (await http.get(path)).status_code == 200
