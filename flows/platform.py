"""The flows' calls to the services every run depends on, the Prefect API and the jobs database, made so
that a restart of either (seconds to a minute: an upgrade, a Prefect Cloud blip, PostgreSQL restarting)
makes the run wait and go on instead of failing. After OUTAGE_SECONDS without an answer the run fails,
naming what was unreachable; `POST /jobs/{id}/retry` then resumes it from its checkpoints."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from blocks.settings import get_settings
from hf_ingest.backoff import acall_through_outage, call_through_outage

T = TypeVar("T")


def prefect_api_name() -> str:
    from prefect.settings import PREFECT_API_URL

    return f"the Prefect API ({PREFECT_API_URL.value() or 'a temporary local server'})"


def on_jobs_db(call: Callable[[], T], budget: float | None = None) -> T:
    """A call of the jobs store, waiting out a restart of the database (OUTAGE_SECONDS, or `budget`)."""
    return call_through_outage(call, "the jobs database", get_settings().outage_seconds if budget is None else budget)


async def from_jobs_db(call: Callable[[], T], budget: float | None = None) -> T:
    """`on_jobs_db`, in a thread (from a flow's event loop)."""
    return await asyncio.to_thread(on_jobs_db, call, budget)


async def from_prefect(call: Callable[[], Awaitable[T]]) -> T:
    """A call of the Prefect API (made again from the start after a failure), waiting out a restart of the server."""
    return await acall_through_outage(call, prefect_api_name(), get_settings().outage_seconds)
