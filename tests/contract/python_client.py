"""Every public route of a running gateway through the Python client that openapi-python-client generated from its
/openapi.json: each answer must come with a documented status, parse into the generated types and carry the
expected values. tests/tests/openapi_clients.rs generates the client (package `flowork_client`) and runs this with
the gateway's URL, a user token (the owner of the engine), an admin token and the engine's token in the environment.
"""

import os
import uuid
from datetime import datetime, timedelta, timezone

from eth_account import Account
from eth_account.messages import encode_defunct

from flowork_client import AuthenticatedClient, Client
from flowork_client.api.admin import (
    admin_allow_user,
    admin_disallow_user,
    admin_list_audit,
    admin_list_engines,
    admin_start_drain,
    admin_stop_drain,
    admin_verify_audit,
)
from flowork_client.api.auth import (
    create_api_key,
    delete_api_key,
    get_sign_in_nonce,
    list_api_keys,
    log_out,
    refresh_tokens,
    verify_sign_in,
)
from flowork_client.api.engine import (
    engine_claim,
    engine_finish,
    engine_finish_batch,
    engine_heartbeat,
    engine_whoami,
)
from flowork_client.api.engines import (
    engine_allow_user,
    engine_breakers,
    engine_disallow_user,
    engine_list_users,
    engine_remove_key_limit,
    engine_scheduling,
    engine_set_default_key_limit,
    engine_set_key_limit,
    engine_set_weight,
    pause_engine,
    resume_engine,
)
from flowork_client.api.jobs import (
    bulk_jobs,
    cancel_job,
    count_jobs,
    create_job,
    create_job_batch,
    delete_job,
    get_job,
    job_stats,
    list_job_attempts,
    list_jobs,
    retry_job,
)
from flowork_client.api.schedules import create_schedule, delete_schedule, list_schedules
from flowork_client.api.status import (
    check_health,
    check_ready,
    get_drain_state,
    get_metrics,
    get_status,
    openapi_document,
)
from flowork_client.models import (
    ApiKeyList,
    AttemptEnd,
    AttemptOutcome,
    AuditLogPage,
    AuditVerdict,
    BatchAnswer,
    BatchBody,
    BatchItemAccepted,
    BatchItemRefused,
    BatchJob,
    BulkAnswer,
    BulkRequest,
    FilterFields,
    JobAttempts,
    JobCounts,
    JobStats,
    ClaimRequest,
    ClaimResponse,
    CreatedApiKey,
    CreateKeyRequest,
    DefaultLimitBody,
    DeletedApiKey,
    DeletedSchedule,
    DrainState,
    EngineBreakers,
    EngineList,
    EnqueueRequest,
    ErrorBody,
    FinishBatchRequest,
    FinishBatchResponse,
    FinishItem,
    FinishRequest,
    FinishResponse,
    GatewayStatus,
    HeartbeatRequest,
    HeartbeatResponse,
    Job,
    JobPage,
    JobStatus,
    KeyLimitBody,
    KeyScope,
    LiveEngineStatus,
    LoggedOut,
    MissedTicksName,
    Nonce,
    PauseState,
    Probe,
    Progress,
    RefreshRequest,
    ScheduleInfo,
    ScheduleList,
    ScheduleRequest,
    Scheduling,
    Tokens,
    TokenType,
    VerifyRequest,
    WeightBody,
    WhoAmI,
    Whitelist,
)

BASE = os.environ["FLOWORK_URL"]
ENGINE = os.environ["FLOWORK_ENGINE"]
owner = AuthenticatedClient(base_url=BASE, token=os.environ["FLOWORK_USER_TOKEN"])
admin = AuthenticatedClient(base_url=BASE, token=os.environ["FLOWORK_ADMIN_TOKEN"])
engine = AuthenticatedClient(
    base_url=BASE, token=os.environ["FLOWORK_ENGINE_TOKEN"], auth_header_name="X-Engine-Token", prefix=""
)
anonymous = Client(base_url=BASE)
routes = set()


def answer(response, status, kind, route):
    """The parsed answer, after checking its status and that it parsed into the generated `kind`."""
    routes.add(route)
    assert response.status_code == status, f"{route}: {response.status_code} {response.content!r}"
    assert isinstance(response.parsed, kind), f"{route}: {type(response.parsed)} from {response.content!r}"
    return response.parsed


def refused(response, status, code, route):
    """An error answer: the documented status and `ErrorBody` with its code."""
    error = answer(response, status, ErrorBody, route)
    assert error.error == code, f"{route}: {error.error} ({error.message}), not {code}"
    return error


def rfc3339(at):
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def sign_in():
    """`GET /auth/nonce`, a wallet's EIP-4361 message, `POST /auth/verify`, refresh and logout."""
    nonce = answer(get_sign_in_nonce.sync_detailed(client=anonymous), 200, Nonce, "GET /auth/nonce")
    assert len(nonce.nonce) == 32 and nonce.expires_at > datetime.now(timezone.utc)
    wallet = Account.create()
    now = datetime.now(timezone.utc)
    domain = BASE.split("://", 1)[1]
    message = (
        f"{domain} wants you to sign in with your Ethereum account:\n{wallet.address}\n\nSign in to Flowork.\n\n"
        f"URI: {BASE}\nVersion: 1\nChain ID: 1\nNonce: {nonce.nonce}\nIssued At: {rfc3339(now)}\n"
        f"Expiration Time: {rfc3339(now + timedelta(minutes=5))}"
    )
    signature = "0x" + wallet.sign_message(encode_defunct(text=message)).signature.hex().removeprefix("0x")
    body = VerifyRequest(message=message, signature=signature)
    tokens = answer(verify_sign_in.sync_detailed(client=anonymous, body=body, origin=BASE), 200, Tokens, "POST /auth/verify")
    assert tokens.token_type == TokenType.BEARER and tokens.user == wallet.address.lower() and tokens.expires_in > 0
    again = verify_sign_in.sync_detailed(client=anonymous, body=body, origin=BASE)
    refused(again, 401, "nonce_reused", "POST /auth/verify")
    return wallet.address.lower(), tokens


def main():
    # The probes, the status and this document.
    assert answer(check_health.sync_detailed(client=anonymous), 200, Probe, "GET /healthz").status == "ok"
    assert answer(check_ready.sync_detailed(client=anonymous), 200, Probe, "GET /readyz").status == "ready"
    status = answer(get_status.sync_detailed(client=anonymous), 200, GatewayStatus, "GET /status")
    mine = [e for e in status.engines if isinstance(e, LiveEngineStatus) and e.id == ENGINE]
    assert mine and mine[0].active and not mine[0].paused and status.schema.control > 0, status
    drain = answer(get_drain_state.sync_detailed(client=anonymous), 200, DrainState, "GET /drain")
    assert drain.draining is False
    metrics = get_metrics.sync_detailed(client=anonymous)
    routes.add("GET /metrics")
    assert metrics.status_code == 200 and b"flowork_" in metrics.content
    document = openapi_document.sync_detailed(client=anonymous)
    routes.add("GET /openapi.json")
    assert document.status_code == 200 and document.parsed is not None

    # Sign-in with a wallet; the owner lets the new user submit to the engine.
    user, tokens = sign_in()
    wallet = AuthenticatedClient(base_url=BASE, token=tokens.access_token)
    page = answer(list_jobs.sync_detailed(client=wallet), 200, JobPage, "GET /jobs")
    assert page.jobs == [] and page.next_cursor is None
    refused(
        create_job.sync_detailed(client=wallet, body=EnqueueRequest(engine=ENGINE, kind="echo"), idempotency_key="w1"),
        403,
        "not_whitelisted",
        "POST /jobs",
    )
    whitelist = answer(
        engine_allow_user.sync_detailed(ENGINE, user, client=owner), 200, Whitelist, "PUT /engines/{id}/users/{user}"
    )
    assert user in [u.user for u in whitelist.users]
    owners = [u.user for u in whitelist.users if u.owner]
    created = create_job.sync_detailed(
        client=wallet, body=EnqueueRequest(engine=ENGINE, kind="echo", payload={"from": "wallet"}), idempotency_key="w1"
    )
    wallet_job = answer(created, 201, Job, "POST /jobs")
    assert wallet_job.user == user
    refreshed = answer(
        refresh_tokens.sync_detailed(client=anonymous, body=RefreshRequest(refresh_token=tokens.refresh_token)),
        200,
        Tokens,
        "POST /auth/refresh",
    )
    assert refreshed.refresh_token != tokens.refresh_token and refreshed.user == user
    logged_out = log_out.sync_detailed(client=anonymous, body=RefreshRequest(refresh_token=refreshed.refresh_token))
    assert answer(logged_out, 200, LoggedOut, "POST /auth/logout").revoked is True
    again = refresh_tokens.sync_detailed(client=anonymous, body=RefreshRequest(refresh_token=refreshed.refresh_token))
    assert answer(again, 401, ErrorBody, "POST /auth/refresh").error.startswith("refresh_")

    # API keys: made, listed, used within their scope, deleted.
    request = CreateKeyRequest(name="contract test", scopes=[KeyScope.JOBSREAD], ttl="1h")
    key = answer(create_api_key.sync_detailed(client=owner, body=request), 201, CreatedApiKey, "POST /auth/keys")
    assert key.key.startswith("fwk_") and key.scopes == [KeyScope.JOBSREAD] and key.expires_at is not None
    keys = answer(list_api_keys.sync_detailed(client=owner), 200, ApiKeyList, "GET /auth/keys")
    assert [k.id for k in keys.keys] == [key.id]
    with_key = AuthenticatedClient(base_url=BASE, token=key.key)
    answer(list_jobs.sync_detailed(client=with_key, limit=1), 200, JobPage, "GET /jobs")
    body = EnqueueRequest(engine=ENGINE, kind="echo")
    refused(create_job.sync_detailed(client=with_key, body=body, idempotency_key="k"), 403, "missing_scope", "POST /jobs")
    deleted = answer(delete_api_key.sync_detailed(str(key.id), client=owner), 200, DeletedApiKey, "DELETE /auth/keys/{id}")
    assert deleted.deleted is True and deleted.id == key.id
    refused(list_jobs.sync_detailed(client=with_key), 401, "invalid_key", "GET /jobs")

    # Jobs: created with its place in the queue, replayed, read, listed, batched, cancelled.
    body = EnqueueRequest(engine=ENGINE, kind="echo", payload={"n": 1}, priority=1, max_attempts=3, timeout_ms=60000)
    created = create_job.sync_detailed(client=owner, body=body, idempotency_key="py-1")
    job = answer(created, 201, Job, "POST /jobs")
    assert job.status == JobStatus.QUEUED and job.payload == {"n": 1} and job.max_attempts == 3
    assert created.headers["location"] == f"/jobs/{job.id}"
    replay = create_job.sync_detailed(client=owner, body=body, idempotency_key="py-1")
    assert answer(replay, 200, Job, "POST /jobs").id == job.id and replay.headers["idempotent-replayed"] == "true"
    read = answer(get_job.sync_detailed(job.id, client=owner), 200, Job, "GET /jobs/{id}")
    assert read.id == job.id and isinstance(read.queue_position, int) and read.enqueued_at == job.enqueued_at
    refused(get_job.sync_detailed(uuid.uuid4(), client=owner), 404, "job_not_found", "GET /jobs/{id}")
    page = answer(
        list_jobs.sync_detailed(client=owner, status=JobStatus.QUEUED, engine=ENGINE, limit=500), 200, JobPage, "GET /jobs"
    )
    assert job.id in [j.id for j in page.jobs]
    refused(list_jobs.sync_detailed(client=owner, limit=501), 400, "invalid_limit", "GET /jobs")
    items = [
        BatchJob(engine=ENGINE, kind="echo", idempotency_key="py-b1", payload={"n": 2}),
        BatchJob(engine=ENGINE, kind="echo", idempotency_key="py-b2"),
        BatchJob(engine="no-such-engine", kind="echo", idempotency_key="py-b3"),
    ]
    batch = answer(create_job_batch.sync_detailed(client=owner, body=BatchBody(jobs=items)), 200, BatchAnswer, "POST /jobs/batch")
    first, second, third = batch.results
    assert isinstance(first, BatchItemAccepted) and first.status == 201 and first.job.status == JobStatus.QUEUED
    assert isinstance(second, BatchItemAccepted) and second.job.payload is None
    assert isinstance(third, BatchItemRefused) and (third.status, third.error) == (422, "unknown_engine")
    cancelled = answer(cancel_job.sync_detailed(second.job.id, client=owner), 200, Job, "POST /jobs/{id}/cancel")
    assert cancelled.status == JobStatus.CANCELLED
    refused(cancel_job.sync_detailed(second.job.id, client=owner), 409, "not_cancellable", "POST /jobs/{id}/cancel")

    # Schedules.
    request = ScheduleRequest(engine=ENGINE, kind="echo", cron="0 0 1 1 *", timezone="UTC", missed=MissedTicksName.SKIP)
    schedule = answer(create_schedule.sync_detailed(client=owner, body=request), 201, ScheduleInfo, "POST /schedules")
    assert schedule.cron == "0 0 1 1 *" and schedule.missed == MissedTicksName.SKIP and schedule.next_run_at is not None
    schedules = answer(list_schedules.sync_detailed(client=owner), 200, ScheduleList, "GET /schedules")
    assert schedule.id in [s.id for s in schedules.schedules]
    gone = answer(delete_schedule.sync_detailed(schedule.id, client=owner), 200, DeletedSchedule, "DELETE /schedules/{id}")
    assert gone.deleted is True
    refused(delete_schedule.sync_detailed(schedule.id, client=owner), 404, "schedule_not_found", "DELETE /schedules/{id}")

    # The engine's settings, by its owner.
    assert answer(pause_engine.sync_detailed(ENGINE, client=owner), 200, PauseState, "POST /engines/{id}/pause").paused
    settings = answer(engine_scheduling.sync_detailed(ENGINE, client=owner), 200, Scheduling, "GET /engines/{id}/scheduling")
    assert settings.paused and settings.default_weight == 1
    resumed = answer(resume_engine.sync_detailed(ENGINE, client=owner), 200, PauseState, "POST /engines/{id}/resume")
    assert resumed.paused is False
    listed = answer(engine_list_users.sync_detailed(ENGINE, client=owner), 200, Whitelist, "GET /engines/{id}/users")
    assert [u.user for u in listed.users if u.owner] == owners
    removed = engine_disallow_user.sync_detailed(ENGINE, user, client=owner)
    assert user not in [u.user for u in answer(removed, 200, Whitelist, "DELETE /engines/{id}/users/{user}").users]
    weighted = engine_set_weight.sync_detailed(ENGINE, "bob", client=owner, body=WeightBody(weight=3))
    assert answer(weighted, 200, Scheduling, "PUT /engines/{id}/weights/{user}").weights["bob"] == 3
    refused(
        engine_set_weight.sync_detailed(ENGINE, "bob", client=owner, body=WeightBody(weight=0)),
        422,
        "invalid_weight",
        "PUT /engines/{id}/weights/{user}",
    )
    limited = engine_set_default_key_limit.sync_detailed(ENGINE, client=owner, body=DefaultLimitBody(default_limit=5))
    assert answer(limited, 200, Scheduling, "PUT /engines/{id}/concurrency").default_key_limit == 5
    keyed = engine_set_key_limit.sync_detailed(ENGINE, "tenant-1", client=owner, body=KeyLimitBody(limit=2))
    limits = answer(keyed, 200, Scheduling, "PUT /engines/{id}/concurrency/{key}").key_limits
    assert [(k.key, k.limit, k.running) for k in limits] == [("tenant-1", 2, 0)]
    unkeyed = engine_remove_key_limit.sync_detailed(ENGINE, "tenant-1", client=owner)
    assert answer(unkeyed, 200, Scheduling, "DELETE /engines/{id}/concurrency/{key}").key_limits == []
    breakers = answer(engine_breakers.sync_detailed(ENGINE, client=owner), 200, EngineBreakers, "GET /engines/{id}/breakers")
    assert breakers.engine == ENGINE and breakers.breakers == []
    refused(pause_engine.sync_detailed("no-such-engine", client=owner), 404, "engine_not_found", "POST /engines/{id}/pause")

    # The operator's API.
    engines = answer(admin_list_engines.sync_detailed(client=admin), 200, EngineList, "GET /admin/engines")
    assert ENGINE in [e.id for e in engines.engines]
    added = admin_allow_user.sync_detailed(ENGINE, "carol", client=admin)
    assert "carol" in [u.user for u in answer(added, 200, Whitelist, "PUT /admin/engines/{id}/users/{user}").users]
    dropped = admin_disallow_user.sync_detailed(ENGINE, "carol", client=admin)
    assert "carol" not in [u.user for u in answer(dropped, 200, Whitelist, "DELETE /admin/engines/{id}/users/{user}").users]
    audit = answer(admin_list_audit.sync_detailed(client=admin, limit=1000), 200, AuditLogPage, "GET /admin/audit")
    assert "auth.verify" in [e.action for e in audit.entries]
    verdict = answer(admin_verify_audit.sync_detailed(client=admin), 200, AuditVerdict, "GET /admin/audit/verify")
    assert verdict.intact and verdict.rows > 0
    refused(admin_list_engines.sync_detailed(client=owner), 401, "invalid_token", "GET /admin/engines")

    # The engine protocol: claim, heartbeat with progress, a cancel while running, finish one and a batch.
    assert answer(engine_whoami.sync_detailed(client=engine), 200, WhoAmI, "GET /internal/whoami").engine_id == ENGINE
    claim = ClaimRequest(max_=100, wait_ms=0, lease_ms=30000, worker="contract-test")
    leases = answer(engine_claim.sync_detailed(client=engine, body=claim), 200, ClaimResponse, "POST /internal/claim").leases
    by_id = {lease.job.id: lease for lease in leases}
    assert set(by_id) == {job.id, first.job.id, wallet_job.id}, [lease.job.id for lease in leases]
    progress = HeartbeatRequest(lease_token=by_id[job.id].lease_token, lease_ms=30000, progress=Progress(percent=50, message="half"))
    beat = engine_heartbeat.sync_detailed(job.id, client=engine, body=progress)
    assert answer(beat, 200, HeartbeatResponse, "POST /internal/jobs/{id}/heartbeat").cancel_requested is False
    running = answer(get_job.sync_detailed(job.id, client=owner), 200, Job, "GET /jobs/{id}")
    assert running.status == JobStatus.RUNNING and running.progress.percent == 50 and running.progress.message == "half"
    asked = answer(cancel_job.sync_detailed(first.job.id, client=owner), 202, Job, "POST /jobs/{id}/cancel")
    assert asked.cancel_requested is True
    beat = HeartbeatRequest(lease_token=by_id[first.job.id].lease_token, lease_ms=30000)
    told = engine_heartbeat.sync_detailed(first.job.id, client=engine, body=beat)
    assert answer(told, 200, HeartbeatResponse, "POST /internal/jobs/{id}/heartbeat").cancel_requested is True
    stale = HeartbeatRequest(lease_token="fwl_not-a-lease", lease_ms=30000)
    refused(engine_heartbeat.sync_detailed(job.id, client=engine, body=stale), 409, "lease_lost", "POST /internal/jobs/{id}/heartbeat")
    done = FinishRequest(lease_token=by_id[job.id].lease_token, outcome=AttemptOutcome.SUCCEEDED, result={"n": 1, "ok": True})
    finished = answer(engine_finish.sync_detailed(job.id, client=engine, body=done), 200, FinishResponse, "POST /internal/jobs/{id}/finish")
    assert finished.status == JobStatus.SUCCEEDED
    finishes = [
        FinishItem(job_id=str(first.job.id), report=FinishRequest(lease_token=by_id[first.job.id].lease_token, outcome=AttemptOutcome.CANCELLED)),
        FinishItem(
            job_id=str(wallet_job.id),
            report=FinishRequest(lease_token=by_id[wallet_job.id].lease_token, outcome=AttemptOutcome.FAILED, error="boom", retryable=False),
        ),
    ]
    results = answer(
        engine_finish_batch.sync_detailed(client=engine, body=FinishBatchRequest(finishes=finishes)),
        200,
        FinishBatchResponse,
        "POST /internal/finish",
    ).results
    assert [(r.job_id, r.status) for r in results] == [(str(first.job.id), JobStatus.CANCELLED), (str(wallet_job.id), JobStatus.DEAD)]
    succeeded = answer(get_job.sync_detailed(job.id, client=owner), 200, Job, "GET /jobs/{id}")
    assert succeeded.status == JobStatus.SUCCEEDED and succeeded.result == {"n": 1, "ok": True} and succeeded.finished_at

    # Operating jobs: the attempt history, retry of a dead job, delete of a final one, counts, a bulk action.
    history = answer(list_job_attempts.sync_detailed(job.id, client=owner), 200, JobAttempts, "GET /jobs/{id}/attempts")
    assert [(a.number, a.outcome, a.worker) for a in history.attempts] == [(1, AttemptEnd.SUCCEEDED, "contract-test")]
    refused(list_job_attempts.sync_detailed(uuid.uuid4(), client=owner), 404, "job_not_found", "GET /jobs/{id}/attempts")
    retried = answer(retry_job.sync_detailed(first.job.id, client=owner), 200, Job, "POST /jobs/{id}/retry")
    assert retried.status == JobStatus.QUEUED and retried.attempts == 0
    refused(retry_job.sync_detailed(first.job.id, client=owner), 409, "not_retryable", "POST /jobs/{id}/retry")
    refused(delete_job.sync_detailed(first.job.id, client=owner), 409, "job_not_final", "DELETE /jobs/{id}")
    answer(delete_job.sync_detailed(second.job.id, client=owner), 204, type(None), "DELETE /jobs/{id}")
    refused(get_job.sync_detailed(second.job.id, client=owner), 404, "job_not_found", "GET /jobs/{id}")
    counts = answer(count_jobs.sync_detailed(client=owner, engine=ENGINE), 200, JobCounts, "GET /jobs/counts")
    assert counts.succeeded == 1 and counts.queued >= 1, counts
    refused(count_jobs.sync_detailed(client=owner, engine="BAD"), 400, "invalid_engine", "GET /jobs/counts")
    stats = answer(job_stats.sync_detailed(client=owner, engine=ENGINE, window="15m"), 200, JobStats, "GET /jobs/stats")
    assert len(stats.buckets) == 15 and stats.totals.succeeded >= 1 and stats.totals.enqueued >= 2, stats
    refused(job_stats.sync_detailed(client=owner, window="30s"), 400, "invalid_window", "GET /jobs/stats")
    bulk = BulkRequest(action="cancel", filter_=FilterFields(engine=ENGINE, status="queued"))
    cancelled_all = answer(bulk_jobs.sync_detailed(client=owner, body=bulk), 200, BulkAnswer, "POST /jobs/bulk")
    assert cancelled_all.matched == cancelled_all.changed and cancelled_all.changed >= 1, cancelled_all
    refused(bulk_jobs.sync_detailed(client=owner, body=BulkRequest(action="purge", ids=[str(job.id)])), 422, "invalid_action", "POST /jobs/bulk")

    # Drain last: new jobs are refused until it ends.
    assert answer(admin_start_drain.sync_detailed(client=admin), 200, DrainState, "POST /admin/drain").draining
    draining = create_job.sync_detailed(client=owner, body=EnqueueRequest(engine=ENGINE, kind="echo"), idempotency_key="py-late")
    refused(draining, 503, "draining", "POST /jobs")
    assert int(draining.headers["retry-after"]) > 0
    refused(check_ready.sync_detailed(client=anonymous), 503, "draining", "GET /readyz")
    assert answer(get_drain_state.sync_detailed(client=anonymous), 200, DrainState, "GET /drain").draining
    assert not answer(admin_stop_drain.sync_detailed(client=admin), 200, DrainState, "DELETE /admin/drain").draining

    print(f"python client: {len(routes)} routes answered as documented")
    for route in sorted(routes):
        print(f"  {route}")


if __name__ == "__main__":
    main()
