"""The Worker against the real gateway, as separate processes: a job runs and its result arrives, progress and
cancellation travel through heartbeats, failures are retryable or permanent, a SIGKILLed worker's job is leased
again and its late finish refused, a SIGTERMed worker finishes its job before it exits, and a worker waits for a
gateway that is away."""

from __future__ import annotations

import signal
import sqlite3
import subprocess

import httpx
import pytest

from conftest import Setup, binary, eventually


def test_a_python_function_runs_as_a_job(setup: Setup) -> None:
    setup.start_worker()
    job = setup.client.enqueue("py", "upper", {"text": "hi"})
    done = setup.client.wait(job["id"], timeout=30)
    assert done["status"] == "succeeded", done
    assert done["result"] == {"text": "HI", "attempt": 1, "job_id": job["id"]}
    coroutine = setup.client.enqueue("py", "upper_async", {"text": "async"})
    assert setup.client.wait(coroutine["id"], timeout=30)["result"] == {"text": "ASYNC"}
    unknown = setup.client.enqueue("py", "no_such_kind", {}, max_attempts=3)
    dead = setup.client.wait(unknown["id"], timeout=30)
    assert (dead["status"], dead["attempts"]) == ("dead", 1)
    assert "no handler" in dead["error"]


def test_progress_reaches_the_job_without_waiting_for_the_lease_renewal(setup: Setup) -> None:
    # A 120 s lease is renewed every 40 s, after the 30 s each wait below allows: progress must go out on its own.
    setup.start_worker(lease_ms=120_000)
    job = setup.client.enqueue("py", "progress", {})
    seen = eventually(lambda: setup.job(job["id"]).get("progress"), "progress on GET /jobs/{id}")
    assert seen == {"percent": 42.0, "message": "almost half"}
    assert setup.job(job["id"])["status"] == "running"
    # A second report soon after the first still goes out (within the second after it), not with the renewal.
    (setup.tmp / f"next-{job['id']}").write_text("")
    later = eventually(
        lambda: (progress := setup.job(job["id"]).get("progress")) and progress["percent"] == 84.0 and progress,
        "the second progress",
    )
    assert later == {"percent": 84.0, "message": "nearly there"}
    (setup.tmp / f"release-{job['id']}").write_text("")
    assert setup.client.wait(job["id"], timeout=30)["status"] == "succeeded"


@pytest.mark.parametrize("kind", ["wait_cancel", "wait_cancel_async"])
def test_a_cancel_reaches_the_handler(setup: Setup, kind: str) -> None:
    setup.start_worker(lease_ms=900)
    job = setup.client.enqueue("py", kind, {})
    eventually(lambda: (setup.tmp / f"started-{job['id']}").exists(), "the handler to start")
    asked = setup.client.cancel(job["id"])
    assert asked["status"] == "running" and asked["cancel_requested"]
    done = setup.client.wait(job["id"], timeout=30)
    assert done["status"] == "cancelled", done
    marker = eventually(lambda: (setup.tmp / f"cancelled-{job['id']}").exists(), "the handler to see the cancel")
    assert marker and (setup.tmp / f"cancelled-{job['id']}").read_text() == "True"


def test_a_permanent_failure_ends_dead_without_retries(setup: Setup) -> None:
    setup.start_worker()
    job = setup.client.enqueue("py", "fail_permanent", {}, max_attempts=5)
    done = setup.client.wait(job["id"], timeout=30)
    assert (done["status"], done["attempts"]) == ("dead", 1), done
    assert "never work" in done["error"]
    assert sorted(p.name for p in setup.tmp.glob(f"attempt-{job['id']}-*")) == [f"attempt-{job['id']}-1"]
    # Any other exception is retryable: the second attempt succeeds.
    flaky = setup.client.enqueue("py", "fail_once", {}, max_attempts=3)
    retried = setup.client.wait(flaky["id"], timeout=30)
    assert (retried["status"], retried["result"]) == ("succeeded", {"attempt": 2}), retried

    # A result the gateway refuses as too large fails the job for good: another attempt would not shrink it.
    huge = setup.client.enqueue("py", "huge", {}, max_attempts=3)
    refused = setup.client.wait(huge["id"], timeout=30)
    assert (refused["status"], refused["attempts"]) == ("dead", 1), refused
    assert "too large" in refused["error"]


def lease_token(setup: Setup, job_id: str) -> str:
    """The job's current lease token, as the gateway's store holds it."""
    shard = setup.gateway.data_dir / "shards" / "py.sqlite3"
    with sqlite3.connect(f"file:{shard}?mode=ro", uri=True, timeout=10) as db:
        row = db.execute("SELECT lease_token FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert row and row[0], f"job {job_id} holds no lease"
    return str(row[0])


def test_a_killed_workers_job_runs_again_and_its_late_finish_is_refused(setup: Setup) -> None:
    doomed = setup.start_worker(lease_ms=1500)
    job = setup.client.enqueue("py", "slow", {"seconds": 2}, max_attempts=3)
    eventually(lambda: (setup.tmp / f"started-{job['id']}-1").exists(), "the first attempt to start")
    old_token = lease_token(setup, job["id"])
    doomed.signal(signal.SIGKILL)
    doomed.wait_exit()
    # Once the lease lapses the job is queued again and another worker runs it as attempt 2.
    setup.start_worker(lease_ms=1500)
    done = setup.client.wait(job["id"], timeout=60)
    # 2, or 3 when the killed worker's own long poll (still open at the gateway) was handed the job as its lease
    # lapsed: that lease lapses too, and the new worker's attempt is the third.
    assert done["status"] == "succeeded" and done["attempts"] in (2, 3), done
    assert done["result"]["attempt"] == done["attempts"], done
    # The killed worker's finish, arriving late with its old lease token, is refused (fencing).
    late = httpx.post(
        f"{setup.gateway.base}/internal/jobs/{job['id']}/finish",
        headers={"X-Engine-Token": setup.engine_token, "Flowork-Protocol": "1"},
        json={"lease_token": old_token, "outcome": "succeeded", "result": "from the dead"},
    )
    assert (late.status_code, late.json()["error"]) == (409, "lease_lost")
    assert setup.client.get(job["id"])["result"]["attempt"] == 2


def test_a_sigterm_lets_the_running_job_finish_before_the_worker_exits(setup: Setup) -> None:
    worker = setup.start_worker(lease_ms=3000)
    job = setup.client.enqueue("py", "slow", {"seconds": 2}, max_attempts=1)
    eventually(lambda: (setup.tmp / f"started-{job['id']}-1").exists(), "the job to start")
    worker.signal(signal.SIGTERM)
    eventually(lambda: "stop requested" in worker.log_text(), "the worker to take the signal")
    later = setup.client.enqueue("py", "upper", {"text": "too late"})
    assert worker.wait_exit(within=60) == 0, worker.log_text()
    assert "worker exited cleanly" in worker.log_text()
    done = setup.client.get(job["id"])
    assert (done["status"], done["attempts"]) == ("succeeded", 1), done
    assert setup.client.get(later["id"])["status"] != "succeeded"


def test_after_the_grace_period_a_stuck_job_is_abandoned_and_the_worker_exits(setup: Setup) -> None:
    worker = setup.start_worker(lease_ms=1500, grace=1.0)
    job = setup.client.enqueue("py", "stuck", {}, max_attempts=2)
    eventually(lambda: (setup.tmp / f"started-{job['id']}-1").exists(), "the job to start")
    worker.signal(signal.SIGTERM)
    assert worker.wait_exit(within=60) == 0, worker.log_text()
    assert "grace period over" in worker.log_text()
    # Its lease lapses and the job is queued again for another worker.
    eventually(lambda: setup.job(job["id"])["status"] == "queued", "the abandoned job to be queued again")


def test_a_worker_waits_for_a_gateway_that_is_away(setup: Setup) -> None:
    gateway = setup.gateway
    port = gateway.base.rsplit(":", 1)[1]
    job = setup.client.enqueue("py", "upper", {"text": "later"})
    gateway.process.kill()
    gateway.process.wait()
    worker = setup.start_worker()
    eventually(lambda: "retrying" in worker.log_text(), "the worker to find the gateway away")
    assert worker.process.poll() is None, worker.log_text()
    with open(gateway.log, "ab") as out:
        gateway.process = subprocess.Popen(
            [
                str(binary("flowork-gateway")),
                "serve",
                "--listen",
                f"127.0.0.1:{port}",
                "--data-dir",
                str(gateway.data_dir),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    done = setup.client.wait(job["id"], timeout=60)
    assert done["result"] == {"text": "LATER", "attempt": 1, "job_id": job["id"]}
