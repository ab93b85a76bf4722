"""Starting and cancelling runs of the `hf-ingest/default` deployment through the Prefect API."""

from __future__ import annotations

import uuid
from typing import Any

from prefect.client.orchestration import get_client
from prefect.deployments import arun_deployment
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL
from prefect.states import Cancelling

DEPLOYMENT = "hf-ingest/default"


class PrefectUnavailable(RuntimeError):
    """The run could not be started or changed; the message says why, for the job row and the 503."""


def _describe(exc: BaseException) -> str:
    url = PREFECT_API_URL.value() or "(PREFECT_API_URL unset)"
    if isinstance(exc, ObjectNotFound):
        return f"deployment {DEPLOYMENT!r} not found on the Prefect server at {url}; run `make up` or `prefect deploy`"
    return f"Prefect API unreachable at {url}: {type(exc).__name__}: {exc}"[:500]


async def start_flow_run(job_id: uuid.UUID, params: dict[str, Any]) -> str:
    """Create a flow run for the job (idempotent per job) and return its id without waiting for it."""
    if not PREFECT_API_URL.value():
        raise PrefectUnavailable("PREFECT_API_URL is not set; the trigger needs a Prefect server (make up)")
    try:
        flow_run = await arun_deployment(
            DEPLOYMENT,
            parameters={**{k: v for k, v in params.items() if v is not None}, "job_id": str(job_id)},
            timeout=0,
            idempotency_key=f"hf-ingest-job-{job_id}",
            as_subflow=False,
        )
    except Exception as exc:  # noqa: BLE001 - every failure here means "Prefect could not take the run"
        raise PrefectUnavailable(_describe(exc)) from exc
    return str(flow_run.id)


async def cancel_flow_run(flow_run_id: str) -> None:
    """Ask Prefect to cancel the run; a worker stops its process, a scheduled run never starts."""
    try:
        async with get_client() as client:
            await client.set_flow_run_state(uuid.UUID(flow_run_id), Cancelling(message="cancelled through the trigger"))
    except Exception as exc:  # noqa: BLE001
        raise PrefectUnavailable(_describe(exc)) from exc
