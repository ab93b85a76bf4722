"""Starting and cancelling runs of the `hf-ingest/default` deployment through the Prefect API."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from prefect.client.orchestration import get_client
from prefect.deployments import arun_deployment
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL
from prefect.states import Cancelling

from hf_ingest.run_labels import run_name, run_tags

DEPLOYMENT = "hf-ingest/default"


class PrefectUnavailable(RuntimeError):
    """The run could not be started or changed; the message says why, for the job row and the 503."""


def _describe(exc: BaseException) -> str:
    url = PREFECT_API_URL.value() or "(PREFECT_API_URL unset)"
    if isinstance(exc, ObjectNotFound):
        return f"deployment {DEPLOYMENT!r} not found on the Prefect server at {url}; run `make up` or `prefect deploy`"
    return f"Prefect API unreachable at {url}: {type(exc).__name__}: {exc}"[:500]


async def start_flow_run(job_id: uuid.UUID, params: dict[str, Any], source: str = "api") -> str:
    """Create a flow run for the job (idempotent per job) and return its id without waiting for it.

    The run is named after its dataset, split and revision and tagged with the dataset and `source`
    (api, webhook, reconciler), so an operator finds it in the Prefect UI."""
    if not PREFECT_API_URL.value():
        raise PrefectUnavailable("PREFECT_API_URL is not set; the trigger needs a Prefect server (make up)")
    try:
        flow_run = await arun_deployment(
            DEPLOYMENT,
            parameters={**{k: v for k, v in params.items() if v is not None}, "job_id": str(job_id)},
            flow_run_name=run_name(params["dataset"], params.get("split") or "train", params.get("revision")),
            tags=run_tags(params["dataset"], source),
            timeout=0,
            idempotency_key=f"hf-ingest-job-{job_id}",
            as_subflow=False,
        )
    except Exception as exc:  # noqa: BLE001 - every failure here means "Prefect could not take the run"
        raise PrefectUnavailable(_describe(exc)) from exc
    return str(flow_run.id)


@dataclass(frozen=True)
class CancelOutcome:
    cancelled: bool  # Prefect accepted: the run is cancelling (a worker stops it) or cancelled
    state_name: str  # the run's state after the request, as Prefect names it


async def cancel_flow_run(flow_run_id: str) -> CancelOutcome:
    """Ask Prefect to cancel the run and report what it answered: a run that already ended stays as it was."""
    from prefect.client.schemas.responses import SetStateStatus

    try:
        async with get_client() as client:
            result = await client.set_flow_run_state(
                uuid.UUID(flow_run_id), Cancelling(message="cancelled through the trigger")
            )
            state = result.state or (await client.read_flow_run(uuid.UUID(flow_run_id))).state
    except Exception as exc:  # noqa: BLE001
        raise PrefectUnavailable(_describe(exc)) from exc
    accepted = result.status is SetStateStatus.ACCEPT and state is not None and (state.is_cancelling() or state.is_cancelled())
    return CancelOutcome(accepted, state.name if state is not None else "unknown")
