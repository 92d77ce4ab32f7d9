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
