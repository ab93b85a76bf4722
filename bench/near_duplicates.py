"""Near-duplicate grouping of 1,000,000 scenes in PostgreSQL: the pass an import ends with (read the split's
hashes, group, write what changed), timed on its own, with how many planted copies it found.

The scenes are written first with PostgreSQL's COPY (not timed): random 64-bit pHashes, as different
photos have, plus 10,000 copies planted at 0-10 bits from an earlier scene."""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any

import numpy as np
import psutil

from bench.scale import postgres
from hf_ingest.jobstore import SplitKey
from hf_ingest.jobstore.sql import SqlJobStore, make_engine
from hf_ingest.near_duplicates import regroup
from tests.test_jobstore_sql import _fresh_database

SPLIT = SplitKey("bench/near-duplicates", "default", "train", "image")


def planted_hashes(n: int, copies: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[int, tuple[int, int]]]:
    """n random hashes; `copies` of them replaced by a copy of an earlier row at 0-10 bits."""
    halves = rng.integers(0, 2**32, size=(n, 2), dtype=np.uint64)
    hashes = (halves[:, 0] << np.uint64(32)) | halves[:, 1]
    planted: dict[int, tuple[int, int]] = {}
    targets = rng.choice(np.arange(n // 2, n), copies, replace=False)
    for i, row in enumerate(targets.tolist()):
        source = int(rng.integers(0, n // 2))
        distance = i % 11
        value = int(hashes[source])
        for bit in rng.choice(64, distance, replace=False).tolist():
            value ^= 1 << bit
        hashes[row] = np.uint64(value)
        planted[row] = (source, distance)
    return hashes, planted


def write_scenes(url: str, hashes: np.ndarray) -> None:
    store = SqlJobStore.from_url(url)  # makes the tables
    job_id = uuid.uuid4()
    store.create_job(job_id, {"dataset": SPLIT.dataset})
    raw = store.engine.raw_connection()
    try:
        with raw.cursor() as cursor, cursor.copy(  # type: ignore[attr-defined]
            "copy scenes (id, job_id, dataset, config, split, image_column, row_index, object_key, url, sha256, "
            "content_type, width, height, bytes, metadata, created_at, phash) from stdin"
        ) as copy:
            buffer = io.StringIO()
            for row, value in enumerate(hashes.tolist()):
                buffer.write(f"{uuid.uuid4()}\t{job_id}\t{SPLIT.dataset}\tdefault\ttrain\timage\t{row}\tk{row}\tu{row}\t"
                             f"s{row}\timage/jpeg\t1\t1\t1\t{{}}\t2026-12-02T00:00:00Z\t{value:016x}\n")
                if buffer.tell() > 8 << 20:
                    copy.write(buffer.getvalue())
                    buffer = io.StringIO()
            copy.write(buffer.getvalue())
        raw.commit()
    finally:
        raw.close()
    store.engine.dispose()


def measure(n: int = 1_000_000, copies: int = 10_000, max_distance: int = 10) -> dict[str, Any]:
    rng = np.random.default_rng(2026)
    hashes, planted = planted_hashes(n, copies, rng)
    with postgres() as admin:
        url = _fresh_database(admin)
        write_scenes(url, hashes)
        store = SqlJobStore.from_url(url)
        started = time.perf_counter()
        duplicates = regroup(store, SPLIT, max_distance)
        seconds = time.perf_counter() - started
        again = time.perf_counter()
        regroup(store, SPLIT, max_distance)  # nothing changed: read and group, write nothing
        unchanged_seconds = time.perf_counter() - again
        with make_engine(url).connect() as conn:
            first_of = dict(conn.exec_driver_sql(
                "select s.row_index, f.row_index from scenes s join scenes f on f.id = s.duplicate_of").all())
        store.engine.dispose()
    found = {d: 0 for d in range(max_distance + 1)}
    for row, (source, distance) in planted.items():
        root = source
        while root in first_of:
            root = first_of[root]
        if first_of.get(row) == root or first_of.get(row) == first_of.get(source, source):
            found[distance] += 1
    per_distance = {d: found[d] / max(1, sum(1 for s, dd in planted.values() if dd == d)) for d in found}
    return {"scenes": n, "seconds": seconds, "unchanged_seconds": unchanged_seconds, "duplicates": duplicates,
            "planted": copies, "found_by_distance": {d: round(r, 3) for d, r in per_distance.items()},
            "cores": psutil.cpu_count()}


def main() -> int:
    result = measure()
    print(f"near-duplicate grouping of {result['scenes']:,} scenes in PostgreSQL ({result['cores']} cores): "
          f"{result['seconds']:.1f} s (read, group, write); again with nothing changed {result['unchanged_seconds']:.1f} s; "
          f"{result['duplicates']:,} duplicates; planted copies found by distance {result['found_by_distance']}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
