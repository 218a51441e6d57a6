"""A Python worker for the tests, run as its own process: configured by environment variables, with handlers
that block, report progress, watch for cancellation and fail in both ways. Markers are files in MARKER_DIR."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

from flowork import JobContext, PermanentError, Worker

MARKERS = Path(os.environ["MARKER_DIR"])

worker = Worker(
    os.environ["FLOWORK_GATEWAY"],
    engine_id=os.environ["FLOWORK_ENGINE_ID"],
    token=os.environ["FLOWORK_ENGINE_TOKEN"],
    concurrency=int(os.environ.get("FLOWORK_CONCURRENCY", "4")),
    lease_ms=int(os.environ.get("FLOWORK_LEASE_MS", "1500")),
    wait_ms=2_000,
    grace=float(os.environ.get("FLOWORK_GRACE", "30")),
    ca_file=os.environ.get("FLOWORK_CA_FILE"),
)


def mark(name: str, text: str = "") -> None:
    (MARKERS / name).write_text(text)


@worker.handler("upper")
def upper(payload: Any, ctx: JobContext) -> Any:
    return {"text": payload["text"].upper(), "attempt": ctx.attempt, "job_id": ctx.job_id}


@worker.handler("upper_async")
async def upper_async(payload: Any, ctx: JobContext) -> Any:
    await asyncio.sleep(0)
    return {"text": payload["text"].upper()}


@worker.handler("progress")
def progress(payload: Any, ctx: JobContext) -> Any:
    """Reports progress, then more once the test has seen it, then holds until released (marker files; a minute
    at most each)."""
    ctx.progress(42, "almost half")
    hold_until(f"next-{ctx.job_id}")
    ctx.progress(84, "nearly there")
    hold_until(f"release-{ctx.job_id}")
    return "done"


def hold_until(marker: str) -> None:
    deadline = time.monotonic() + 60
    while not (MARKERS / marker).exists() and time.monotonic() < deadline:
        time.sleep(0.05)


@worker.handler("wait_cancel")
def wait_cancel(payload: Any, ctx: JobContext) -> Any:
    """A sync handler that runs until it is told to stop."""
    mark(f"started-{ctx.job_id}")
    if ctx.cancel_event.wait(60):
        mark(f"cancelled-{ctx.job_id}", str(ctx.cancelled))
    return "never cancelled"


@worker.handler("wait_cancel_async")
async def wait_cancel_async(payload: Any, ctx: JobContext) -> Any:
    """An async handler: cancelled at its next await."""
    mark(f"started-{ctx.job_id}")
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        mark(f"cancelled-{ctx.job_id}", str(ctx.cancelled))
        raise
    return "never cancelled"


@worker.handler("fail_permanent")
def fail_permanent(payload: Any, ctx: JobContext) -> Any:
    mark(f"attempt-{ctx.job_id}-{ctx.attempt}")
    raise PermanentError("this payload can never work")


@worker.handler("fail_once")
def fail_once(payload: Any, ctx: JobContext) -> Any:
    if ctx.attempt == 1:
        raise RuntimeError("flaky")
    return {"attempt": ctx.attempt}


@worker.handler("stuck")
def stuck(payload: Any, ctx: JobContext) -> Any:
    """Ignores every request to stop."""
    mark(f"started-{ctx.job_id}-{ctx.attempt}")
    time.sleep(3600)


@worker.handler("huge")
def huge(payload: Any, ctx: JobContext) -> Any:
    """A result over the gateway's 1 MiB limit."""
    return "x" * (2 * 1024 * 1024)


@worker.handler("slow")
def slow(payload: Any, ctx: JobContext) -> Any:
    """Runs for payload["seconds"], announcing its start; used for SIGKILL and SIGTERM mid-job."""
    mark(f"started-{ctx.job_id}-{ctx.attempt}")
    time.sleep(payload["seconds"])
    return {"slept": payload["seconds"], "attempt": ctx.attempt}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    worker.run()
    logging.getLogger("flowork.worker").info("worker exited cleanly")
