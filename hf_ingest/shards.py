"""Planning a sharded import: the split's rows cut into contiguous pieces, one child run each.

A shard is a row range [first_row, end_row) of the split as the stream reads it (files in order,
rows in order), so a row keeps its identity (`row_index`) however the import is cut. The rows come
from the parquet footers (read once when the dataset is opened), never from reading the data twice.

How many: one per process that can work on the import at once (the parent's own and the `shards`
queue's slots), so every shard starts at once and none waits for a slot to free: each shard costs a
run's start-up (~2 s here), and a second round of shards would pay it again while a slot idles. Fewer
when the split is too small to give every shard SHARD_ROWS rows or SHARD_BYTES of data (large photos
are worth sharing out long before their row count is), and never more than MAX_SHARDS: tens of child
runs for an import, not thousands (the Prefect server struggles past a few thousand runs at once).

Shards are cut even, but their runs do not start together (a child run starts seconds after its parent)
nor go at one speed. A run that has read all of its own (the parent) takes the end of what another has not
done yet, so that both have as much left (`split_point`): the other run reads no row it has not reserved
(`RowLease`, a step ahead of reading), and the cut is made only after what it reserved, so no row is read
twice or left unread.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Callable, Sequence

from hf_ingest.jobstore import Shard


def shard_count(rows: int, data_bytes: int, shard_rows: int, shard_bytes: int, max_shards: int, slots: int) -> int:
    """How many shards an import of `rows` rows and about `data_bytes` bytes is cut into (1: not sharded),
    with `slots` processes to run them at once."""
    worth = max(rows // shard_rows, data_bytes // shard_bytes)  # shards of at least SHARD_ROWS or SHARD_BYTES
    return max(1, min(max_shards, rows, slots, worth))


def plan_shards(job_id: uuid.UUID, ranges: Sequence[tuple[int, int]], count: int) -> list[Shard]:
    """About `count` shards of the rows of `ranges` (the whole split `[(0, rows)]`, or the files a sync reads),
    as even as can be; a shard never spans two ranges (it is one contiguous row range)."""
    rows = sum(end - first for first, end in ranges)
    count = max(1, min(count, rows))
    size = math.ceil(rows / count) if rows else 0
    shards: list[Shard] = []
    for first, end in ranges:
        for start in range(first, end, max(1, size)):
            shards.append(Shard(job_id=job_id, shard=len(shards), first_row=start, end_row=min(end, start + size)))
    return shards or [Shard(job_id=job_id, shard=0, first_row=0, end_row=0)]


def aggregate_counts(shards: list[Shard]) -> dict[str, object]:
    """The job's `progress` from its shards' counts, with shards done/total."""
    totals: Counter[str] = Counter()
    invalid: Counter[str] = Counter()
    revision = None
    for shard in shards:
        for name, value in shard.counts.items():
            if name == "invalid":
                invalid.update(value or {})
            elif name == "revision":
                revision = revision or value
            elif isinstance(value, int):
                totals[name] += value
    done = sum(1 for shard in shards if shard.status.value == "completed")
    return {
        **{name: totals.get(name, 0) for name in ("rows_seen", "stored", "already_present")},
        "invalid": dict(sorted(invalid.items())),
        "invalid_total": sum(invalid.values()),
        **{name: totals.get(name, 0) for name in ("failed", "scenes_recorded", "scenes_updated", "bytes_stored",
                                                   "derivatives_stored", "derivatives_backfilled",
                                                   "scenes_removed")},
        "revision": revision,
        "shards_done": done,
        "shards_total": len(shards),
    }


def child_slots(queue_limit: int, online_workers: int, runs_per_worker: int, sized_by_operator: bool) -> int:
    """How many child runs an import plans beside its parent: the `shards` queue's limit, and, unless the
    operator sized that limit, no more than the online workers can run with the parent running too
    (more would run in rounds). With no worker known (Prefect could not say), the queue's limit."""
    if sized_by_operator or online_workers <= 0:
        return queue_limit
    return max(0, min(queue_limit, online_workers * runs_per_worker - 1))


class RowLease:
    """A shard run's hold on its rows, a `step` ahead of reading: `lease(n)` reserves up to row n (in
    `job_shards`, through `reserve`) and returns how far the run may read; less than n once another run has
    taken the shard's rest."""

    def __init__(self, reserve: Callable[[int], int], first_row: int, end_row: int, step: int) -> None:
        self.reserve = reserve
        self.granted = first_row  # the run may read up to here without asking again
        self.end_row = end_row  # the shard's end as far as this run knows
        self.step = max(1, step)

    def __call__(self, upto: int) -> int:
        if upto > self.granted and self.granted < self.end_row:
            wanted = min(self.end_row, max(upto, self.granted + self.step))
            self.granted = max(self.granted, self.reserve(wanted))
            if self.granted < wanted:  # the rest went to another run
                self.end_row = self.granted
        return self.granted


def rows_left(shard: Shard) -> int:
    """The rows of a running shard that its run has not reserved yet: what a cut can still take. Rows reserved
    and in flight are not counted. Late in a shard they are small batches, nearly done when the parent cuts,
    while the checkpoint lags them by a progress interval (counting even half of them, the parent's piece ended
    2-3 s after the child). A cut that takes too little is followed by another, but one that takes too much
    cannot be undone."""
    held = shard.reserved_row if shard.reserved_row is not None else shard.first_row
    return shard.end_row - max(held, shard.first_row + shard.checkpoint)


def split_point(shard: Shard, min_rows: int, backlog: int = 0) -> int | None:
    """Where a run cuts a running `shard` to take its rest, with `backlog` rows of its own still to do
    (`rows_left` of its shards): so that both have about as many left, never before what the shard's run has
    reserved; None if the piece would be under `min_rows` (not worth one)."""
    left = rows_left(shard)
    at = max(shard.end_row - left, shard.end_row - (left - backlog) // 2, shard.first_row + 1)
    return at if shard.end_row - at >= max(1, min_rows) else None


def lease_step(batch_size: int, batch_max_bytes: int, bytes_per_row: float) -> int:
    """A run's lease step, and the smallest piece worth splitting off: a quarter of a batch's rows (a batch of
    large images closes at `batch_max_bytes`). Small: when the parent's rows are read, the child's piece to
    take is a few seconds of work, and its run holds a step more than it has read."""
    rows = batch_size if bytes_per_row <= 0 else min(batch_size, int(batch_max_bytes // bytes_per_row))
    return max(1, rows // 4)
