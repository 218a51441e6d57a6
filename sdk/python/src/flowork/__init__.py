"""Flowork for Python: ``Client`` submits jobs to a Flowork gateway and waits for them; ``Worker`` runs your own
functions as jobs of an engine, over the engine protocol (docs/engine-protocol.md)."""

from .client import AsyncClient, Client, Job
from .errors import (
    ApiError,
    AuthenticationError,
    ConflictError,
    FloworkError,
    NotFoundError,
    PermanentError,
    PermissionDeniedError,
    RateLimitedError,
    TransportError,
    UnavailableError,
    WaitTimeout,
)
from .worker import JobContext, Worker

__all__ = [
    "ApiError",
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "ConflictError",
    "FloworkError",
    "Job",
    "JobContext",
    "NotFoundError",
    "PermanentError",
    "PermissionDeniedError",
    "RateLimitedError",
    "TransportError",
    "UnavailableError",
    "WaitTimeout",
    "Worker",
]
__version__ = "0.1.0"
