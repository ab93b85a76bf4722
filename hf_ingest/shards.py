"""Planning a sharded import: the split's rows cut into contiguous pieces, one child run each.

A shard is a row range [first_row, end_row) of the split as the stream reads it (files in order,
rows in order), so a row keeps its identity (`row_index`) however the import is cut. The rows come
from the parquet footers (read once when the dataset is opened), never from reading the data twice.
A shard holds at most about SHARD_ROWS rows and SHARD_BYTES of data (large photos are worth
sharing out long before their row count is), and there are never more than MAX_SHARDS of them:
tens of child runs for a large import, not thousands (the Prefect server struggles past a few
thousand runs at once).
"""

from __future__ import annotations

import math
import uuid
from collections import Counter

from hf_ingest.jobstore import Shard


def shard_count(rows: int, data_bytes: int, shard_rows: int, shard_bytes: int, max_shards: int) -> int:
    """How many shards an import of `rows` rows and about `data_bytes` bytes is cut into (1: not sharded)."""
    wanted = max(math.ceil(rows / shard_rows), math.ceil(data_bytes / shard_bytes))
    return max(1, min(max_shards, rows, wanted))


def plan_shards(job_id: uuid.UUID, rows: int, count: int) -> list[Shard]:
    """`count` shards of an import of `rows` rows, as even as can be."""
    count = max(1, min(count, rows))
    size = math.ceil(rows / count) if rows else 0
    shards = []
    for index in range(count):
        first = index * size
        end = min(rows, first + size)
        if first < end or index == 0:
            shards.append(Shard(job_id=job_id, shard=index, first_row=first, end_row=end))
    return shards


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
        **{name: totals.get(name, 0) for name in ("failed", "scenes_recorded", "scenes_updated", "bytes_stored")},
        "revision": revision,
        "shards_done": done,
        "shards_total": len(shards),
    }
