"""Errors the hub answers a peer with: each carries the gRPC status code the server sends."""

from __future__ import annotations

from slm.errors import SLMError


class StatusError(SLMError):
    """A refused request; `status` names the grpc.StatusCode, the message says why and what to
    do. Plain classes raise it; only the servicers turn it into a gRPC status."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
