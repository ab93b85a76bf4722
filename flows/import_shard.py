"""Large imports, fanned out: the parent `hf-ingest` run plans shards and starts one `hf-ingest-shard`
child run per shard on the same work pool, so every worker of the pool, on any machine, shares one import.

The story, top to bottom:
  1. the parent plans the shards (row ranges of the split, from the parquet footers; one for itself and
     one per slot of the `shards` queue) and records them in `job_shards`; a resumed job keeps the
     shards it already finished;
  2. it starts a child run of the deployment `hf-ingest-shard/default` (work queue `shards`) for each
     unfinished shard but the first, and waits for them with Prefect's own `wait_for_flow_run`;
  3. the first it imports itself, in its own process, which has the dataset open and would otherwise
     only wait (a child run costs ~2 s before its first batch); then, while it waits, it takes any shard
     whose child run no worker has started yet (every worker busy: its slots are the machine's cores),
     so no process that holds a slot sits idle. Each attempt of a shard is taken by exactly one run: the
     first to claim it in `job_shards` (its child run, or the parent); the other lets it go;
  4. each run reads its shard's rows from the checkpoint on (a child opens the dataset at the parent's
     commit), runs the same `ingest-batch` tasks, and keeps its row in `job_shards` up to date;
  5. once its own rows are read and nothing waits for a worker, the parent takes the end of what a running
     shard has not done yet, so that both have as much left (its run reserves rows a step ahead of reading
     them; the cut is made after them), a new shard it imports itself: a child run that started late, or
     goes slower, no longer leaves the parent's core idle at the end (hf_ingest/shards.py);
  6. meanwhile the parent sums the shards into `jobs.progress` (one writer per job) and the progress
     artifact; a shard that fails (here or in a child) or whose child crashes is started again as a
     child run, and only a shard out of attempts (SHARD_ATTEMPTS) fails the job, naming the shard.
Cancelling the parent cancels its children (Prefect cancels the subflow runs of a cancelled run).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from prefect import flow
from prefect.deployments import arun_deployment
from prefect.flow_runs import wait_for_flow_run
from prefect.runtime import flow_run as current_flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from blocks.settings import get_settings
from deployments.prefect_setup import SHARD_DEPLOYMENT
from flows.import_tasks import ProgressReporter, ingest_stream, no_secrets_in_errors, open_source, run_log
from flows.platform import from_jobs_db, from_prefect, on_jobs_db
from hf_ingest import runtime
from hf_ingest.jobstore import Shard, ShardStatus
from hf_ingest.logs import install_secret_filter, redact
from hf_ingest.pipeline import ImageReader, IngestProgress, SceneSource
from hf_ingest.run_labels import run_name, run_tags
from hf_ingest.shards import RowLease, aggregate_counts, lease_step, plan_shards, rows_left, split_point
from hf_ingest.source import DatasetRequest, DatasetStream
from hf_ingest.transient import PermanentIngestError



class ShardFailed(PermanentIngestError):
    """A shard failed every attempt; the job fails with this message, naming the shard."""


def _mirror_shard_state(flow: Any, flow_run: Any, state: Any) -> None:
    """Child state hook: a failed or crashed child marks its shard, if it was the run that had taken it (the
    parent reads Prefect's state too)."""
    parameters = flow_run.parameters or {}
    if state.is_failed() or state.is_crashed():
        try:
            store = runtime.job_store()
            job_id, number = uuid.UUID(str(parameters["job_id"])), int(parameters["shard"])
            if any(s.shard == number and s.flow_run_id == str(flow_run.id) for s in store.list_shards(job_id)):
                store.update_shard(job_id, number, status=ShardStatus.FAILED,
                                   error=redact(state.message or state.type.value, get_settings().secret_values())[:2000])
        except Exception:  # noqa: BLE001 - advisory: the parent acts on the run's state in Prefect
            pass


@flow(
    name="hf-ingest-shard",
    task_runner=ThreadPoolTaskRunner(max_workers=8),
    on_failure=[_mirror_shard_state],
    on_crashed=[_mirror_shard_state],
)
async def hf_ingest_shard(
    job_id: uuid.UUID,
    shard: int,
    dataset: str,
    revision: str,
    config: str | None = None,
    split: str = "train",
    image_column: str | None = None,
    limit: int | None = None,
    attempt: int | None = None,
) -> dict[str, Any]:
    """Import one shard of a job's split (the rows `job_shards` gives it), from its checkpoint on: the shard's
    attempt `attempt`, unless its parent took that attempt first (then there is nothing to do)."""
    with no_secrets_in_errors:
        install_secret_filter(get_settings().secret_values())
        store = runtime.job_store()
        try:
            record = _shard_of(await from_jobs_db(lambda: store.list_shards(job_id)), shard)
        except StopIteration:
            raise PermanentIngestError(f"job {job_id} has no shard {shard}") from None
        if record.status is ShardStatus.COMPLETED:
            return record.counts
        claimed = await from_jobs_db(lambda: store.claim_shard(
            job_id, shard, record.attempts if attempt is None else attempt, str(current_flow_run.id)))
        if claimed is None:
            run_log().info("plan", "shard taken by another run; nothing to do", shard=shard, attempt=attempt or "-")
            return {"taken_by_another_run": True}
        request = DatasetRequest(dataset, config, split, revision, image_column, limit)
        return await import_shard_rows(job_id, claimed, await asyncio.to_thread(open_source, request))


async def import_shard_rows(job_id: uuid.UUID, record: Shard, split: DatasetStream,
                            read: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """A shard's rows of the opened `split`, from its checkpoint on, in this process (a child run, or the
    parent); its `job_shards` row says how far it got. The caller has claimed the shard. `read`: called
    (from a thread) once its rows are read, while its last batches finish."""
    settings = get_settings()
    store = runtime.job_store()
    start = record.first_row + record.checkpoint
    lease = RowLease(lambda upto: on_jobs_db(lambda: store.reserve_shard_rows(job_id, record.shard, upto)),
                     start, record.end_row, shard_lease_step(split))
    stream = split.rows_between(start, record.end_row, lease)
    progress = IngestProgress(revision=stream.revision, next_row=stream.first_row)
    _restore_counts(progress, record.counts)
    reporter = ProgressReporter(_shard_progress(job_id, record), settings.progress_interval_seconds, run_log())
    source = SceneSource.for_stream(job_id, stream, settings.public_base_url)
    reader = ImageReader.for_stream(stream, settings.max_image_pixels, settings.derivative_sizes)
    with runtime.long_lived_objects_frozen():
        await asyncio.to_thread(ingest_stream, stream, source, reader, reporter, progress, read)
    counts = progress.as_dict()
    done = (stream.end_row if stream.end_row is not None else record.end_row) - record.first_row  # less if cut
    await from_jobs_db(lambda: store.update_shard(job_id, record.shard, status=ShardStatus.COMPLETED, counts=counts,
                                                  checkpoint=done))
    return counts


def shard_lease_step(split: DatasetStream) -> int:
    """Rows a shard's run reserves at a time, and the smallest piece another run splits off (`lease_step`)."""
    settings = get_settings()
    rows = split.total_rows or 0
    return lease_step(settings.batch_size, settings.batch_max_bytes, split.bytes_of(rows) / rows if rows else 0)


def _shard_progress(job_id: uuid.UUID, record: Shard) -> Any:
    def write(progress: IngestProgress) -> None:
        runtime.job_store().update_shard(
            job_id, record.shard, counts=progress.as_dict(), checkpoint=max(0, progress.next_row - record.first_row)
        )

    return write


def _restore_counts(progress: IngestProgress, counts: dict[str, Any]) -> None:
    """A shard resumed from its checkpoint goes on counting from what its earlier attempts counted."""
    for name in ("rows_seen", "stored", "already_present", "scenes_recorded", "scenes_updated", "bytes_stored",
                 "derivatives_stored", "derivatives_backfilled", "scenes_removed"):
        setattr(progress, name, int(counts.get(name) or 0))
    progress.invalid.update(counts.get("invalid") or {})


async def import_in_shards(
    job_id: uuid.UUID, request: DatasetRequest, stream: DatasetStream, reporter: ProgressReporter, count: int,
    ranges: list[tuple[int, int]] | None = None,
) -> IngestProgress:
    """The parent's part: plan `count` shards, start a child run per unfinished one but the first, import
    that one here (and then what no worker has taken), wait for the others, sum the counts."""
    settings = get_settings()
    store = runtime.job_store()
    log = run_log()
    shards = await from_jobs_db(lambda: store.list_shards(job_id))
    if not shards:  # a resumed job already has its shards (kept as they were planned)
        planned = plan_shards(job_id, ranges if ranges is not None else [(0, stream.rows_to_read or 0)], count)
        shards = await from_jobs_db(lambda: store.add_shards(planned))
    log.info("plan", "import sharded", shards=len(shards), rows=max(s.end_row for s in shards),
             done=sum(1 for s in shards if s.status is ShardStatus.COMPLETED))
    params = {"dataset": request.dataset, "revision": stream.revision or request.revision, "config": request.config,
              "split": request.split, "image_column": request.image_column, "limit": request.limit}
    name = run_name(request.dataset, request.split, stream.revision)  # as the parent is named (a folder: no "@main")
    unfinished = [shard for shard in shards if shard.status is not ShardStatus.COMPLETED]
    runs: list[asyncio.Task[None]] = []
    started: set[int] = set()

    def start(shard: Shard, first: bool) -> asyncio.Task[None]:
        started.add(shard.shard)
        runs.append(asyncio.create_task(_run_shard(job_id, shard, params, name, settings.shard_attempts, here, first)))
        return runs[-1]

    here = ParentShare(job_id, stream, str(current_flow_run.id), start, shard_lease_step(stream))
    for n, shard in enumerate(unfinished):
        start(shard, n == 0)
    summing = asyncio.create_task(_sum_shards(job_id, reporter))
    helping = asyncio.create_task(here.take_what_waits())
    try:
        # a shard out of attempts does not stop the others: when the job says failed, nothing of it is still
        # running, and every other shard is finished (a retry runs only what failed)
        while True:
            while waiting := [run for run in runs if not run.done()]:
                await asyncio.wait(waiting)
                if all(run.done() for run in runs):
                    await here.stop(helping)  # it finishes a piece it split off first (that joins `runs`)
            # a piece whose cut was made but not answered (the jobs database went away at that moment)
            lost = [s for s in await from_jobs_db(lambda: store.list_shards(job_id))
                    if s.status is ShardStatus.PENDING and s.shard not in started]
            if not lost:
                break
            for shard in lost:
                start(shard, True)
    finally:
        summing.cancel()
        helping.cancel()
        for run in runs:
            run.cancel()  # only if the parent itself is stopped (cancelled, or its process ends)
    outcomes = [run.exception() for run in runs]
    progress = _progress_of(await from_jobs_db(lambda: store.list_shards(job_id)))
    reporter.report_now(progress)
    failures = [outcome for outcome in outcomes if outcome is not None]
    if len(failures) > 1 and isinstance(failures[0], ShardFailed):
        raise ShardFailed(f"{failures[0]} (and {len(failures) - 1} more shards failed)"[:2000]) from failures[0]
    if failures:
        raise failures[0]
    return progress


class ParentShare:
    """The parent run's own process as one more worker of its import: its first shard, then, while it waits,
    any shard whose child run no worker has taken yet. (A worker runs at most as many flow runs as its machine
    has cores, and the waiting parent holds one of them: without this, one machine would run the other shards
    one at a time beside an idle parent.) A child run still Scheduled is cancelled first; only if Prefect
    accepts (no worker took it meanwhile) does the parent claim and import its shard. With none waiting, it
    splits off the end of the running shard with the most left (`split_point`) and imports that piece
    (`start`: as a shard of its own, retried as a child run if it fails here). It goes on as soon as a shard
    of its own is read, while that shard's last batches finish (the process's MAX_IN_FLIGHT_BATCHES are
    shared): so the two runs end together, not a batch window apart."""

    def __init__(self, job_id: uuid.UUID, split: DatasetStream, run_id: str,
                 start: Callable[[Shard, bool], asyncio.Task[None]], min_piece: int) -> None:
        self.job_id = job_id
        self.split = split
        self.run_id = run_id
        self.start = start
        self.min_piece = min_piece
        self.stopping = False
        self.splitting = False  # between a cut and the end of its piece's import: not to be cancelled
        self.failed_here: set[int] = set()  # shards that failed in this process go on in child runs only
        self.waiting: dict[int, tuple[int, uuid.UUID]] = {}  # shard -> (attempt, its child run), while it runs
        self.taken: set[tuple[int, int]] = set()  # (shard, attempt) imported here instead of by its child run
        self._outcomes: dict[tuple[int, int], asyncio.Future[str | None]] = {}
        self._first_done = asyncio.Event()  # the first shard is read (its last batches may still run)
        self._read: dict[int, asyncio.Event] = {}  # pieces split off: read through

    def outcome(self, shard: int, attempt: int) -> asyncio.Future[str | None]:
        """How this process's import of the shard's attempt ended: None if it completed, else the error."""
        return self._outcomes.setdefault((shard, attempt), asyncio.get_running_loop().create_future())

    async def run(self, shard: int, attempt: int) -> str | None:
        """Claim the shard's attempt and import it here; the error, or None once it is done. Once its rows are
        read, the parent goes on to more (`take_what_waits`) while its last batches finish."""
        loop = asyncio.get_running_loop()
        done_reading = self._read.get(shard, self._first_done)

        def read() -> None:
            loop.call_soon_threadsafe(done_reading.set)

        store = runtime.job_store()
        error = None
        try:
            claimed = await from_jobs_db(lambda: store.claim_shard(self.job_id, shard, attempt, self.run_id))
            if claimed is None:
                raise PermanentIngestError(f"shard {shard}, attempt {attempt}: taken by another run")
            await import_shard_rows(self.job_id, claimed, self.split, read)
        except Exception as exc:  # noqa: BLE001 - the shard goes on in a child run, from its checkpoint
            error = redact(f"{type(exc).__name__}: {exc}", get_settings().secret_values())
            self.failed_here.add(shard)
            await from_jobs_db(lambda: store.update_shard(self.job_id, shard, status=ShardStatus.FAILED, error=error[:2000]))
        finally:
            self._first_done.set()
            done_reading.set()
        self.outcome(shard, attempt).set_result(error)
        return error

    async def take_what_waits(self, interval: float = 0.5) -> None:
        """After the first shard: import, one after the other, the shards whose child runs are still Scheduled
        (every worker busy), from the last backwards (workers take child runs in order)."""
        from prefect.client.orchestration import get_client

        await self._first_done.wait()
        async with get_client() as client:  # one client: it rides out a restart of the server (retries)
            while not self.stopping:
                waiting = {child: (shard, attempt) for shard, (attempt, child) in self.waiting.items()
                           if shard not in self.failed_here}
                unstarted = await _still_scheduled(client, list(waiting)) if waiting else []
                for child in sorted(unstarted, key=lambda run: waiting[run], reverse=True):
                    if await _cancel_if_scheduled(client, child):
                        shard, attempt = waiting[child]
                        self.taken.add((shard, attempt))
                        run_log().info("plan", "shard imported by the parent: no worker had taken its run",
                                       shard=shard)
                        await self.run(shard, attempt)
                        break
                else:
                    if not await self.split_off_and_import():
                        await asyncio.sleep(interval)

    async def split_off_and_import(self) -> bool:
        """Cut the running shard with the most left and import the piece here; whether there was one."""
        if self.stopping:
            return False
        store = runtime.job_store()
        self.splitting = True
        try:
            try:
                shards = await from_jobs_db(lambda: store.list_shards(self.job_id))
            except Exception:  # noqa: BLE001 - the jobs database is away: nothing is split now; asked again next time
                return False
            # a shard that failed before is left to its own retries: a piece of it might fail the same way
            running = [s for s in shards if s.status is ShardStatus.RUNNING and s.flow_run_id != self.run_id
                       and s.error is None]
            backlog = sum(rows_left(s) for s in shards  # this process's own (none once its rows are read)
                          if s.status is ShardStatus.RUNNING and s.flow_run_id == self.run_id)
            for shard in sorted(running, key=rows_left, reverse=True):
                at = split_point(shard, self.min_piece, backlog)
                if at is None:
                    continue
                try:
                    piece = await from_jobs_db(lambda: store.split_shard(self.job_id, shard.shard, at, shard.end_row))
                except Exception:  # noqa: BLE001 - not split (or split and found at the end: see import_in_shards)
                    return False
                if piece is None:  # its run reserved past the cut meanwhile, or finished: try again later
                    continue
                run_log().info("plan", "rest of a running shard split off, imported by the parent",
                               shard=shard.shard, piece=piece.shard, first_row=piece.first_row, end_row=piece.end_row)
                read = self._read[piece.shard] = asyncio.Event()
                importing = self.start(piece, True)  # its outcome is read with the other runs'
                self.splitting = False
                # on to the next piece once this one is read, while its last batches finish
                reading = asyncio.ensure_future(read.wait())
                await asyncio.wait([importing, reading], return_when=asyncio.FIRST_COMPLETED)
                reading.cancel()
                return True
            return False
        finally:
            self.splitting = False

    async def stop(self, helper: asyncio.Task[None]) -> None:
        """No more taking or splitting; a piece split off already is imported first."""
        self.stopping = True
        if not self.splitting:
            helper.cancel()
        try:
            await helper
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # noqa: BLE001 - it only helps; a piece it cut and did not start is found after
            run_log().warning("plan", "the parent's help with waiting shards stopped", error=f"{type(exc).__name__}: {exc}")


async def _still_scheduled(client: Any, runs: list[uuid.UUID]) -> list[uuid.UUID]:
    """Which of `runs` no worker has taken yet (Scheduled, or Late)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    try:
        found = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=runs), state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
        ))
    except Exception:  # noqa: BLE001 - Prefect unreachable: nothing is taken now; asked again next time
        return []
    return [run.id for run in found]


async def _cancel_if_scheduled(client: Any, run: uuid.UUID) -> bool:
    """Cancel a child run no worker has taken, so the parent can do its work: True if Prefect accepted (a worker
    that takes it after this finds it Cancelled and does not start it)."""
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.states import Cancelled

    try:
        result = await client.set_flow_run_state(run, Cancelled(message="its shard was imported by the parent run"))
    except Exception:  # noqa: BLE001 - not cancelled: its worker runs it
        return False
    return result.status == SetStateStatus.ACCEPT


async def _run_shard(job_id: uuid.UUID, shard: Shard, params: dict[str, Any], name: str, attempts: int,
                     here: ParentShare, first: bool = False) -> None:
    """One shard's attempts, up to `attempts` in all: the first in the parent's process if `first`, the others
    (or all) as child runs (or in the parent, if it takes them before a worker does), started again while
    they fail."""
    store = runtime.job_store()
    error = "not started"
    for attempt in range(shard.attempts + 1, shard.attempts + attempts + 1):
        await from_jobs_db(lambda: store.update_shard(job_id, shard.shard, status=ShardStatus.PENDING, attempt=True))
        if first and attempt == shard.attempts + 1:
            failure = await here.run(shard.shard, attempt)
            if failure is None:
                return
            error = failure
            run_log().warning("plan", "shard did not complete here; starting it as a child run", shard=shard.shard,
                              error=error[:500])
            continue
        child = await from_prefect(lambda: arun_deployment(  # the idempotency key makes a repeat the same run
            SHARD_DEPLOYMENT,
            parameters={**{k: v for k, v in params.items() if v is not None}, "job_id": str(job_id),
                        "shard": shard.shard, "attempt": attempt},
            flow_run_name=f"{name} #{shard.shard}",
            tags=[*run_tags(params["dataset"], "shard"), f"job:{job_id}"],
            idempotency_key=f"hf-ingest-{job_id}-shard-{shard.shard}-attempt-{attempt}",
            timeout=0,
        ))
        here.waiting[shard.shard] = (attempt, child.id)
        try:  # Prefect's wait follows events, not polls; after a restart of the server it reads the run again
            finished = await from_prefect(lambda: wait_for_flow_run(child.id, timeout=7 * 24 * 3600, log_states=False))
        finally:
            here.waiting.pop(shard.shard, None)
        if (shard.shard, attempt) in here.taken:  # the parent cancelled the child run and imports the shard itself
            failure = await here.outcome(shard.shard, attempt)
            if failure is None:
                return
            error = failure
        elif _shard_of(await from_jobs_db(lambda: store.list_shards(job_id)), shard.shard).status is ShardStatus.COMPLETED:
            return
        else:
            error = (finished.state.message if finished.state else None) or "ended without a state"
            if finished.state is not None and finished.state.is_cancelled():
                break  # cancelled (with its parent): not a failure to retry
        run_log().warning("plan", "shard run did not complete; starting it again", shard=shard.shard,
                          attempt=attempt, state=finished.state.type.value if finished.state else "-")
    await from_jobs_db(lambda: store.update_shard(job_id, shard.shard, status=ShardStatus.FAILED, error=error[:2000]))
    raise ShardFailed(f"{shard.describe()} failed after {attempts} attempts: {error}"[:2000])


def _shard_of(shards: list[Shard], number: int) -> Shard:
    return next(s for s in shards if s.shard == number)


async def _sum_shards(job_id: uuid.UUID, reporter: ProgressReporter) -> None:
    """The parent is the job's one writer: it sums the shards' counts into `jobs.progress` as they move."""
    store = runtime.job_store()
    while True:
        await asyncio.sleep(max(1.0, reporter.interval))
        try:
            shards = await asyncio.to_thread(store.list_shards, job_id)
            await asyncio.to_thread(reporter.report_now, _progress_of(shards))
        except Exception:  # noqa: BLE001 - progress is advisory; the final counts are written at the end
            continue


def _progress_of(shards: list[Shard]) -> IngestProgress:
    counts = aggregate_counts(shards)
    progress = IngestProgress(revision=counts.get("revision"))  # type: ignore[arg-type]
    _restore_counts(progress, counts)
    progress.failed = int(counts.get("failed") or 0)  # type: ignore[call-overload]
    progress.shards = (int(counts["shards_done"]), int(counts["shards_total"]))  # type: ignore[call-overload]
    return progress

