"""The HTTP server's time limits, as configuration: the limits wrap the application and set uvicorn's
keep-alive. What happens when a limit expires is in tests/integration/test_servicekit_http_timeouts_it.py
(it takes real time)."""

from typing import Any

from servicekit import http_server

LIMITS = http_server.Timeouts(read=0.05, write=0.05, keep_alive=7)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Never called: only the server's configuration is looked at."""


def test_the_server_is_built_with_the_limits() -> None:
    server = http_server.HttpServer(app, "127.0.0.1", 0, timeouts=LIMITS)
    assert server._server.config.timeout_keep_alive == 7
    assert isinstance(server._server.config.app, http_server.TimeLimits)
    plain = http_server.HttpServer(app, "127.0.0.1", 0)
    assert plain._server.config.timeout_keep_alive == 5
    assert not isinstance(plain._server.config.app, http_server.TimeLimits)


async def test_read_body_joins_the_chunks_and_is_none_when_the_client_leaves_first() -> None:
    def receiver(messages: list[dict[str, Any]]) -> Any:
        pending = iter(messages)

        async def receive() -> dict[str, Any]:
            return next(pending)

        return receive

    chunks = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "http.request", "body": b"cd"},
    ]
    gone = [{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.disconnect"}]

    assert await http_server.read_body(receiver(chunks)) == b"abcd"
    assert await http_server.read_body(receiver(gone)) is None
