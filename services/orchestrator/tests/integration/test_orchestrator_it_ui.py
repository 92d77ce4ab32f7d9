"""The saga timeline UI of a real instance on a fresh database: its queries, its sign-in, its CSRF rule.

The browser tests (tests/e2e/test_e2e_browser.py) drive the pages in Chromium; these pin down what a
browser does not show: the UI's new queries against PostgreSQL, the cookie's attributes, that the
cookie is no credential for the REST API, and that a POST without the session's token changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import httpx
import pytest

from orchestrator import bootstrap, definitions, ports
from orchestrator.adapters.postgres import PostgresSagaRepository
from orchestrator.bootstrap import MIGRATIONS_DIR
from orchestrator.config import UiSettings
from orchestrator.domain.model import Saga
from services.orchestrator.tests.integration.test_orchestrator_it_api import order_payload, settings


@dataclass
class Instance:
    http: httpx.AsyncClient
    db: asyncpg.Pool
    repo: PostgresSagaRepository

    async def seed(self, status: str, error: str | None = None, age: timedelta = timedelta(0)) -> str:
        """A saga held by a foreign owner for minutes (the instance's worker leaves it alone), set by SQL."""
        definition = definitions.registry().latest(definitions.ORDER_SAGA)
        assert definition is not None
        now: datetime = await self.db.fetchval("SELECT clock_timestamp()")
        saga = Saga.new(str(uuid.uuid4()), definition, order_payload(), now)
        saga.start(now)
        await self.repo.create(saga, f"seed-{saga.id}", "seed", "test-owner", timedelta(minutes=5))
        await self.db.execute(
            "UPDATE sagas SET status = $2, error = $3, created_at = created_at - $4::interval WHERE id = $1",
            uuid.UUID(saga.id), status, error, age,
        )  # fmt: skip
        return saga.id


@pytest.fixture
async def instance(make_database: object) -> AsyncIterator[Instance]:
    url = await make_database(MIGRATIONS_DIR)  # type: ignore[operator]
    running = await bootstrap.start(settings(url))
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    assert pool is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.http_port}", timeout=10) as http:
        yield Instance(http, pool, PostgresSagaRepository(pool, definitions.registry()))
    await running.stop()
    await pool.close()


async def ids(repo: PostgresSagaRepository, query: ports.SagaQuery) -> set[str]:
    items, _ = await repo.search_view(query, 100, None)
    return {item["id"] for item in items}


async def test_the_ui_search_filters_by_status_type_age_and_error_text(instance: Instance) -> None:
    declined = await instance.seed("COMPENSATED", "process_payment failed: FAILED_PRECONDITION: insufficient funds")
    stuck = await instance.seed("FAILED", "compensation of create_order failed: 100%_done", timedelta(hours=2))
    done = await instance.seed("COMPLETED", age=timedelta(days=2))
    repo = instance.repo

    assert await ids(repo, ports.SagaQuery(status="FAILED")) == {stuck}
    assert await ids(repo, ports.SagaQuery(saga_type="order_saga")) == {declined, stuck, done}
    assert await ids(repo, ports.SagaQuery(saga_type="other_saga")) == set()
    assert await ids(repo, ports.SagaQuery(error_text="INSUFFICIENT")) == {declined}
    # `%` and `_` are plain characters, not patterns.
    assert await ids(repo, ports.SagaQuery(error_text="100%_")) == {stuck}
    assert await ids(repo, ports.SagaQuery(error_text="%")) == {stuck}
    assert await ids(repo, ports.SagaQuery(newer_than=timedelta(hours=1))) == {declined}
    assert await ids(repo, ports.SagaQuery(older_than=timedelta(hours=1))) == {stuck, done}
    assert await ids(repo, ports.SagaQuery(older_than=timedelta(hours=1), newer_than=timedelta(days=1))) == {stuck}
    items, _ = await repo.search_view(ports.SagaQuery(status="FAILED"), 10, None)
    assert [s["name"] for s in items[0]["steps"]] == ["create_order", "process_payment", "reserve_inventory",
                                                      "confirm_order"]  # fmt: skip
    assert await repo.status_counts() == {"COMPENSATED": 1, "FAILED": 1, "COMPLETED": 1}


async def test_the_ui_search_pages_newest_first_with_a_cursor(instance: Instance) -> None:
    seeded = [await instance.seed("COMPLETED", age=timedelta(minutes=n)) for n in range(5)]
    seen, cursor = [], None
    while True:
        items, cursor = await instance.repo.search_view(ports.SagaQuery(status="COMPLETED"), 2, cursor)
        seen += [item["id"] for item in items]
        if cursor is None:
            break
    assert seen == seeded  # each seeded one minute older than the one before


async def test_pages_send_a_browser_without_a_session_to_sign_in(instance: Instance) -> None:
    page = await instance.http.get("/ui")
    assert page.status_code == 303
    assert page.headers["location"] == "/ui/login"
    poll = await instance.http.get("/ui/counts", headers={"HX-Request": "true"})
    assert poll.status_code == 401
    assert poll.headers["hx-redirect"] == "/ui/login"
    # A wrong key in the cookie is no session.
    assert (await instance.http.get("/ui", headers={"Cookie": "sagaline_ui_key=wrong"})).status_code == 303


async def sign_in(http: httpx.AsyncClient, key: str) -> httpx.Response:
    form = await http.get("/ui/login")
    assert form.status_code == 200
    token = http.cookies["sagaline_ui_csrf"]
    return await http.post("/ui/login", data={"csrf": token, "key": key})


async def test_sign_in_keeps_the_key_in_an_http_only_strict_cookie_for_ui_only(instance: Instance) -> None:
    refused = await sign_in(instance.http, "not-a-key")
    assert refused.status_code == 401
    assert "sagaline_ui_key" not in instance.http.cookies

    signed_in = await sign_in(instance.http, "client-key")
    assert signed_in.status_code == 303
    cookie = next(c for c in signed_in.headers.get_list("set-cookie") if c.startswith("sagaline_ui_key="))
    attributes = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/ui"} <= attributes
    assert "secure" not in attributes  # plain http here; over https the cookie is Secure
    assert (await instance.http.get("/ui")).status_code == 200
    # The cookie names the caller on /ui only: the REST API still wants the Bearer header.
    key = instance.http.cookies["sagaline_ui_key"]
    assert (await instance.http.get("/v1/sagas", headers={"Cookie": f"sagaline_ui_key={key}"})).status_code == 401


async def test_a_post_without_the_session_token_changes_nothing(instance: Instance) -> None:
    failed = await instance.seed("FAILED", "compensation of create_order failed: UNAVAILABLE")
    await instance.db.execute("UPDATE sagas SET owner_id = NULL, lease_expires_at = NULL")
    assert (await sign_in(instance.http, "admin-key")).status_code == 303

    forged = await instance.http.post(f"/ui/sagas/{failed}/retry", data={"csrf": "guessed"})
    missing = await instance.http.post(f"/ui/sagas/{failed}/retry", data={})

    assert (forged.status_code, missing.status_code) == (403, 403)
    assert await instance.repo.status(failed) == "FAILED"
    token = instance.http.cookies["sagaline_ui_csrf"]
    retried = await instance.http.post(f"/ui/sagas/{failed}/retry", data={"csrf": token, "reason": "it is back"})
    assert retried.status_code == 303
    assert await instance.repo.status(failed) != "FAILED"


async def test_queue_actions_need_a_reason_and_valid_json_and_are_recorded(instance: Instance) -> None:
    failed = await instance.seed("FAILED", "deadline exceeded")
    await instance.db.execute("UPDATE sagas SET owner_id = NULL, lease_expires_at = NULL")
    assert (await sign_in(instance.http, "admin-key")).status_code == 303
    token = instance.http.cookies["sagaline_ui_csrf"]

    unexplained = await instance.http.post(f"/ui/sagas/{failed}/resolve", data={"csrf": token, "reason": " "})
    not_json = await instance.http.post(
        f"/ui/sagas/{failed}/retry-with-payload", data={"csrf": token, "reason": "fix", "payload": "[1"}
    )
    wrong_step = await instance.http.post(
        f"/ui/sagas/{failed}/skip", data={"csrf": token, "reason": "by hand", "step": "confirm_order", "output": "{}"}
    )
    assert (unexplained.status_code, not_json.status_code, wrong_step.status_code) == (422, 422, 409)
    assert "stuck at create_order" in wrong_step.text
    assert await instance.db.fetchval("SELECT count(*) FROM saga_events WHERE kind = 'operator_action'") == 0

    resolved = await instance.http.post(
        f"/ui/sagas/{failed}/resolve", data={"csrf": token, "reason": "refunded by hand"}
    )
    assert resolved.status_code == 303
    page = await instance.http.get(f"/ui/sagas/{failed}")
    assert "resolved by a: refunded by hand" in page.text
    assert 'action="/ui/sagas/' not in page.text, "a resolved saga offers no more actions"
    detail = await instance.db.fetchval("SELECT detail FROM saga_events WHERE kind = 'operator_action'")
    assert '"reason": "refunded by hand"' in detail
    assert await instance.repo.status(failed) == "FAILED"


async def test_swagger_serves_version_5_assets_and_a_short_link(instance: Instance) -> None:
    redirect = await instance.http.get("/swagger")
    assert redirect.status_code in (307, 308)
    assert redirect.headers["location"] == "/docs"
    docs = await instance.http.get("/docs")
    assert "/static/swagger/swagger-ui-bundle.js" in docs.text
    bundle = await instance.http.get("/static/swagger/swagger-ui-bundle.js")
    assert bundle.status_code == 200
    assert '"5.35.0"' in bundle.text  # 4.x cannot render an OpenAPI 3.1 document


@pytest.mark.parametrize("url", ["ftp://traces/{trace_id}", "http://jaeger/trace/", "{trace_id}"])
def test_a_trace_url_must_be_http_and_name_the_trace_id(url: str) -> None:
    with pytest.raises(ValueError, match="trace_url"):
        UiSettings(trace_url=url)


async def test_with_auth_off_there_is_no_sign_in(make_database: object) -> None:
    url = await make_database(MIGRATIONS_DIR)  # type: ignore[operator]
    running = await bootstrap.start(settings(url, auth="off"))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.http_port}", timeout=10) as http:
            page = await http.get("/ui")
            login = await http.get("/ui/login")
    finally:
        await running.stop()
    assert page.status_code == 200
    assert "auth off: everyone is an admin" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert (login.status_code, login.headers["location"]) == (303, "/ui")
