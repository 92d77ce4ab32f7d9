"""`sagaline.client` against scripted servers (httpx's MockTransport): keys, retries, typed errors, waiting.

The end-to-end behaviour against a real stack is `tests/e2e/test_e2e_queue.py`; here each answer the
server gives is chosen, so the retry rules can be pinned exactly (which requests repeat, with which key,
after how long) without sleeping.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from sagaline import client as sagaline

SAGA_ID = "7b0f4a8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
PAYLOAD = {"customer_id": "11111111-1111-4111-8111-111111111111", "items": [{"sku": "S", "quantity": 1,
           "unit_price": "1.00"}]}  # fmt: skip
Answer = httpx.Response | Exception


def saga(status: str = "EXECUTING") -> dict[str, Any]:
    return {"id": SAGA_ID, "status": status}


def problem(status: int, slug: str, **extra: Any) -> httpx.Response:
    body = {"type": f"https://sagaline.dev/problems/{slug}", "title": slug, "status": status, "detail": slug, **extra}
    headers = {"Retry-After": "1"} if status == 503 else {}
    return httpx.Response(status, json=body, headers={"Content-Type": "application/problem+json", **headers})


class Server:
    """Answers requests from a script, in order, and keeps every request it received."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.append(seconds)


def client(server: Server, sleeps: Sleeps, **kw: Any) -> sagaline.Client:
    return sagaline.Client("http://sagaline.test", api_key="k", transport=httpx.MockTransport(server), sleep=sleeps,
                           rand=lambda: 0.5, **kw)  # fmt: skip


def connect_error() -> httpx.ConnectError:
    return httpx.ConnectError("connection refused")


def test_a_start_sends_one_idempotency_key_and_repeats_it_on_every_retry() -> None:
    server = Server(problem(503, "database-unavailable"), httpx.ReadTimeout("no answer"), connect_error(),
                    httpx.Response(202, json=saga()))  # fmt: skip
    sleeps = Sleeps()

    started = client(server, sleeps).start("order_saga", PAYLOAD)

    assert started == saga()
    keys = {r.headers["Idempotency-Key"] for r in server.requests}
    assert len(server.requests) == 4
    assert len(keys) == 1, "a retried start must name the same saga"
    assert server.requests[0].headers["Authorization"] == "Bearer k"
    assert sleeps == [1.0, 0.4, 0.8], "Retry-After is honoured; otherwise exponential backoff"


def test_a_given_key_is_sent_as_given() -> None:
    server = Server(httpx.Response(200, json=saga()))
    client(server, Sleeps()).start("order_saga", PAYLOAD, idempotency_key="order-42", deadline="30s")
    assert server.requests[0].headers["Idempotency-Key"] == "order-42"
    assert b'"deadline":"30s"' in server.requests[0].content.replace(b" ", b"")


def test_retries_end_with_the_last_answer_as_a_typed_error() -> None:
    server = Server(*[problem(503, "database-unavailable")] * 3)
    with pytest.raises(sagaline.Unavailable) as raised:
        client(server, Sleeps(), retry=sagaline.RetryPolicy(attempts=3)).get(SAGA_ID)
    assert (raised.value.status, len(server.requests)) == (503, 3)

    unreachable = Server(*[connect_error()] * 2)
    with pytest.raises(sagaline.TransportError):
        client(unreachable, Sleeps(), retry=sagaline.RetryPolicy(attempts=2)).get(SAGA_ID)


def test_an_action_is_not_repeated_when_its_request_may_have_arrived() -> None:
    server = Server(httpx.ReadTimeout("no answer"), httpx.Response(200, json=saga("FAILED")))
    with pytest.raises(sagaline.TransportError):
        client(server, Sleeps()).resolve(SAGA_ID, "handled")
    assert len(server.requests) == 1, "a resolve that may have landed is not sent twice"

    refused_connection = Server(connect_error(), httpx.Response(200, json=saga("FAILED")))
    assert client(refused_connection, Sleeps()).resolve(SAGA_ID, "handled")["status"] == "FAILED"


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        (problem(422, "invalid-payload", errors=["payload.items: must be a list"]), sagaline.InvalidPayload),
        (problem(422, "idempotency-key-reused"), sagaline.IdempotencyKeyReused),
        (problem(422, "unknown-saga-type"), sagaline.UnknownSagaType),
        (problem(422, "invalid-request"), sagaline.InvalidRequest),
        (problem(404, "saga-not-found"), sagaline.SagaNotFound),
        (problem(409, "point-of-no-return"), sagaline.PointOfNoReturn),
        (problem(409, "state-conflict"), sagaline.Conflict),
        (problem(403, "forbidden"), sagaline.Forbidden),
        (problem(401, "unauthenticated"), sagaline.Unauthenticated),
        (problem(400, "malformed-json"), sagaline.BadRequest),
        (httpx.Response(418, text="teapot"), sagaline.ProblemError),
    ],
)
def test_problem_documents_become_typed_errors(answer: httpx.Response, kind: type[sagaline.ProblemError]) -> None:
    with pytest.raises(kind) as raised:
        client(Server(answer), Sleeps()).start("order_saga", PAYLOAD)
    assert type(raised.value) is kind
    assert raised.value.status == answer.status_code
    if kind is sagaline.InvalidPayload:
        assert raised.value.errors == ["payload.items: must be a list"]
    assert issubclass(sagaline.PointOfNoReturn, sagaline.Conflict)


def test_run_waits_for_a_terminal_state_and_wait_gives_up_in_time() -> None:
    server = Server(httpx.Response(202, json=saga()), httpx.Response(200, json=saga("EXECUTING")),
                    httpx.Response(200, json=saga("COMPENSATED")))  # fmt: skip
    sleeps = Sleeps()
    assert client(server, sleeps).run("order_saga", PAYLOAD)["status"] == "COMPENSATED"
    assert sleeps == [0.2]

    with pytest.raises(sagaline.WaitTimeout) as raised:
        client(Server(httpx.Response(200, json=saga())), Sleeps()).wait(SAGA_ID, within=0)
    assert raised.value.saga["status"] == "EXECUTING"


def test_a_retry_after_date_is_honoured_and_bounded() -> None:
    policy = sagaline.RetryPolicy(max_retry_after=3)
    dated = httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"})
    assert policy.delay(1, dated, 0.5) == 3
    assert policy.delay(1, httpx.Response(503, headers={"Retry-After": "2"}), 0.5) == 2
    assert policy.delay(3, None, 0.5) == pytest.approx(0.8)
    assert 0.64 <= policy.delay(3, None, 0.0) <= policy.delay(3, None, 0.999) <= 0.96


async def test_the_async_client_reuses_its_key_across_retries_and_raises_typed_errors() -> None:
    server = Server(connect_error(), problem(503, "database-unavailable"), httpx.Response(202, json=saga()))
    sleeps = Sleeps()
    make: Callable[[Server], sagaline.AsyncClient] = lambda s: sagaline.AsyncClient(  # noqa: E731
        "http://sagaline.test", transport=httpx.MockTransport(s), sleep=sleeps.asleep, rand=lambda: 0.5
    )
    async with make(server) as api:
        assert (await api.start("order_saga", PAYLOAD))["id"] == SAGA_ID
    assert len({r.headers["Idempotency-Key"] for r in server.requests}) == 1
    assert len(server.requests) == 3
    assert sleeps == [0.2, 1.0]

    async with make(Server(problem(409, "point-of-no-return"))) as api:
        with pytest.raises(sagaline.PointOfNoReturn):
            await api.compensate(SAGA_ID, "undo")
