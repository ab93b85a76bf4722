"""What orchestration costs once a process is up: the raw loop and the flow, alternating in ONE
process that has already imported Prefect, each run on a fresh database and object store.

`hf-ingest run` pays Prefect's start-up (import, first API clients, the engine's first run) once per
process; this separates that fixed cost from what the flow adds per image. Usage:
python -m bench.warm DATASET WARMUP_DATASET REPEAT (against PREFECT_API_URL; run by bench.run,
which sets up the stack); prints JSON with every run's seconds.
"""

from __future__ import annotations

from hf_ingest.fast_exit import exit_after_cleanup  # first, as in the CLI

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from bench import raw
from bench.measure import scratch_dir, wait_until_quiet
from deployments.stack import Stack
from flows.import_dataset import hf_ingest
from hf_ingest import runtime


def run_flow(dataset: str) -> dict[str, float]:
    progress = asyncio.run(hf_ingest(dataset=dataset))
    return {"images": progress["scenes_recorded"], "bytes": progress["bytes_stored"]}


def timed(work: Callable[[str], dict[str, float]], dataset: str, settle: Callable[[], None]) -> dict[str, float]:
    """One run on its own database and object store, started on a quiet stack with no dirty pages;
    `work` returns images and bytes (the raw loop its own seconds too, replaced by the same clock as the flow's)."""
    scratch = scratch_dir("warm-")  # kept until the bench ends: deleting it would slow the next run
    os.environ.update(DATABASE_URL=f"sqlite:///{scratch / 'db.sqlite'}", STORAGE_URL=str(scratch / "objects"))
    runtime.reset()
    os.sync()
    settle()
    started = time.perf_counter()
    result = work(dataset)
    return {**result, "seconds": time.perf_counter() - started}


def main(dataset: str, warmup_dataset: str, repeat: int) -> dict[str, Any]:
    settle = partial(wait_until_quiet, Stack.from_env())
    kinds: dict[str, Callable[[str], dict[str, float]]] = {"raw": raw.main, "flow": run_flow}
    for work in kinds.values():  # first calls import datasets, open clients, build caches: not measured
        timed(work, warmup_dataset, settle)
    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    for _ in range(repeat):
        for kind, work in kinds.items():
            runs[kind].append(timed(work, dataset, settle))
    return runs


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
    exit_after_cleanup(0)
