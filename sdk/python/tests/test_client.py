"""The Client against the real gateway: idempotent enqueues, batches, reads, typed errors, waiting, and
retrying a draining gateway by its Retry-After."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from conftest import Setup
from flowork import ApiError, Client, ConflictError, NotFoundError, UnavailableError, WaitTimeout


def test_an_idempotent_enqueue_returns_the_same_job(setup: Setup) -> None:
    first = setup.client.enqueue("py", "upper", {"text": "hi"}, idempotency_key="order-17")
    again = setup.client.enqueue("py", "upper", {"text": "hi"}, idempotency_key="order-17")
    assert first["status"] == "queued"
    assert again["id"] == first["id"]
    # Without a key, each call makes its own, so two calls are two jobs.
    a = setup.client.enqueue("py", "upper", {"text": "hi"})
    b = setup.client.enqueue("py", "upper", {"text": "hi"})
    assert len({first["id"], a["id"], b["id"]}) == 3
    page = setup.client.list(engine="py", limit=10)
    assert {j["id"] for j in page["jobs"]} == {first["id"], a["id"], b["id"]}
    assert setup.client.get(a["id"])["payload"] == {"text": "hi"}


def test_a_batch_gives_one_result_per_item(setup: Setup) -> None:
    results = setup.client.enqueue_batch(
        [
            {"engine": "py", "kind": "upper", "payload": {"text": "a"}},
            {"engine": "py", "kind": "upper", "payload": {"text": "b"}, "idempotency_key": "k-b"},
            {"engine": "nowhere", "kind": "upper"},
        ]
    )
    assert [r["status"] for r in results] == [201, 201, 422]
    assert results[2]["error"] == "unknown_engine"
    replay = setup.client.enqueue_batch(
        [{"engine": "py", "kind": "upper", "payload": {"text": "b"}, "idempotency_key": "k-b"}]
    )
    assert replay[0]["status"] == 200 and replay[0]["job"]["id"] == results[1]["job"]["id"]


def test_refusals_are_typed_with_the_gateways_code(setup: Setup) -> None:
    with pytest.raises(NotFoundError) as missing:
        setup.client.get("0190c2a1-0000-7000-8000-000000000000")
    assert (missing.value.status, missing.value.code) == (404, "job_not_found")
    with pytest.raises(ApiError) as unknown:
        setup.client.enqueue("nowhere", "upper", {})
    assert (unknown.value.status, unknown.value.code) == (422, "unknown_engine")
    with Client(setup.gateway.base, token="not-a-jwt") as stranger:
        with pytest.raises(ApiError) as refused:
            stranger.get("0190c2a1-0000-7000-8000-000000000000")
    assert refused.value.status == 401


def test_wait_gives_up_after_its_timeout(setup: Setup) -> None:
    job = setup.client.enqueue("py", "upper", {"text": "nobody runs me"})
    with pytest.raises(WaitTimeout) as waited:
        setup.client.wait(job["id"], timeout=0.5)
    assert waited.value.job is not None and waited.value.job["status"] == "queued"
    cancelled = setup.client.cancel(job["id"])
    assert cancelled["status"] == "cancelled"
    assert setup.client.wait(job["id"], timeout=10)["status"] == "cancelled"


def test_an_enqueue_waits_out_a_drain_by_its_retry_after(setup: Setup) -> None:
    admin = setup.gateway.cli("admin", "token", "--scope", "drain").strip()
    headers = {"Authorization": f"Bearer {admin}"}
    assert httpx.post(f"{setup.gateway.base}/admin/drain", headers=headers).is_success
    # Within a short deadline the refusal comes through, typed, with the gateway's code and Retry-After.
    with Client(setup.gateway.base, token=setup.user_token, retry_deadline=0.5) as impatient:
        with pytest.raises(UnavailableError) as refused:
            impatient.enqueue("py", "upper", {"text": "hi"})
    assert refused.value.code == "draining" and refused.value.retry_after is not None
    # A patient enqueue is retried after Retry-After and goes through once the drain ends.
    threading.Timer(1.0, lambda: httpx.delete(f"{setup.gateway.base}/admin/drain", headers=headers)).start()
    started = time.monotonic()
    job = setup.client.enqueue("py", "upper", {"text": "hi"})
    assert job["status"] == "queued"
    assert time.monotonic() - started >= 1.0  # it did wait: the drain ended only after a second


def test_failed_work_is_operated_retry_delete_counts_and_bulk(setup: Setup) -> None:
    later = "2999-01-01T00:00:00Z"
    job = setup.client.enqueue("py", "upper", {"text": "x"}, run_at=later)
    setup.client.cancel(job["id"])
    assert setup.client.attempts(job["id"]) == [], "it never ran"
    retried = setup.client.retry(job["id"])
    assert (retried["id"], retried["status"], retried["attempts"]) == (job["id"], "queued", 0)
    with pytest.raises(ConflictError) as not_retryable:
        setup.client.retry(job["id"])
    assert not_retryable.value.code == "not_retryable"
    with pytest.raises(ConflictError) as not_final:
        setup.client.delete(job["id"])
    assert not_final.value.code == "job_not_final"
    others = [setup.client.enqueue("py", "upper", {"n": i}, run_at=later)["id"] for i in range(3)]
    assert setup.client.counts("py")["queued"] >= 4
    cancelled = setup.client.bulk("cancel", status="queued", engine="py")
    assert cancelled["matched"] == cancelled["changed"] >= 4
    listed = setup.client.list(status=["cancelled"], engine="py", kind="upper", limit=100)
    assert {job["id"], *others} <= {j["id"] for j in listed["jobs"]}
    assert setup.client.bulk("delete", ids=[job["id"], *others]) == {"matched": 4, "changed": 4}
    with pytest.raises(NotFoundError):
        setup.client.get(job["id"])
    with pytest.raises(NotFoundError):
        setup.client.delete(job["id"])


def test_stats_count_your_jobs_per_minute_and_a_bad_window_is_refused(setup: Setup) -> None:
    before = setup.client.stats("py", window="15m")
    assert (before["engine"], before["window_seconds"], len(before["buckets"])) == ("py", 900, 15)
    for n in range(3):
        setup.client.enqueue("py", "upper", {"n": n}, run_at="2999-01-01T00:00:00Z")
    after = setup.client.stats("py", window="15m")
    assert after["totals"]["enqueued"] == before["totals"]["enqueued"] + 3
    assert sum(b["enqueued"] for b in after["buckets"]) == after["totals"]["enqueued"]
    assert setup.client.stats()["window_seconds"] == 3600
    with pytest.raises(ApiError) as refused:
        setup.client.stats("py", window="30s")
    assert (refused.value.status, refused.value.code) == (400, "invalid_window")
