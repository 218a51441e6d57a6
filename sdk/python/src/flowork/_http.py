"""What the client and the worker share about talking to the gateway: reading refusals, Retry-After, backoff."""

from __future__ import annotations

import random
import ssl
from typing import Any

import httpx

from .errors import ApiError, api_error

#: The engine-protocol version header (docs/engine-protocol.md) and the version this SDK speaks.
PROTOCOL_HEADER = "Flowork-Protocol"
PROTOCOL_VERSION = "1.1"

USER_AGENT = "flowork-python/0.1"


def verify_option(ca_file: str | None) -> ssl.SSLContext | bool:
    """``verify`` for httpx: the system trust store, or also a private CA's certificate (a self-signed gateway)."""
    if ca_file is None:
        return True
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=ca_file)
    return context


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds (the gateway sends whole seconds), if present and numeric."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def refusal(response: httpx.Response) -> ApiError:
    """The typed error for a non-2xx answer, with the gateway's ``error`` code when the body has one."""
    code, message = "unknown", response.reason_phrase or ""
    try:
        body: Any = response.json()
        if isinstance(body, dict):
            code = str(body.get("error", code))
            message = str(body.get("message", message))
    except ValueError:
        pass
    return api_error(response.status_code, code, message, retry_after_seconds(response))


def full_jitter_delay(failures: int, base: float, cap: float, unit: float | None = None) -> float:
    """Seconds to wait after ``failures`` failures in a row: uniform in [0, min(cap, base * 2^(failures-1))]
    (AWS "full jitter", as the Rust engine's ``full_jitter_delay_ms``)."""
    ceiling: float = min(cap, base * 2.0 ** (max(0, min(failures, 32) - 1)))
    return ceiling * (random.random() if unit is None else unit)


def is_transient(error: BaseException) -> bool:
    """Worth another try: network trouble, 429, or a server error (a 503 while draining or a store hiccup)."""
    if isinstance(error, httpx.TransportError):
        return True
    return isinstance(error, ApiError) and (error.status == 429 or error.status >= 500)
