"""Test doubles the services share: a stand-in for grpc.aio's servicer context.

A service's unit tests call its gRPC adapter's methods directly, with `Context()` as the context; a
status the adapter aborts with surfaces as `Aborted` (code and details), as grpc.aio ends the RPC.
"""

from typing import NoReturn

import grpc


class Aborted(Exception):
    """What `context.abort` raises in grpc.aio, standing in for the RPC ending with a status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class Context:
    """The one part of `grpc.aio.ServicerContext` the adapters use: `abort`."""

    async def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        """End the call with this status, as grpc.aio does: by raising."""
        raise Aborted(code, details)
