"""The retry policy every hf-ingest task declares: exponential backoff with jitter, transient errors only."""

from __future__ import annotations

from typing import Any

from prefect.tasks import exponential_backoff

from hf_ingest.transient import is_transient


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry network/5xx/throttling failures, fail fast on anything else."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            state.result(raise_on_failure=True)
        except BaseException as raised:  # noqa: BLE001 - we only classify it
            exc = raised
    return exc is not None and is_transient(exc)


TRANSIENT_RETRIES: dict[str, Any] = {
    "retries": 4,
    "retry_delay_seconds": exponential_backoff(backoff_factor=1),  # 1, 2, 4, 8 s
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_if_transient,
}
