"""Reporting outcomes in batches, as the Rust engine does: what finishes while one report is in flight goes out
together in the next ``POST /internal/finish``; a lone outcome goes through ``POST /internal/jobs/{id}/finish``
with the job's traceparent; a gateway without the batch route gets one call per job."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from ._engine_api import EngineApi
from ._http import is_transient
from .errors import ApiError

log = logging.getLogger("flowork.worker")

T = TypeVar("T")

#: The most outcomes in one call, and the tries of one call when the gateway is away or briefly unavailable.
MAX_BATCH = 256
ATTEMPTS = 5


@dataclass
class _Pending:
    job_id: str
    report: dict[str, Any]
    traceparent: str | None
    reply: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Finisher:
    """The reporting task. ``report`` returns once the gateway took the outcome, and raises ``ApiError`` when it
    refused it (``lease_lost``: the job is no longer this worker's) or could not be reached after a few tries."""

    def __init__(self, api: EngineApi) -> None:
        self._api = api
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._batches_supported = True
        self._task = asyncio.create_task(self._run(), name="flowork-finisher")

    async def report(self, job_id: str, report: dict[str, Any], traceparent: str | None) -> None:
        pending = _Pending(job_id, report, traceparent)
        self._queue.put_nowait(pending)
        await pending.reply

    async def aclose(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            if self._batches_supported and len(batch) > 1:
                items = [{"job_id": p.job_id, "report": p.report} for p in batch]
                try:
                    results = await _with_retries(self._api.finish_many, items)
                except ApiError as error:
                    if error.status in (404, 405) and error.code != "job_not_found":
                        log.info("the gateway has no batch finish; reporting one job per call")
                        self._batches_supported = False
                    else:
                        _fail_all(batch, error)
                        continue
                except Exception as error:  # unreachable after the retries
                    _fail_all(batch, error)
                    continue
                else:
                    by_id = {r.get("job_id"): r for r in results}
                    for pending in batch:
                        _settle_from_item(pending, by_id.get(pending.job_id))
                    continue
            for pending in batch:
                try:
                    await _with_retries(self._api.finish, pending.job_id, pending.report, pending.traceparent)
                except Exception as error:
                    _settle(pending, error)
                else:
                    _settle(pending, None)


async def _with_retries(call: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``call(*args)``, tried again after network trouble, 429 or 5xx, up to ``ATTEMPTS`` times."""
    delay = 0.1
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return await call(*args)
        except (ApiError, httpx.TransportError) as error:
            if not is_transient(error) or attempt == ATTEMPTS:
                raise
            log.warning("finish failed (%s); retrying", error)
            await asyncio.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def _settle(pending: _Pending, error: BaseException | None) -> None:
    if pending.reply.done():
        return
    if error is None:
        pending.reply.set_result(None)
    else:
        pending.reply.set_exception(error)


def _fail_all(batch: list[_Pending], error: BaseException) -> None:
    log.warning("could not report %d outcomes (%s); their leases will lapse and the jobs run again", len(batch), error)
    for pending in batch:
        _settle(pending, error)


def _settle_from_item(pending: _Pending, result: dict[str, Any] | None) -> None:
    if result is None:
        _settle(pending, ApiError(502, "missing_result", "the gateway's answer had no result for this job"))
    elif result.get("error"):
        _settle(pending, ApiError(409, str(result["error"]), str(result.get("message", ""))))
    else:
        _settle(pending, None)
