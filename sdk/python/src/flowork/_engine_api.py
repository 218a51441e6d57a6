"""The gateway's engine protocol (``/internal/*``, docs/engine-protocol.md) as calls, for the worker."""

from __future__ import annotations

from typing import Any

import httpx

from ._http import PROTOCOL_HEADER, PROTOCOL_VERSION, USER_AGENT, refusal, verify_option
from .errors import ApiError


def is_lease_lost(error: BaseException) -> bool:
    """The lease is gone (lapsed and given to another worker, or the job was deleted): drop the job."""
    return isinstance(error, ApiError) and error.code in ("lease_lost", "job_not_found")


class EngineApi:
    """Calls the gateway on behalf of one engine, over one pooled connection set."""

    def __init__(self, gateway: str, token: str, *, ca_file: str | None, max_connections: int) -> None:
        self._http = httpx.AsyncClient(
            base_url=gateway.rstrip("/"),
            headers={"X-Engine-Token": token, PROTOCOL_HEADER: PROTOCOL_VERSION, "User-Agent": USER_AGENT},
            verify=verify_option(ca_file),
            timeout=httpx.Timeout(15.0, connect=5.0),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        timeout: float | None = None,
        traceparent: str | None = None,
    ) -> Any:
        headers = {"traceparent": traceparent} if traceparent else None
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        response = await self._http.request(method, path, json=body, headers=headers, **extra)
        if response.is_success:
            return response.json()
        raise refusal(response)

    async def whoami(self) -> str:
        answer = await self._call("GET", "/internal/whoami")
        return str(answer["engine_id"])

    async def claim(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        # The gateway holds the call up to wait_ms; give the answer time beyond that.
        timeout = request["wait_ms"] / 1000 + 15.0
        answer = await self._call("POST", "/internal/claim", request, timeout=timeout)
        leases: list[dict[str, Any]] = answer["leases"]
        return leases

    async def heartbeat(self, job_id: str, request: dict[str, Any], traceparent: str | None) -> dict[str, Any]:
        answer: dict[str, Any] = await self._call(
            "POST", f"/internal/jobs/{job_id}/heartbeat", request, timeout=10.0, traceparent=traceparent
        )
        return answer

    async def finish(self, job_id: str, report: dict[str, Any], traceparent: str | None) -> dict[str, Any]:
        answer: dict[str, Any] = await self._call(
            "POST", f"/internal/jobs/{job_id}/finish", report, traceparent=traceparent
        )
        return answer

    async def finish_many(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        answer = await self._call("POST", "/internal/finish", {"finishes": items})
        results: list[dict[str, Any]] = answer["results"]
        return results
