"""The saga timeline UI and the Swagger UI in a real browser (Debian's Chromium, headless, via Playwright).

One stack of real processes with auth on (a `client` and an `admin` key) and `on_timeout=fail`, so a
saga past its deadline parks FAILED for an admin. Three sagas are started over the REST API: one that
completes, one whose payment is declined (compensated in reverse), one that fails at its deadline.
Every page is checked for console errors and failed requests. The tests save screenshots to
`.data/screenshots/`; with `SAGALINE_SCREENSHOTS=docs/images` they refresh the ones the docs show.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from sagaline import stack
from tests.e2e.conftest import ALICE, BOB, CAROL, order, running_stack

CLIENT_KEY = f"ui-client-{uuid.uuid4()}"
ADMIN_KEY = f"ui-admin-{uuid.uuid4()}"
ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / os.environ.get("SAGALINE_SCREENSHOTS", ".data/screenshots")
TRACE_URL = "http://127.0.0.1:16686/trace/{trace_id}"
CHROMIUM_HELP = (
    "Chromium is needed for the browser tests and was not found (looked for chromium, chromium-browser, "
    "google-chrome). "
    "Install it with `make tools` (as root on Debian/Ubuntu) or `sudo apt-get install -y chromium chromium-driver`."
)


def chromium_path() -> str:
    # Debian's package first (what `make tools` installs); a Chrome build (CI runner images) drives the same.
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(CHROMIUM_HELP)


@dataclass
class Stack:
    url: str
    sagas: dict[str, dict[str, Any]] = field(default_factory=dict)


async def wait_status(
    client: httpx.AsyncClient, saga_id: str, statuses: set[str], within: float = 30.0
) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            saga: dict[str, Any] = (await client.get(f"/v1/sagas/{saga_id}")).json()
            if saga["status"] in statuses:
                return saga
            await asyncio.sleep(0.05)


async def start(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await client.post("/v1/sagas", json=body, headers={"Idempotency-Key": str(uuid.uuid4())})
    assert response.status_code == 202, response.text
    saga_id: str = response.json()["id"]
    return saga_id


@pytest.fixture(scope="module")
async def system(pg_server: str) -> AsyncIterator[Stack]:
    keys = [
        {"name": "shop", "role": "client", "sha256": hashlib.sha256(CLIENT_KEY.encode()).hexdigest()},
        {"name": "ops", "role": "admin", "sha256": hashlib.sha256(ADMIN_KEY.encode()).hexdigest()},
    ]
    env = {
        "SAGALINE_AUTH": "on",
        "SAGALINE_API_KEYS": json.dumps(keys),
        "SAGALINE_SAGA__ON_TIMEOUT": "fail",
        "SAGALINE_UI__TRACE_URL": TRACE_URL,
    }
    async for supervisor in running_stack(pg_server, env):
        yield await seeded(supervisor)


async def seeded(supervisor: stack.Supervisor) -> Stack:
    url = supervisor.topology.orchestrator_url(0)
    result = Stack(url)
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=url, headers=headers) as client:
        completed = await start(client, order(ALICE))
        declined = await start(client, order(BOB, price="60.00"))
        late = await start(client, {**order(CAROL), "deadline": "1ms"})
        result.sagas["completed"] = await wait_status(client, completed, {"COMPLETED"})
        result.sagas["declined"] = await wait_status(client, declined, {"COMPENSATED"})
        result.sagas["late"] = await wait_status(client, late, {"FAILED"})
    return result


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_path()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, headless=True)
        yield launched
        await launched.close()


@dataclass
class Session:
    context: BrowserContext
    page: Page
    problems: list[str]


async def session(browser: Browser, system: Stack, key: str | None) -> Session:
    """A fresh browser profile (no cookies), signed in with `key` when given; console errors are collected."""
    context = await browser.new_context(base_url=system.url, viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
    if key is not None:
        await page.goto("/ui")
        await expect(page).to_have_url(f"{system.url}/ui/login")
        await page.fill("#key", key)
        await page.click("button[type=submit]")
        await expect(page).to_have_url(f"{system.url}/ui")
    return Session(context, page, problems)


@pytest.fixture
async def client_session(browser: Browser, system: Stack) -> AsyncIterator[Session]:
    signed_in = await session(browser, system, CLIENT_KEY)
    yield signed_in
    await signed_in.context.close()
    assert signed_in.problems == []


@pytest.fixture
async def admin_session(browser: Browser, system: Stack) -> AsyncIterator[Session]:
    signed_in = await session(browser, system, ADMIN_KEY)
    yield signed_in
    await signed_in.context.close()
    assert signed_in.problems == []


def rows(page: Page) -> Any:
    return page.locator("tr.saga-row")


async def test_the_list_shows_every_saga_and_live_counts(client_session: Session, system: Stack) -> None:
    page = client_session.page
    await expect(rows(page)).to_have_count(3)
    for saga in system.sagas.values():
        await expect(page.locator(f"a[href='/ui/sagas/{saga['id']}']")).to_be_visible()
    await expect(page.locator(".n[data-status=COMPLETED]")).to_have_text("1")
    await expect(page.locator(".n[data-status=COMPENSATED]")).to_have_text("1")
    await expect(page.locator(".n[data-status=FAILED]")).to_have_text("1")
    IMAGES.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(IMAGES / "ui-sagas.png"), full_page=True)
    # The counts are live: one more saga completes and the open page's count follows without a reload.
    async with httpx.AsyncClient(base_url=system.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as api:
        await wait_status(api, await start(api, order(ALICE)), {"COMPLETED"})
    await expect(page.locator(".n[data-status=COMPLETED]")).to_have_text("2", timeout=10_000)
    await expect(rows(page)).to_have_count(3)


async def test_the_list_filters_by_status_type_age_and_error_text(client_session: Session, system: Stack) -> None:
    page = client_session.page
    await page.select_option("select[name=status]", "COMPENSATED")
    await page.click(".filters button[type=submit]")
    await expect(rows(page)).to_have_count(1)
    await expect(rows(page).first).to_contain_text(system.sagas["declined"]["id"])
    await expect(rows(page).first).to_contain_text("rolled back")

    await page.goto("/ui")
    await page.fill("input[name=error]", "DEADLINE")
    await page.select_option("select[name=age]", "1h")
    await page.select_option("select[name=saga_type]", "order_saga")
    await page.click(".filters button[type=submit]")
    await expect(rows(page)).to_have_count(1)
    await expect(rows(page).first).to_contain_text(system.sagas["late"]["id"])
    await expect(rows(page).first).to_contain_text("rollback incomplete: order")

    await page.select_option("select[name=age]", "older-1h")
    await page.click(".filters button[type=submit]")
    await expect(page.locator("td.empty")).to_have_text("No sagas match these filters.")


async def test_a_compensated_saga_shows_its_path_back_in_reverse(client_session: Session, system: Stack) -> None:
    page = client_session.page
    saga = system.sagas["declined"]
    await page.click(f"a[href='/ui/sagas/{saga['id']}']")
    await expect(page.locator("#badge")).to_have_text("rolled back")
    forward = page.locator(".path.forward > li")
    await expect(forward).to_have_count(4)
    await expect(page.locator(".path.forward li[data-step=process_payment]")).to_contain_text("FAILED_PRECONDITION")
    # The declined payment is undone first (its tombstone), then the order: the reverse of the forward path.
    backward = page.locator("#compensation > li")
    assert await backward.evaluate_all("items => items.map(i => i.dataset.step)") == [
        "process_payment",
        "create_order",
    ]
    await expect(backward.nth(1)).to_contain_text("compensated")
    await expect(page.locator(".path.forward li[data-step=reserve_inventory]")).to_contain_text("not run")
    trace = page.locator(".facts a[target=_blank]")
    await expect(trace).to_have_attribute("href", TRACE_URL.replace("{trace_id}", saga["trace_id"]))
    await expect(page.locator("details pre").first).to_contain_text(BOB)
    await page.screenshot(path=str(IMAGES / "ui-saga-timeline.png"), full_page=True)


async def test_a_client_key_reads_but_cannot_act(client_session: Session, system: Stack) -> None:
    page = client_session.page
    late = system.sagas["late"]
    await page.goto(f"/ui/sagas/{late['id']}")
    await expect(page.locator("#status")).to_have_text("FAILED")
    await expect(page.locator("button.action")).to_have_count(0)
    # Even with a valid CSRF token (from the sign-out form), the action is refused for the client role.
    token = await page.locator("input[name=csrf]").first.input_value()
    refused = await page.request.post(f"/ui/sagas/{late['id']}/retry", form={"csrf": token})
    assert refused.status == 403
    async with httpx.AsyncClient(base_url=system.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as api:
        assert (await api.get(f"/v1/sagas/{late['id']}")).json()["status"] == "FAILED"


async def test_an_admin_retries_a_failed_saga_from_its_page(admin_session: Session, system: Stack) -> None:
    page = admin_session.page
    late = system.sagas["late"]
    await page.goto(f"/ui/sagas/{late['id']}")
    await expect(page.locator("#badge")).to_contain_text("rollback incomplete: order")
    # A forged form without the session's CSRF token is refused and changes nothing.
    forged = await page.request.post(f"/ui/sagas/{late['id']}/retry", form={"csrf": "forged"})
    assert forged.status == 403
    retry = page.locator("form[action$='/retry']")
    await expect(retry.locator("button.action.retry")).to_be_visible()
    await retry.locator("input[name=reason]").fill("order service is back")
    await retry.locator("button.action.retry").click()
    await expect(page.locator("#badge")).to_have_text("rolled back", timeout=20_000)
    async with httpx.AsyncClient(base_url=system.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as api:
        saga = (await api.get(f"/v1/sagas/{late['id']}")).json()
    assert saga["status"] == "COMPENSATED"
    actions = [e["detail"] for e in saga["events"] if e["kind"] == "operator_action"]
    assert actions == [{"action": "retry", "by": "ops", "role": "admin", "reason": "order service is back"}]
    await expect(page.locator("#compensation li[data-step=create_order]")).to_contain_text("compensated")


async def test_the_ui_needs_a_known_key(browser: Browser, system: Stack) -> None:
    anonymous = await session(browser, system, None)
    page = anonymous.page
    try:
        answer = await page.goto("/ui")
        assert answer is not None
        await expect(page).to_have_url(f"{system.url}/ui/login")
        await page.fill("#key", "not-a-key")
        await page.click("button[type=submit]")
        await expect(page.locator(".notice")).to_have_text("Unknown API key.")
        # The cookie is honoured on /ui only: the REST API still wants the Bearer header.
        await page.context.add_cookies([{"name": "sagaline_ui_key", "value": CLIENT_KEY, "url": system.url}])
        assert (await page.request.get("/v1/sagas")).status == 401
        assert (await page.request.get("/ui")).status == 200
    finally:
        await anonymous.context.close()
    # The only console error is the 401 of the failed sign-in, which the page then explains.
    assert [p for p in anonymous.problems if "401" not in p] == []


async def test_swagger_ui_renders_the_document_and_tries_a_request(browser: Browser, system: Stack) -> None:
    docs = await session(browser, system, None)
    page = docs.page
    try:
        await page.goto("/swagger")
        await expect(page).to_have_url(f"{system.url}/docs")
        await expect(page.locator(".swagger-ui .info .title")).to_contain_text("Sagaline")
        await expect(page.locator(".opblock").first).to_be_visible()
        await expect(page.locator(".info .version-stamp")).to_contain_text("OAS 3.1")
        assert await page.get_by_text("Unable to render this definition").count() == 0
        await page.screenshot(path=str(IMAGES / "swagger-ui.png"))
        await page.click(".auth-wrapper .authorize")
        await page.locator(".auth-container input[type=text]").fill(CLIENT_KEY)
        await page.click(".auth-btn-wrapper button.authorize")
        await page.click("button.btn-done")
        operation = page.locator("#operations-default-listSagas, [id$='-listSagas']").first
        await operation.locator(".opblock-summary").click()
        await operation.locator("button.try-out__btn").click()
        await operation.locator("button.execute").click()
        status = operation.locator(".live-responses-table tr.response .response-col_status")
        await expect(status).to_have_text("200")
    finally:
        await docs.context.close()
    assert docs.problems == []
