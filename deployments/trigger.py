"""The HTTP trigger: `POST /process-huggingface` creates the job and starts a run of `hf-ingest/default`.

Called by the app, or by a Supabase Database Webhook on INSERT into `jobs`. Thin on purpose:
validation lives in `schemas`, Prefect calls in `flow_runs`, persistence in the jobs store.
Run it with `uvicorn deployments.trigger:app` (make up does).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer

from blocks.settings import Settings, get_settings
from deployments import flow_runs
from deployments.guard import FailedAuthLimiter, RequestGuard
from deployments.reconciler import reconcile_forever, reconcile_job
from deployments.schemas import ImportRequest, JobAccepted, JobOut, JobRecord, Problem, SupabaseWebhook
from hf_ingest import runtime
from hf_ingest.backoff import call_with_backoff
from hf_ingest.import_request import InvalidImport, validate_import
from hf_ingest.jobstore import Job, JobStatus, JobStore
from hf_ingest.logs import StageLogger, redact
from hf_ingest.resume import JOB_ID_NAMESPACE, create_successor

logger = logging.getLogger("hf_ingest.trigger")

@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    """Runs the reconciler beside the API, so no job stays unfinished when a hook could not write."""
    interval = get_settings().reconcile_interval_seconds
    task = asyncio.create_task(reconcile_forever(runtime.job_store, interval)) if interval > 0 else None
    yield
    if task is not None:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


app = FastAPI(
    lifespan=lifespan,
    title="hf-ingest trigger",
    version="0.1.0",
    description="Starts HuggingFace image imports as Prefect flow runs and reports their jobs.",
)
# The token is checked by RequestGuard before any body is read; this only documents it in OpenAPI.
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <WEBHOOK_SECRET>")
failed_auth = FailedAuthLimiter(lambda: get_settings().auth_failures_per_minute)
app.add_middleware(
    RequestGuard,
    secret=lambda: (s.get_secret_value() if (s := get_settings().webhook_secret) else None),
    max_body_bytes=lambda: get_settings().max_request_bytes,
    limiter=failed_auth,
)


def settings_dependency() -> Settings:
    return get_settings()


def job_store_dependency() -> JobStore:
    return runtime.job_store()


Authorized = Depends(_bearer)
Store = Annotated[JobStore, Depends(job_store_dependency)]
CurrentSettings = Annotated[Settings, Depends(settings_dependency)]


def _unprocessable(reason: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, reason)


def _params(request: ImportRequest, settings: Settings) -> dict[str, Any]:
    try:
        return validate_import(request.model_dump(), settings.local_dataset_root)
    except InvalidImport as exc:
        raise _unprocessable(str(exc)) from None


async def _start(store: JobStore, job: Job, params: dict[str, Any], settings: Settings, source: str) -> JSONResponse:
    """Start (or find, on a repeat) the job's flow run with the validated `params`. If Prefect cannot take
    the run, the job stays `queued` with the reason in `error`, the answer is 503, and the reconciler (or
    a repeat of the request) starts it once Prefect answers again."""
    log = StageLogger(logger, job_id=job.id, flow_run_id=job.flow_run_id or "-", secrets=settings.secret_values())
    if job.status is not JobStatus.QUEUED:  # a repeat of a job already under way or finished: report it
        return _accepted(job)
    try:
        flow_run_id = await flow_runs.start_flow_run(job.id, params, source=source)
    except flow_runs.PrefectUnavailable as exc:
        reason = redact(f"waiting for Prefect: {exc}", settings.secret_values())
        await run_in_threadpool(call_with_backoff, lambda: store.set_error(job.id, reason))
        log.error("trigger", "flow run not started; the job stays queued", error=reason)
        return JSONResponse(
            Problem(detail=reason, job_id=job.id).model_dump(mode="json"), status.HTTP_503_SERVICE_UNAVAILABLE
        )
    await run_in_threadpool(call_with_backoff, lambda: store.set_flow_run_id(job.id, flow_run_id))
    log.context["flow_run_id"] = flow_run_id
    log.info("trigger", "flow run created", dataset=job.params.get("dataset"))
    fresh = await run_in_threadpool(store.get_job, job.id)
    return _accepted(fresh or job, flow_run_id)


def _accepted(job: Job, flow_run_id: str | None = None) -> JSONResponse:
    body = JobAccepted(job_id=job.id, flow_run_id=flow_run_id or job.flow_run_id, status=job.status.value)
    return JSONResponse(body.model_dump(mode="json"), status.HTTP_202_ACCEPTED)


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "missing or invalid bearer token"},
    422: {"description": "invalid body, dataset path, split or limit"},
}


@app.post(
    "/process-huggingface",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobAccepted,
    responses={
        **_ERRORS,
        409: {"model": Problem, "description": "Idempotency-Key reused for a different request"},
        413: {"model": Problem, "description": "body over MAX_REQUEST_BYTES"},
        429: {"model": Problem, "description": "too many failed authentications from this client"},
        503: {"model": Problem, "description": "Prefect unreachable; the job stays queued with the reason and starts once Prefect answers"},
    },
    dependencies=[Authorized],
)
async def process_huggingface(
    body: ImportRequest | SupabaseWebhook,
    store: Store,
    settings: CurrentSettings,
    idempotency_key: Annotated[
        str | None, Header(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")
    ] = None,
) -> JSONResponse:
    """Create a `queued` job and start its flow run; answers at once with the job and run ids."""
    if isinstance(body, SupabaseWebhook):
        return await _start_webhook_job(body, store, settings)
    params = _params(body, settings)
    job_id = uuid.uuid5(JOB_ID_NAMESPACE, idempotency_key) if idempotency_key else uuid.uuid4()
    job = await run_in_threadpool(call_with_backoff, lambda: store.create_job(job_id, params))
    if job.params != params:
        raise HTTPException(status.HTTP_409_CONFLICT, "Idempotency-Key was already used for a different request")
    return await _start(store, job, params, settings, source="api")


async def _start_webhook_job(hook: SupabaseWebhook, store: JobStore, settings: Settings) -> JSONResponse:
    if hook.type != "INSERT" or hook.table != "jobs" or hook.record is None:
        raise _unprocessable("only INSERT events on the jobs table are handled")
    try:
        record = JobRecord.model_validate(hook.record)
    except ValueError as exc:
        raise _unprocessable(f"jobs record is not a huggingface_import job: {exc}"[:1000]) from None
    params = _params(record.params, settings)
    job = await run_in_threadpool(call_with_backoff, lambda: store.create_job(record.id, params))
    return await _start(store, job, params, settings, source="webhook")


async def _job_or_404(store: JobStore, job_id: uuid.UUID) -> Job:
    job = await run_in_threadpool(store.get_job, job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such job")
    return job


@app.get("/jobs/{job_id}", response_model=JobOut, responses={**_ERRORS, 404: {"model": Problem}}, dependencies=[Authorized])
async def get_job(job_id: uuid.UUID, store: Store) -> dict[str, Any]:
    """The job row: status, error, progress counts, timestamps, flow run id."""
    job = await _job_or_404(store, job_id)
    return job.as_dict()


@app.post(
    "/jobs/{job_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses={**_ERRORS, 404: {"model": Problem}, 409: {"model": Problem}, 503: {"model": Problem}},
    dependencies=[Authorized],
)
async def cancel_job(job_id: uuid.UUID, store: Store) -> Any:
    """Cancel the job's flow run. The job ends `cancelled` only if Prefect cancelled the run; a run that
    finished first is reported as it ended (409)."""
    job = await _job_or_404(store, job_id)
    if job.status.is_terminal:
        raise HTTPException(status.HTTP_409_CONFLICT, f"job is already {job.status.value}")
    if job.flow_run_id:
        try:
            outcome = await flow_runs.cancel_flow_run(job.flow_run_id)
        except flow_runs.PrefectUnavailable as exc:
            return JSONResponse(Problem(detail=str(exc), job_id=job_id).model_dump(mode="json"), 503)
        if not outcome.cancelled:  # Prefect refused: the run had already ended; the job shows how
            await reconcile_job(store, job)
            current = await _job_or_404(store, job_id)
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"the flow run is {outcome.state_name}, not cancelled; the job is {current.status.value}",
            )
    # The run's on_cancellation hook writes this too; a run that never started runs no hook.
    await run_in_threadpool(
        call_with_backoff, lambda: store.advance(job_id, JobStatus.CANCELLED, error="cancelled through the trigger")
    )
    return (await _job_or_404(store, job_id)).as_dict()


@app.post(
    "/jobs/{job_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobAccepted,
    responses={**_ERRORS, 404: {"model": Problem}, 409: {"model": Problem}, 503: {"model": Problem}},
    dependencies=[Authorized],
)
async def retry_job(job_id: uuid.UUID, store: Store, settings: CurrentSettings) -> JSONResponse:
    """Resume a failed or cancelled import as a new job with the same parameters.

    A sharded import keeps its finished shards and restarts the others from their checkpoints; what
    was stored is found in place (content-addressed objects, unique scenes), so only the rest is
    uploaded. Retrying the same job again returns the same new job."""
    job = await _job_or_404(store, job_id)
    if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise HTTPException(status.HTTP_409_CONFLICT, f"only failed or cancelled jobs are retried; this one is {job.status.value}")
    try:
        params = validate_import(job.params, settings.local_dataset_root)
    except InvalidImport as exc:
        raise _unprocessable(f"the job's parameters are not valid any more: {exc}") from None
    retry = await run_in_threadpool(call_with_backoff, lambda: create_successor(store, job, params))
    return await _start(store, retry, params, settings, source="api")


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: no token needed, no secrets or dependencies revealed."""
    await asyncio.sleep(0)
    return {"status": "ok"}
