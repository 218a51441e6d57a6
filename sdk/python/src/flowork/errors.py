"""The exceptions of the SDK: what the gateway refused (with its machine code), and what a handler raises."""

from __future__ import annotations

from typing import Any


class FloworkError(Exception):
    """Base of every error this SDK raises."""


class ApiError(FloworkError):
    """The gateway refused a request: ``status`` is the HTTP status, ``code`` the ``error`` field of its JSON
    body (``queue_full``, ``lease_lost``, ...), ``message`` its explanation for humans."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        #: Seconds the gateway asked to wait before another try (the ``Retry-After`` header), if it said.
        self.retry_after = retry_after


class AuthenticationError(ApiError):
    """401: the token is missing, expired, revoked or wrong; retrying with it cannot help."""


class PermissionDeniedError(ApiError):
    """403: authenticated, but not allowed (not on the engine's whitelist, an address the gateway refuses)."""


class NotFoundError(ApiError):
    """404: no such job (another user's job is not found either), engine or route."""


class ConflictError(ApiError):
    """409: the state forbids it (a finished job cannot be cancelled; a lease that is no longer this worker's)."""


class RateLimitedError(ApiError):
    """429: a queue cap or a rate limit; ``retry_after`` says when to come back."""


class UnavailableError(ApiError):
    """503: the gateway is draining or its store is briefly unavailable; ``retry_after`` says when to come back."""


class TransportError(FloworkError):
    """The gateway could not be reached (connection refused, reset, timed out) within the retry deadline."""


class WaitTimeout(FloworkError, TimeoutError):
    """``Client.wait`` gave up: the job was not final within the timeout. ``job`` is its last state seen."""

    def __init__(self, message: str, job: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.job = job


class PermanentError(Exception):
    """Raise from a handler when another attempt cannot succeed (a malformed payload, a forbidden request): the
    job ends ``dead`` at once. Any other exception is retryable: the job runs again, with backoff, until its
    ``max_attempts`` are used."""


_BY_STATUS: dict[int, type[ApiError]] = {
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    429: RateLimitedError,
    503: UnavailableError,
}


def api_error(status: int, code: str, message: str, retry_after: float | None = None) -> ApiError:
    """The typed exception for a refusal."""
    return _BY_STATUS.get(status, ApiError)(status, code, message, retry_after)
