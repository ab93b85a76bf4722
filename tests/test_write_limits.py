"""Deployment runs take Prefect's global write limits around each batch's writes (on a real Prefect server):
one slot of each while it writes, waiting while they are all taken, renewed while a batch takes long."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator

import pytest

from deployments.prefect_setup import WRITE_LIMITS
from flows.import_tasks import _write_gate
from flows.write_slots import WriteSlots
from hf_ingest import runtime
from hf_ingest.pipeline import ImageReader, SceneSource, ingest_batch
from hf_ingest.sample import write_sample_dataset
from hf_ingest.source import DatasetRequest, open_dataset


async def _active_slots() -> dict[str, int]:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return {name: (await client.read_global_concurrency_limit_by_name(name)).active_slots for name in WRITE_LIMITS}


@pytest.fixture
def write_limits(prefect_api: str) -> Iterator[None]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    async def create() -> None:
        async with get_client() as client:
            for name in WRITE_LIMITS:
                try:
                    await client.delete_global_concurrency_limit_by_name(name)
                except Exception:  # noqa: BLE001 - not there yet
                    pass
                await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=2))

    asyncio.run(create())
    yield


def test_a_deployment_runs_batch_holds_a_slot_of_each_write_limit_while_it_writes(
    write_limits: None, isolated_settings: Path
) -> None:
    stream = open_dataset(DatasetRequest(str(write_sample_dataset(isolated_settings / "sample"))))
    job_id = uuid.uuid4()
    runtime.job_store().create_job(job_id, {"dataset": "sample"})
    seen: list[dict[str, int]] = []
    gate = _write_gate(True)

    @contextmanager
    def watched_gate() -> Iterator[Any]:
        with gate():
            seen.append(asyncio.run(_active_slots()))
            yield

    rows = next(stream.batches(100, 2**26))
    outcome = ingest_batch(rows, SceneSource.for_stream(job_id, stream), ImageReader.for_stream(stream, 10**8),
                           runtime.object_store(), runtime.job_store(), watched_gate)
    assert outcome.stored == 24 and outcome.scenes_recorded == 24
    assert seen == [{name: 1 for name in WRITE_LIMITS}]  # held while it wrote, one slot of each
    assert asyncio.run(_active_slots()) == {name: 0 for name in WRITE_LIMITS}  # and given back


def test_an_in_process_run_takes_no_slot(write_limits: None) -> None:
    with _write_gate(False)():
        assert asyncio.run(_active_slots()) == {name: 0 for name in WRITE_LIMITS}


def test_a_batch_waits_while_every_slot_is_taken_and_goes_on_when_one_is_given_back(write_limits: None) -> None:
    slots = WriteSlots(list(WRITE_LIMITS))
    entered, done = threading.Event(), threading.Event()

    def third_batch() -> None:
        with slots.held():
            entered.set()
            done.wait(60)

    with slots.held(), slots.held():  # the limits' 2 slots
        waiting = threading.Thread(target=third_batch)
        started = time.monotonic()
        waiting.start()
        assert not entered.wait(1.5)  # the server answered 423: it waits, it does not write
    assert entered.wait(60) and time.monotonic() - started >= 1.5
    assert asyncio.run(_active_slots()) == {name: 1 for name in WRITE_LIMITS}  # the third batch holds its slot now
    done.set()
    waiting.join(10)
    assert asyncio.run(_active_slots()) == {name: 0 for name in WRITE_LIMITS}


def test_a_lease_held_past_a_third_of_its_duration_is_renewed_on_the_server(
    write_limits: None, caplog: pytest.LogCaptureFixture
) -> None:
    from prefect.client.orchestration import get_client

    renewals: list[int] = []

    class CountingClient:
        """The real client; renewals counted by the status the server answered."""

        def __init__(self) -> None:
            self.client = get_client(sync_client=True).__enter__()

        def __getattr__(self, name: str) -> Any:
            return getattr(self.client, name)

        def renew_concurrency_lease(self, **kwargs: Any) -> Any:
            renewals.append(self.client.renew_concurrency_lease(**kwargs).status_code)

    client = CountingClient()
    slots = WriteSlots(list(WRITE_LIMITS), client=lambda: nullcontext(client), renew_every=0.4)
    with caplog.at_level(logging.WARNING, logger="hf_ingest.write_slots"), slots.held():
        time.sleep(1.5)
        assert asyncio.run(_active_slots()) == {name: 1 for name in WRITE_LIMITS}
    assert len(renewals) >= 2 and set(renewals) == {204}
    assert not caplog.records
    count = len(renewals)
    time.sleep(1.0)
    assert len(renewals) == count  # a lease given back is not renewed
