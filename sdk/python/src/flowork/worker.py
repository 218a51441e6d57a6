"""Running your own functions as Flowork jobs: the worker side of the engine protocol (docs/engine-protocol.md),
with the Rust engine's behaviour — long-poll claims for as many jobs as there are free slots, leases kept alive
by heartbeats that carry progress and bring back cancel requests, outcomes reported in batches, a lost lease
dropping the job, backoff while the gateway is away, and a graceful drain on SIGTERM."""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from ._engine_api import EngineApi, is_lease_lost
from ._finisher import Finisher
from ._http import full_jitter_delay, is_transient
from .errors import ApiError, AuthenticationError, FloworkError, PermanentError

log = logging.getLogger("flowork.worker")

#: The most characters of an error message the gateway keeps.
MAX_ERROR_CHARS = 8192
#: The least time between two heartbeats sent for progress: a progress bar moves within a second of a report.
PROGRESS_EVERY_S = 1.0

Handler = Callable[[Any, "JobContext"], Any | Awaitable[Any]]
"""A function of ``(payload, ctx)``, sync or async, returning the job's result (anything JSON can hold)."""

H = TypeVar("H", bound=Handler)


class JobContext:
    """What a handler knows about the attempt it runs, and how it talks back."""

    def __init__(self, job: dict[str, Any]) -> None:
        #: The job as claimed: ``id``, ``kind``, ``payload``, ``attempts``, ``max_attempts``, ``user``, ...
        self.job = job
        self.job_id: str = job["id"]
        self.kind: str = job["kind"]
        #: This attempt's number, from 1.
        self.attempt: int = int(job.get("attempts", 1))
        self.max_attempts: int = int(job.get("max_attempts", 1))
        #: The W3C trace context the job was submitted with, to continue its trace.
        self.traceparent: str | None = job.get("traceparent")
        #: Set when the user cancelled the job (or this worker lost its lease, or the job timed out): stop soon.
        #: A sync handler should check it between steps; an async one is also cancelled at its next ``await``.
        self.cancel_event = threading.Event()
        self._progress: dict[str, Any] | None = None
        self._lock = threading.Lock()
        # Set (from any thread) when progress is reported, to wake the heartbeat that carries it.
        self._reported: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # The thread future of a sync handler: its slot stays taken until the thread returns.
        self._thread: asyncio.Future[Any] | None = None

    @property
    def cancelled(self) -> bool:
        """Whether the handler should stop (see ``cancel_event``)."""
        return self.cancel_event.is_set()

    def progress(self, percent: float, message: str | None = None) -> None:
        """Records how far the job has come (0-100) and a short message; a heartbeat carries it to the gateway
        within about a second, where ``GET /jobs/{id}`` shows it. Safe to call from any thread, as often as you
        like (at most one heartbeat a second goes out for it)."""
        progress: dict[str, Any] = {"percent": max(0.0, min(100.0, float(percent)))}
        if message is not None:
            progress["message"] = message[:500]
        with self._lock:
            self._progress = progress
            loop, reported = self._loop, self._reported
        if loop is not None and reported is not None:
            try:
                loop.call_soon_threadsafe(reported.set)
            except RuntimeError:
                pass  # the loop has closed: the worker has stopped

    def _watch_progress(self) -> asyncio.Event:
        """The event set whenever progress is reported (set now if some is waiting); called on the worker's loop."""
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._reported = asyncio.Event()
            if self._progress is not None:
                self._reported.set()
            return self._reported

    def _take_progress(self) -> dict[str, Any] | None:
        with self._lock:
            progress, self._progress = self._progress, None
            return progress


@dataclass
class _Outcome:
    """How an attempt ended on this worker: the body of its finish report."""

    report: dict[str, Any]

    @staticmethod
    def succeeded(result: Any) -> _Outcome:
        return _Outcome({"outcome": "succeeded", "result": result})

    @staticmethod
    def failed(message: str, retryable: bool) -> _Outcome:
        return _Outcome({"outcome": "failed", "error": message[:MAX_ERROR_CHARS], "retryable": retryable})

    @staticmethod
    def timed_out(message: str) -> _Outcome:
        return _Outcome({"outcome": "timed_out", "error": message[:MAX_ERROR_CHARS], "retryable": True})

    @staticmethod
    def cancelled() -> _Outcome:
        return _Outcome({"outcome": "cancelled"})


class Worker:
    """Runs the handlers registered for an engine's job kinds, ``concurrency`` jobs at a time.

    ``gateway`` is the gateway's base URL; ``engine_id`` and ``token`` (or ``token_file``) come from
    ``flowork-gateway engine add NAME``. ``lease_ms`` is how long a claimed job stays this worker's without a
    heartbeat (heartbeats go every third of it); ``wait_ms`` how long one claim waits at the gateway for work;
    ``grace`` how many seconds running jobs may take to finish after SIGTERM before the worker exits anyway.
    Sync handlers run each on a thread of its own (a daemon, so one that never returns cannot keep the process
    alive after the drain), async ones on the worker's event loop.
    """

    def __init__(
        self,
        gateway: str,
        *,
        engine_id: str,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        concurrency: int = 4,
        lease_ms: int = 30_000,
        wait_ms: int = 20_000,
        grace: float = 30.0,
        ca_file: str | None = None,
        worker_name: str | None = None,
    ) -> None:
        if (token is None) == (token_file is None):
            raise ValueError("pass exactly one of token and token_file")
        if token_file is not None:
            with open(token_file, encoding="utf-8") as f:
                token = f.read().strip()
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not 100 <= lease_ms <= 3_600_000:
            raise ValueError("lease_ms must be between 100 and 3600000")
        self.gateway = gateway
        self.engine_id = engine_id
        self.concurrency = concurrency
        self.lease_ms = lease_ms
        self.wait_ms = max(0, min(wait_ms, 60_000))
        self.grace = grace
        self.worker_name = worker_name or f"{engine_id}/python/{socket.gethostname()}/pid-{os.getpid()}"
        self._token: str = token or ""
        self._ca_file = ca_file
        self._handlers: dict[str, Handler] = {}
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested = False
        self._busy = 0

    def handler(self, kind: str) -> Callable[[H], H]:
        """Registers the decorated function for jobs of ``kind``."""

        def register(function: H) -> H:
            self.add_handler(kind, function)
            return function

        return register

    def add_handler(self, kind: str, function: Handler) -> None:
        """Registers ``function`` for jobs of ``kind`` (replacing an earlier one)."""
        self._handlers[kind] = function

    def stop(self) -> None:
        """Asks the worker to drain: claim nothing more, finish the running jobs, return. Safe from any thread
        and from signal handlers."""
        self._stop_requested = True
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    def run(self) -> None:
        """Runs until SIGTERM or SIGINT (Ctrl-C), then drains. Blocks. Raises ``AuthenticationError`` if the
        gateway refuses the token."""
        asyncio.run(self._serve_with_signals())

    async def _serve_with_signals(self) -> None:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, self._on_signal)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError):  # Windows: no loop signal handlers
                    previous[sig] = signal.signal(sig, lambda *_: self.stop())
        try:
            await self.serve()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self) -> None:
        log.info("stop requested: no new claims")
        self.stop()

    async def serve(self) -> None:
        """The worker as a coroutine (for programs that run their own event loop); returns after ``stop()``
        once the running jobs are done or ``grace`` has passed."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stop_requested:
            self._stop.set()
        api = EngineApi(self.gateway, self._token, ca_file=self._ca_file, max_connections=self.concurrency + 4)
        finisher = Finisher(api)
        try:
            if await self._check_identity(api):
                await self._claim_loop(api, finisher)
        finally:
            await finisher.aclose()
            await api.aclose()

    async def _stopped(self, delay: float) -> bool:
        """Sleeps up to ``delay`` seconds; True if a stop was asked for meanwhile."""
        assert self._stop is not None
        try:
            await asyncio.wait_for(self._stop.wait(), delay)
            return True
        except asyncio.TimeoutError:
            return False

    async def _check_identity(self, api: EngineApi) -> bool:
        """Checks that the token is this engine's, waiting for a gateway that is not up yet (or briefly
        unavailable); any other refusal stops the worker."""
        failures = 0
        while True:
            try:
                who = await api.whoami()
            except (ApiError, httpx.TransportError) as error:
                if not is_transient(error):
                    raise  # a wrong token, an address the gateway refuses, a protocol it does not speak
                failures += 1
                delay = _retry_delay(failures, error)
                log.warning("cannot check the engine token (%s); retrying in %.1f s", error, delay)
                if await self._stopped(delay):
                    return False
                continue
            if who != self.engine_id:
                raise FloworkError(f"the token belongs to engine {who!r}, not {self.engine_id!r}")
            return True

    async def _claim_loop(self, api: EngineApi, finisher: Finisher) -> None:
        assert self._stop is not None
        slots = asyncio.Semaphore(self.concurrency)
        running: set[asyncio.Task[None]] = set()
        stop_wait = asyncio.ensure_future(self._stop.wait())
        failures = 0
        try:
            while not self._stop.is_set():
                acquire = asyncio.ensure_future(slots.acquire())
                await asyncio.wait({acquire, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not acquire.done():
                    acquire.cancel()
                    break
                free = 1
                while not slots.locked():
                    await slots.acquire()
                    free += 1
                if self._stop.is_set():
                    for _ in range(free):
                        slots.release()
                    break
                request = {
                    "max": free,
                    "wait_ms": self.wait_ms,
                    "lease_ms": self.lease_ms,
                    "worker": self.worker_name,
                    "report": self._report(),
                }
                claim = asyncio.ensure_future(api.claim(request))
                await asyncio.wait({claim, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not claim.done():
                    # Jobs this claim might have leased lapse back to the queue after lease_ms.
                    claim.cancel()
                    for _ in range(free):
                        slots.release()
                    break
                failure: Exception | None = None
                leases: list[dict[str, Any]] = []
                try:
                    leases = claim.result()
                except AuthenticationError:
                    raise
                except ApiError as error:
                    if error.code == "unsupported_protocol":
                        raise
                    failure = error
                except (httpx.TransportError, ValueError, KeyError, TypeError) as error:
                    failure = error  # unreachable, or an answer that is not a claim's (a proxy's error page)
                for _ in range(free - len(leases)):
                    slots.release()
                for lease in leases:
                    task = asyncio.create_task(self._run_job(api, finisher, lease))
                    running.add(task)
                    task.add_done_callback(lambda t: _free_slot(running, slots, t))
                if failure is None:
                    failures = 0
                    continue
                failures += 1
                delay = _retry_delay(failures, failure)
                log.warning("claim failed (%s); retrying in %.1f s", failure, delay)
                if await self._stopped(delay):
                    break
        finally:
            stop_wait.cancel()
            await self._drain(running)

    async def _drain(self, running: set[asyncio.Task[None]]) -> None:
        if not running:
            return
        log.info("waiting up to %.0f s for %d running jobs", self.grace, len(running))
        _, late = await asyncio.wait(set(running), timeout=self.grace)
        if late:
            log.warning("grace period over; %d jobs abandoned, their leases will lapse and they run again", len(late))
            for task in late:
                task.cancel()
            # A sync handler cannot be interrupted: do not wait for it (its thread is a daemon).
            await asyncio.wait(late, timeout=1.0)

    def _report(self) -> dict[str, Any]:
        """The worker numbers the gateway shows in ``GET /status``."""
        return {
            "workers": self.concurrency,
            "min_workers": self.concurrency,
            "max_workers": self.concurrency,
            "busy": self._busy,
            "utilization": self._busy / self.concurrency,
        }

    async def _run_job(
        self,
        api: EngineApi,
        finisher: Finisher,
        lease: dict[str, Any],
    ) -> None:
        job = lease["job"]
        token: str = lease["lease_token"]
        ctx = JobContext(job)
        self._busy += 1
        execution = asyncio.ensure_future(self._execute(job, ctx))
        keeper = asyncio.ensure_future(self._keep_lease(api, ctx, token))
        try:
            await asyncio.wait({execution, keeper}, return_when=asyncio.FIRST_COMPLETED)
            if execution.done():
                keeper.cancel()
                outcome = execution.result()
            else:
                end = keeper.result()
                ctx.cancel_event.set()
                execution.cancel()
                if end == "lost":
                    log.warning("job %s: lease lost while running; abandoning it", ctx.job_id)
                    return
                outcome = _Outcome.cancelled()
            log.info("job %s (%s): %s", ctx.job_id, ctx.kind, outcome.report["outcome"])
            await self._deliver(finisher, ctx, token, outcome)
        finally:
            keeper.cancel()
            ctx.cancel_event.set()
            execution.cancel()
            # The slot stays taken until the handler has really stopped (a sync one runs to its end).
            await asyncio.gather(execution, return_exceptions=True)
            if ctx._thread is not None:
                await asyncio.gather(ctx._thread, return_exceptions=True)
            self._busy -= 1

    async def _deliver(self, finisher: Finisher, ctx: JobContext, token: str, outcome: _Outcome) -> None:
        """Reports the outcome; a refusal means the job is no longer ours, or the lease lapses and it runs again.
        A result too large for the gateway will not shrink on another attempt: the job fails for good."""
        try:
            await finisher.report(ctx.job_id, {"lease_token": token, **outcome.report}, ctx.traceparent)
        except ApiError as error:
            if error.code == "payload_too_large" and outcome.report["outcome"] == "succeeded":
                too_large = _Outcome.failed(f"the result is too large for the gateway: {error.message}", False)
                await self._deliver(finisher, ctx, token, too_large)
            elif is_lease_lost(error):
                log.warning(
                    "job %s: the gateway refused the outcome (%s); the job is no longer ours", ctx.job_id, error.code
                )
            else:
                log.warning("job %s: could not report the outcome (%s); the lease will lapse", ctx.job_id, error)
        except httpx.TransportError as error:
            log.warning("job %s: could not report the outcome (%s); the lease will lapse", ctx.job_id, error)

    async def _execute(self, job: dict[str, Any], ctx: JobContext) -> _Outcome:
        handler = self._handlers.get(job["kind"])
        if handler is None:
            return _Outcome.failed(f"this worker has no handler for the kind {job['kind']!r}", retryable=False)
        timeout = int(job.get("timeout_ms") or 0) / 1000 or None
        try:
            if inspect.iscoroutinefunction(handler):
                result = await asyncio.wait_for(handler(job.get("payload"), ctx), timeout)
            else:
                thread = _in_daemon_thread(handler, job.get("payload"), ctx)
                ctx._thread = thread
                result = await asyncio.wait_for(asyncio.shield(thread), timeout)
                if inspect.isawaitable(result):
                    result = await asyncio.wait_for(result, timeout)
        except asyncio.TimeoutError:
            ctx.cancel_event.set()
            return _Outcome.timed_out(f"timed out after {job.get('timeout_ms')} ms")
        except PermanentError as error:
            return _Outcome.failed(str(error) or type(error).__name__, retryable=False)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            return _Outcome.failed(f"{type(error).__name__}: {error}", retryable=True)
        try:
            json.dumps(result)
        except (TypeError, ValueError) as error:
            return _Outcome.failed(f"the handler's result is not JSON: {error}", retryable=False)
        return _Outcome.succeeded(result)

    async def _keep_lease(self, api: EngineApi, ctx: JobContext, token: str) -> str:
        """Renews the lease every third of its length, and sooner when the handler reports progress (at most once
        per ``PROGRESS_EVERY_S``), carrying the latest progress; returns ``"cancel"`` when the user cancelled the
        job, ``"lost"`` when the lease is gone."""
        loop = asyncio.get_running_loop()
        every = max(self.lease_ms / 3, 50) / 1000
        reported = ctx._watch_progress()
        renew_at = loop.time() + every
        sent_at: float | None = None
        while True:
            try:
                await asyncio.wait_for(reported.wait(), max(0.0, renew_at - loop.time()))
                # Progress goes out promptly, but a handler reporting in a tight loop costs one call a second.
                if sent_at is not None:
                    await asyncio.sleep(max(0.0, min(sent_at + PROGRESS_EVERY_S, renew_at) - loop.time()))
            except asyncio.TimeoutError:
                pass
            reported.clear()
            request: dict[str, Any] = {"lease_token": token, "lease_ms": self.lease_ms}
            progress = ctx._take_progress()
            if progress is not None:
                request["progress"] = progress
            sent_at = loop.time()
            renew_at = sent_at + every
            try:
                answer = await api.heartbeat(ctx.job_id, request, ctx.traceparent)
            except (ApiError, httpx.TransportError, ValueError) as error:
                if is_lease_lost(error):
                    return "lost"
                # A missed heartbeat is not fatal: the next one may pass before the lease ends.
                log.warning("job %s: heartbeat failed (%s)", ctx.job_id, error)
                continue
            if answer.get("cancel_requested"):
                return "cancel"


def _in_daemon_thread(function: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
    """Runs ``function(*args)`` on a new daemon thread; its outcome settles the returned future."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def work() -> None:
        try:
            outcome = functools.partial(future.set_result, function(*args))
        except BaseException as error:  # handed to the event loop, which decides
            outcome = functools.partial(future.set_exception, error)
        try:
            loop.call_soon_threadsafe(settle, outcome)
        except RuntimeError:
            pass  # the worker has exited meanwhile: nobody waits for this job any more

    threading.Thread(target=work, name="flowork-job", daemon=True).start()
    return future


def _free_slot(running: set[asyncio.Task[None]], slots: asyncio.Semaphore, task: asyncio.Task[None]) -> None:
    running.discard(task)
    slots.release()


def _retry_delay(failures: int, error: BaseException) -> float:
    """Full-jitter backoff from 0.2 s to 5 s, and never sooner than the gateway's Retry-After."""
    delay = full_jitter_delay(failures, 0.2, 5.0)
    if isinstance(error, ApiError) and error.retry_after is not None:
        delay = max(delay, error.retry_after)
    return delay
