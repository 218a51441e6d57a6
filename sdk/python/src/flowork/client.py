"""The public API of a Flowork gateway as seen by a user: enqueue jobs, read them, wait for them, cancel them.

``AsyncClient`` is the implementation; ``Client`` is the same methods for synchronous code, run on a private
event loop in a background thread (so it also works where a loop is already running, as in a notebook).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Coroutine, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

import httpx

from ._http import USER_AGENT, full_jitter_delay, is_transient, refusal, verify_option
from .errors import ApiError, ConflictError, TransportError, WaitTimeout

Job = dict[str, Any]
"""A job as the gateway returns it: ``id``, ``engine``, ``kind``, ``status``, ``payload``, ``attempts``,
``result``, ``error``, ``progress``, ... (see the README's API section)."""

BatchResults = list[dict[str, Any]]
"""One result per item of ``enqueue_batch``, in order."""

FINAL_STATUSES = frozenset({"succeeded", "dead", "cancelled"})

T = TypeVar("T")


def _rfc3339(value: datetime | str) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _statuses(status: str | Sequence[str] | None) -> str | None:
    """States as the gateway takes them: comma-separated."""
    if status is None or isinstance(status, str):
        return status
    return ",".join(status)


def _filter_fields(
    status: str | Sequence[str] | None,
    engine: str | None,
    kind: str | None,
    after: datetime | str | None,
    before: datetime | str | None,
    id_prefix: str | None,
) -> dict[str, Any]:
    """The job filter of ``list`` and ``bulk`` as the gateway takes it (unset fields ``None``)."""
    return {
        "status": _statuses(status),
        "engine": engine,
        "kind": kind,
        "after": None if after is None else _rfc3339(after),
        "before": None if before is None else _rfc3339(before),
        "id_prefix": id_prefix,
    }


def _job_body(
    engine: str,
    kind: str,
    payload: Any,
    *,
    priority: int | None,
    run_at: datetime | str | None,
    max_attempts: int | None,
    timeout_ms: int | None,
    concurrency_key: str | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"engine": engine, "kind": kind}
    optional = {
        "payload": payload,
        "priority": priority,
        "run_at": None if run_at is None else _rfc3339(run_at),
        "max_attempts": max_attempts,
        "timeout_ms": timeout_ms,
        "concurrency_key": concurrency_key,
    }
    body.update({name: value for name, value in optional.items() if value is not None})
    return body


class AsyncClient:
    """A user's session with the gateway's public API, authenticated by an access token (``token mint``, the
    sign-in, or an API key).

    Calls that are safe to repeat (reads, and enqueues, which always carry an Idempotency-Key) are retried on
    network trouble, 429 and 503 (and on 409 when the gateway says when to retry) by their Retry-After, with
    jittered backoff, until ``retry_deadline`` seconds have passed; then the last error is raised.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        retry_deadline: float = 30.0,
        ca_file: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry_deadline = retry_deadline
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT},
            timeout=timeout,
            verify=verify_option(ca_file),
            transport=transport,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        retry: bool = True,
    ) -> httpx.Response:
        deadline = time.monotonic() + self.retry_deadline
        failures = 0
        while True:
            try:
                response = await self._http.request(method, path, json=json, params=params, headers=headers)
                if response.is_success:
                    return response
                error: Exception = refusal(response)
            except httpx.TransportError as exc:
                error = exc
            retryable = is_transient(error) or (isinstance(error, ConflictError) and error.retry_after is not None)
            failures += 1
            delay = full_jitter_delay(failures, 0.2, 5.0)
            if isinstance(error, ApiError) and error.retry_after is not None:
                delay = max(delay, error.retry_after)
            if not retry or not retryable or time.monotonic() + delay > deadline:
                if isinstance(error, httpx.TransportError):
                    raise TransportError(f"cannot reach the gateway at {self.base_url}: {error}") from error
                raise error
            await asyncio.sleep(delay)

    async def enqueue(
        self,
        engine: str,
        kind: str,
        payload: Any = None,
        *,
        idempotency_key: str | None = None,
        priority: int | None = None,
        run_at: datetime | str | None = None,
        max_attempts: int | None = None,
        timeout_ms: int | None = None,
        concurrency_key: str | None = None,
        traceparent: str | None = None,
    ) -> Job:
        """Submits a job for ``engine`` and returns it (``status`` ``queued``). Without ``idempotency_key`` a
        fresh one is made, so the retries of this call can never create a second job; pass your own to make a
        retry of your whole program safe too (the same key returns the same job)."""
        body = _job_body(
            engine,
            kind,
            payload,
            priority=priority,
            run_at=run_at,
            max_attempts=max_attempts,
            timeout_ms=timeout_ms,
            concurrency_key=concurrency_key,
        )
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        if traceparent is not None:
            headers["traceparent"] = traceparent
        response = await self._request("POST", "/jobs", json=body, headers=headers)
        job: Job = response.json()
        return job

    async def enqueue_batch(self, jobs: Sequence[Mapping[str, Any]]) -> BatchResults:
        """Submits up to 1,000 jobs in one call. Each item is a ``POST /jobs`` body (``engine``, ``kind``,
        ``payload``, ...) and may carry ``idempotency_key`` (one is made when it does not). Returns one result
        per item, in order: ``{"status": 201, "job": {...}}`` (200 with ``"replayed": true`` for a replay) or
        ``{"status": 4xx/5xx, "error", "message"}``."""
        items = [dict(job) for job in jobs]
        for item in items:
            item.setdefault("idempotency_key", str(uuid.uuid4()))
            if isinstance(item.get("run_at"), datetime):
                item["run_at"] = _rfc3339(item["run_at"])
        response = await self._request("POST", "/jobs/batch", json={"jobs": items})
        results: BatchResults = response.json()["results"]
        return results

    async def get(self, job_id: str) -> Job:
        """One of your jobs (``NotFoundError`` for a missing one or another user's)."""
        job: Job = (await self._request("GET", f"/jobs/{job_id}")).json()
        return job

    async def list(
        self,
        *,
        status: str | Sequence[str] | None = None,
        engine: str | None = None,
        kind: str | None = None,
        after: datetime | str | None = None,
        before: datetime | str | None = None,
        id_prefix: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """A page of your jobs, newest first: ``{"jobs": [...], "next_cursor": str | None}``; pass
        ``next_cursor`` back as ``cursor`` for the next page. ``status`` may name several states; ``after`` and
        ``before`` bound the enqueue time."""
        params = {
            **_filter_fields(status, engine, kind, after, before, id_prefix),
            "limit": limit,
            "cursor": cursor,
        }
        page: dict[str, Any] = (
            await self._request("GET", "/jobs", params={k: v for k, v in params.items() if v is not None})
        ).json()
        return page

    async def wait(self, job_id: str, timeout: float | None = None, *, poll_interval: float = 0.25) -> Job:
        """Returns the job once it is final (``succeeded``, ``dead`` or ``cancelled``); raises ``WaitTimeout``
        after ``timeout`` seconds (``None``: no limit). Polls, backing off from ``poll_interval`` to 2 s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = poll_interval
        while True:
            job = await self.get(job_id)
            if job.get("status") in FINAL_STATUSES:
                return job
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(f"job {job_id} is still {job.get('status')} after {timeout} s", job)
                interval = min(interval, left)
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, 2.0)

    async def cancel(self, job_id: str) -> Job:
        """Cancels a queued job at once, or asks the engine to stop a running one (its handler sees
        ``ctx.cancelled``); ``ConflictError`` (``not_cancellable``) once the job is final."""
        job: Job = (await self._request("POST", f"/jobs/{job_id}/cancel", retry=False)).json()
        return job

    async def retry(self, job_id: str) -> Job:
        """Puts a ``dead`` or ``cancelled`` job back in the queue now, under the same id, with a fresh budget of
        attempts; ``ConflictError`` (``not_retryable``) for a job in another state."""
        job: Job = (await self._request("POST", f"/jobs/{job_id}/retry", retry=False)).json()
        return job

    async def delete(self, job_id: str) -> None:
        """Deletes a final job with its history; ``ConflictError`` (``job_not_final``) for a queued or running one."""
        await self._request("DELETE", f"/jobs/{job_id}", retry=False)

    async def attempts(self, job_id: str) -> list[dict[str, Any]]:
        """Every attempt of a job, oldest first: ``number``, ``worker``, ``started_at``, ``finished_at``,
        ``outcome`` (``succeeded``, ``failed``, ``timed_out``, ``lease_expired``, ``cancelled``; ``None`` while it
        runs) and ``error``."""
        answer: dict[str, Any] = (await self._request("GET", f"/jobs/{job_id}/attempts")).json()
        return list(answer["attempts"])

    async def counts(self, engine: str | None = None) -> dict[str, int]:
        """How many of your jobs are in each state (on one engine, or all)."""
        params = {} if engine is None else {"engine": engine}
        counts: dict[str, int] = (await self._request("GET", "/jobs/counts", params=params)).json()
        return counts

    async def stats(self, engine: str | None = None, window: str = "1h") -> dict[str, Any]:
        """Your jobs per minute over ``window`` (``1m`` to ``24h``), on one engine or all: ``buckets`` (oldest
        first, each with ``start``, ``enqueued``, ``succeeded``, ``failed``, ``dead``, ``queue_ms`` and ``run_ms``
        as ``{"p50", "p95"}``) and ``totals``."""
        params = {"window": window} if engine is None else {"engine": engine, "window": window}
        stats: dict[str, Any] = (await self._request("GET", "/jobs/stats", params=params)).json()
        return stats

    async def bulk(
        self,
        action: str,
        *,
        ids: Sequence[str] | None = None,
        status: str | Sequence[str] | None = None,
        engine: str | None = None,
        kind: str | None = None,
        after: datetime | str | None = None,
        before: datetime | str | None = None,
        id_prefix: str | None = None,
    ) -> dict[str, int]:
        """``retry``, ``cancel`` or ``delete`` many of your jobs: the ``ids`` given (at most 1,000), or every job
        the filter selects. Returns ``{"matched", "changed"}``."""
        body: dict[str, Any] = {"action": action}
        if ids is not None:
            body["ids"] = list(ids)
        else:
            fields = _filter_fields(status, engine, kind, after, before, id_prefix)
            body["filter"] = {k: v for k, v in fields.items() if v is not None}
        answer: dict[str, int] = (await self._request("POST", "/jobs/bulk", json=body, retry=False)).json()
        return answer


class _LoopThread:
    """An event loop in a daemon thread, to run the async client's coroutines from synchronous code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="flowork-client", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class Client:
    """``AsyncClient`` for synchronous code: the same methods, blocking. Close it (or use ``with``) when done."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        retry_deadline: float = 30.0,
        ca_file: str | None = None,
    ) -> None:
        self._loop = _LoopThread()
        self._closed = False

        async def build() -> AsyncClient:
            return AsyncClient(base_url, token, timeout=timeout, retry_deadline=retry_deadline, ca_file=ca_file)

        self._async = self._loop.run(build())

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.run(self._async.aclose())
        self._loop.stop()

    def enqueue(
        self,
        engine: str,
        kind: str,
        payload: Any = None,
        *,
        idempotency_key: str | None = None,
        priority: int | None = None,
        run_at: datetime | str | None = None,
        max_attempts: int | None = None,
        timeout_ms: int | None = None,
        concurrency_key: str | None = None,
        traceparent: str | None = None,
    ) -> Job:
        """See ``AsyncClient.enqueue``."""
        return self._loop.run(
            self._async.enqueue(
                engine,
                kind,
                payload,
                idempotency_key=idempotency_key,
                priority=priority,
                run_at=run_at,
                max_attempts=max_attempts,
                timeout_ms=timeout_ms,
                concurrency_key=concurrency_key,
                traceparent=traceparent,
            )
        )

    def enqueue_batch(self, jobs: Sequence[Mapping[str, Any]]) -> BatchResults:
        """See ``AsyncClient.enqueue_batch``."""
        return self._loop.run(self._async.enqueue_batch(jobs))

    def get(self, job_id: str) -> Job:
        """See ``AsyncClient.get``."""
        return self._loop.run(self._async.get(job_id))

    def list(self, **filters: Any) -> dict[str, Any]:
        """See ``AsyncClient.list`` (the same keyword arguments)."""
        return self._loop.run(self._async.list(**filters))

    def wait(self, job_id: str, timeout: float | None = None, *, poll_interval: float = 0.25) -> Job:
        """See ``AsyncClient.wait``."""
        return self._loop.run(self._async.wait(job_id, timeout, poll_interval=poll_interval))

    def cancel(self, job_id: str) -> Job:
        """See ``AsyncClient.cancel``."""
        return self._loop.run(self._async.cancel(job_id))

    def retry(self, job_id: str) -> Job:
        """See ``AsyncClient.retry``."""
        return self._loop.run(self._async.retry(job_id))

    def delete(self, job_id: str) -> None:
        """See ``AsyncClient.delete``."""
        self._loop.run(self._async.delete(job_id))

    def attempts(self, job_id: str) -> list[dict[str, Any]]:
        """See ``AsyncClient.attempts``."""
        return self._loop.run(self._async.attempts(job_id))

    def counts(self, engine: str | None = None) -> dict[str, int]:
        """See ``AsyncClient.counts``."""
        return self._loop.run(self._async.counts(engine))

    def stats(self, engine: str | None = None, window: str = "1h") -> dict[str, Any]:
        """See ``AsyncClient.stats``."""
        return self._loop.run(self._async.stats(engine, window))

    def bulk(self, action: str, **selection: Any) -> dict[str, int]:
        """See ``AsyncClient.bulk`` (the same keyword arguments)."""
        return self._loop.run(self._async.bulk(action, **selection))
