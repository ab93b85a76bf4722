"""`make bench`: hf-ingest against its baselines, all measured in this one run on this machine.

Prints a table and, last, one line of JSON with the same figures. Every import runs as a
separate process, as a user runs it, with a fresh database and object store.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench import near_duplicates, sync
from bench.datasets import ensure, ensure_imagefolder, ensure_mixed_photos, ensure_photos
from bench.measure import (
    BIN, DATA, SCRATCH, SECRET, check_free_space, fresh_stack, measure_group, remove_scratch, run_import, wait_until_quiet, with_rates,
)
from bench.scale import LARGE, PHOTOS, SMALL, defaults_report, defaults_rows, scale_report, scale_rows, scratch_gib
from deployments.stack import CHECKOUT, Stack, down, remove_state, up



def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median time, plus every run's time and the highest peak RSS of them all."""
    middle = sorted(runs, key=lambda m: m["seconds"])[len(runs) // 2]
    return {**middle, "peak_rss_mb": max(m["peak_rss_mb"] for m in runs),
            "all_seconds": [round(m["seconds"], 2) for m in runs]}


def repeated(
    kinds: list[str], dataset: Path, env: dict[str, str], settle: Callable[[], None], repeat: int
) -> dict[str, dict[str, Any]]:
    """Each kind `repeat` times, interleaved (raw, flow, raw, flow, ...), so drift hits both alike."""
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    for _ in range(repeat):
        for kind in kinds:
            runs[kind].append(run_import(kind, dataset, env, settle))
    return {kind: median_run(r) for kind, r in runs.items()}


def warm_runs(dataset: Path, warmup: Path, env: dict[str, str], settle: Callable[[], None], repeat: int
              ) -> dict[str, dict[str, Any]]:
    """Raw loop and flow alternating in one process that has Prefect imported (`bench/warm.py`):
    what the flow costs per run and per image, without the per-process start-up."""
    argv = [str(BIN / "python"), "-m", "bench.warm", str(dataset), str(warmup), str(repeat)]
    process = measure_group([argv], env, settle)
    runs = json.loads(process["stdouts"][0].strip().splitlines()[-1])
    for run in (run for kind_runs in runs.values() for run in kind_runs):
        with_rates(run)["peak_rss_mb"] = process["peak_rss_mb"]  # one process ran them all
    return {kind: median_run(kind_runs) for kind, kind_runs in runs.items()}


def trigger_latency(stack: Stack, runs: int = 20) -> list[float]:
    """POST → job `running`, as the app sees it through GET /jobs/{id}, on a quiet stack after one warm-up job."""
    headers = {"Authorization": f"Bearer {SECRET}"}
    latencies = []
    wait_until_quiet(stack)
    with httpx.Client(base_url=stack.trigger_url, headers=headers, timeout=60) as client:
        for attempt in range(runs + 1):
            started = time.perf_counter()
            job = client.post("/process-huggingface", json={"dataset": "small-5000", "limit": 1}).json()
            while client.get(f"/jobs/{job['job_id']}").json()["status"] == "queued":
                time.sleep(0.05)
            if attempt:  # the first job warms the worker and the server's caches
                latencies.append(time.perf_counter() - started)
            while client.get(f"/jobs/{job['job_id']}").json()["status"] == "running":
                time.sleep(0.1)
    return latencies


def hub_import(dataset: Path, env: dict[str, str], settle: Callable[[], None]) -> dict[str, Any]:
    """`hf-ingest run bench/<name>` through the tests' Hub-API server (olah), as a Hub id is imported."""
    from tests.hub_server import HubServer

    hub = HubServer().start()
    try:
        repo = f"bench/{dataset.name}"
        hub.publish(repo, dataset)
        return run_import("flow", repo, {**env, **hub.env()}, settle)
    finally:
        hub.stop()


def burst_and_sequence(stack: Stack, count: int = 40) -> dict[str, float]:
    """`count` tiny imports posted at once, then the same `count` one after another, on the same stack:
    imports per minute each way, and POST → running for the imports the burst could start at once."""
    from concurrent.futures import ThreadPoolExecutor

    headers = {"Authorization": f"Bearer {SECRET}"}
    body = lambda i: {"dataset": "small-1000", "limit": 1 + i % 5}  # noqa: E731

    def wait(client: httpx.Client, job_id: str, statuses: set[str]) -> None:
        while client.get(f"/jobs/{job_id}").json()["status"] not in statuses:
            time.sleep(0.1)

    wait_until_quiet(stack)
    with httpx.Client(base_url=stack.trigger_url, headers=headers, timeout=60) as client:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=count) as pool:
            jobs = list(pool.map(lambda i: (time.perf_counter(), client.post("/process-huggingface", json=body(i)).json()),
                                 range(count)))
        to_running = []
        for posted, job in jobs:
            wait(client, job["job_id"], {"running", "completed", "failed"})
            to_running.append(time.perf_counter() - posted)
        for _, job in jobs:
            wait(client, job["job_id"], {"completed", "failed"})
        burst = time.perf_counter() - started
        wait_until_quiet(stack)
        started = time.perf_counter()
        for i in range(count):
            job = client.post("/process-huggingface", json=body(i)).json()
            wait(client, job["job_id"], {"completed", "failed"})
        sequence = time.perf_counter() - started
    first = sorted(to_running)[:4]  # the import concurrency: these start at once
    return {"burst_per_min": 60 * count / burst, "sequence_per_min": 60 * count / sequence,
            "burst_seconds": burst, "sequence_seconds": sequence, "first_to_running_p95_s": max(first)}


def s3_rows(datasets: dict[str, Path], env: dict[str, str], settle: Callable[[], None]) -> dict[str, Any]:
    """The same imports into a local folder and into S3 on SeaweedFS (a Go server: the client's cost
    shows, where moto's ~35 ms PUTs hid it), with each upload engine, and behind 50 ms of latency.

    SeaweedFS runs on this machine, so its own CPU per PUT shares the cores with the import: it is
    measured too (`server_cpu_seconds`)."""
    from tests.fault_proxy import FaultProxy
    from tests.seaweed_server import SeaweedServer

    server = SeaweedServer().start()
    weed = psutil.Process(server.process.pid)  # type: ignore[union-attr]
    rows: dict[str, Any] = {}

    def s3_import(name: str, dataset: Path, engine: str, endpoint: str | None = None) -> dict[str, Any]:
        bucket = f"bench-{name.replace('_', '-')}-{int(time.time())}"
        server.create_bucket(bucket)
        s3_env = {**env, **server.env(bucket), "S3_CLIENT": engine}
        if endpoint:
            s3_env["S3_ENDPOINT_URL"] = endpoint
        before = sum(weed.cpu_times()[:2])
        run = run_import("flow", dataset, s3_env, settle, s3_env["STORAGE_URL"])
        run["server_cpu_seconds"] = sum(weed.cpu_times()[:2]) - before
        return run

    try:
        small, mixed = datasets["small-20000"], datasets["mixed-2000"]
        local_runs: list[dict[str, Any]] = []
        s3_runs: list[dict[str, Any]] = []
        for round_ in range(int(os.environ.get("BENCH_S3_REPEAT", 3))):  # interleaved: drift hits both alike
            local_runs.append(run_import("flow", small, env, settle))
            s3_runs.append(s3_import(f"obstore_20k_{round_}", small, "obstore"))
        rows["flow_local_20k"], rows["flow_s3_20k"] = by_median_cpu(local_runs), by_median_cpu(s3_runs)
        rows["flow_s3fs_20k"] = s3_import("s3fs_20k", small, "s3fs")
        rows["flow_local_mixed"] = run_import("flow", mixed, env, settle)
        rows["flow_s3_mixed"] = s3_import("obstore_mixed", mixed, "obstore")
        for latency in (0.0, 0.05):
            proxy = FaultProxy(server.s3_port, latency_seconds=latency).start()
            try:
                rows[f"flow_s3_proxy_{int(latency * 1000)}ms"] = s3_import(
                    f"proxy_{int(latency * 1000)}", datasets["small-5000"], "obstore", proxy.url
                )
            finally:
                proxy.stop()
    finally:
        server.stop()
    return rows


def derivative_rows(datasets: dict[str, Path], env: dict[str, str], settle: Callable[[], None]) -> dict[str, Any]:
    """Derivatives on (the default) against DERIVATIVES=false, interleaved in turns (off-on, on-off, ...: a
    drift over the runs hits both alike), the median of 3 each (of 2, `median_run` took the slower one, and two
    runs here vary by more than the change being measured): the photos (0.2-1.5 MB, where the
    reduced-scale decode pays for the encodes) and small images (96x64: their own thumbnails, so only the
    placeholder and the pHash are made; 200,000 of them in 8 files, the issue's size: the pass at the end
    that groups near-duplicates grows with it). The small runs' files are kept until the bench ends
    (deleting 20,000 files slowed the next run by up to 2.5 s: `scratch_dir`); the photos' are not."""
    rows: dict[str, Any] = {}
    off = {**env, "DERIVATIVES": "false"}
    for name, dataset in (("photos", datasets["mixed-2000"]), ("small", datasets[SMALL])):
        runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
        for turn in range(int(os.environ.get("BENCH_DERIVATIVES_REPEAT", 3))):
            for mode in ("off", "on") if turn % 2 == 0 else ("on", "off"):
                runs[mode].append(run_import("flow", dataset, off if mode == "off" else env, settle,
                                             keep=name == "small"))
        rows[f"derivatives_{name}_on"], rows[f"derivatives_{name}_off"] = median_run(runs["on"]), median_run(runs["off"])
    return rows


def derivative_targets(rows: dict[str, Any], grouping: dict[str, Any]) -> list[tuple[str, bool, str]]:
    photos = rows["derivatives_photos_on"]["mb_per_s"] / rows["derivatives_photos_off"]["mb_per_s"]
    small = rows["derivatives_small_on"]["images_per_s"] / rows["derivatives_small_off"]["images_per_s"]
    return [
        ("2000 photos 0.2-1.5 MB: derivatives on >= 0.87x the MB/s of DERIVATIVES=false", photos >= 0.87,
         f"{photos:.2f}x ({rows['derivatives_photos_on']['all_seconds']} s vs "
         f"{rows['derivatives_photos_off']['all_seconds']} s; peak RSS {rows['derivatives_photos_on']['peak_rss_mb']:.0f} MB)"),
        ("200000 small in 8 files: derivatives on >= 0.85x the images/s of DERIVATIVES=false", small >= 0.85,
         f"{small:.2f}x ({rows['derivatives_small_on']['all_seconds']} s vs {rows['derivatives_small_off']['all_seconds']} s)"),
        (f"near-duplicate grouping of {grouping['scenes']:,} scenes (PostgreSQL, {grouping['cores']} cores) < 60 s",
         grouping["seconds"] < 60,
         f"{grouping['seconds']:.1f} s; planted copies found by distance {grouping['found_by_distance']}"),
    ]


def by_median_cpu(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median CPU time, with every run's CPU and time: a local import's CPU varies by
    seconds from run to run (the kernel's page-cache and writeback work for 20,000 new files)."""
    middle = sorted(runs, key=lambda m: m["cpu_seconds"])[len(runs) // 2]
    return {**middle, "all_cpu_seconds": [round(m["cpu_seconds"], 2) for m in runs],
            "all_seconds": [round(m["seconds"], 2) for m in runs]}


def main() -> int:
    small_n = int(os.environ.get("BENCH_SMALL", 50_000))
    subsets = {  # BENCH_ONLY: a few rows, and the datasets they read
        "derivatives": (measure_derivatives, ("mixed-2000", SMALL)),
        "s3": (measure_s3, ("small-5000", "small-20000", "mixed-2000")),
        "sync": (measure_sync, ()),  # its Hub dataset is its own (bench/sync.py)
        "defaults": (measure_defaults, (SMALL,)),
    }
    if (subset := subsets.get(os.environ.get("BENCH_ONLY", ""))) is not None:  # runs' folders removed as below
        measure, names = subset
        makers = {"small-5000": lambda: ensure(DATA, "small-5000", 5_000),
                  "small-20000": lambda: ensure(DATA, "small-20000", 20_000),
                  "mixed-2000": lambda: ensure_mixed_photos(DATA, "mixed-2000", 2_000),
                  SMALL: lambda: ensure(DATA, SMALL, 200_000, files=8, first=10**6)}
        try:
            return measure({name: makers[name]() for name in names})
        finally:
            remove_scratch()
    datasets = {
        "small-1000": ensure(DATA, "small-1000", 1_000),
        "small-5000": ensure(DATA, "small-5000", 5_000),
        f"small-{small_n}": ensure(DATA, f"small-{small_n}", small_n),
        "large-200": ensure(DATA, "large-200", 200),
        "photos-400": ensure_photos(DATA, "photos-400", 400),
        "folder-2000": ensure_imagefolder(DATA, "folder-2000", 2_000),
        "small-20000": ensure(DATA, "small-20000", 20_000),
        "mixed-2000": ensure_mixed_photos(DATA, "mixed-2000", 2_000),
        "small-50000": ensure(DATA, "small-50000", 50_000),
        SMALL: ensure(DATA, SMALL, 200_000, files=8, first=10**6),  # no image of the others
        LARGE: ensure(DATA, LARGE, 1_000_000, files=16, first=2 * 10**6),
        PHOTOS: ensure_mixed_photos(DATA, PHOTOS, 6_000, files=8),
    }
    if SCRATCH.exists():  # a bench that was stopped left its runs' folders
        print(f"removing {SCRATCH} left by an earlier bench (the first runs may be slowed by it: see bench/measure.py)")
        remove_scratch()
    check_free_space(scratch_gib() + (0 if os.environ.get("BENCH_ONLY") == "scale" else MAIN_SCRATCH_GIB))
    try:
        return measure_all(datasets, small_n)
    finally:
        remove_scratch()


MAIN_SCRATCH_GIB = 16  # the main table's kept runs: ~1,800,000 small files (4 KiB blocks each) and the photos


@contextmanager
def bench_stack() -> Iterator[tuple[Stack, dict[str, str], Callable[[], None]]]:
    """The bench's own stack, up: the stack, the environment its imports run in, and how to wait for it to
    be quiet; down and its Prefect database removed afterwards (~400 MB under /tmp, not read again)."""
    bench_environment()
    stack = fresh_stack()
    up(stack)
    try:
        yield stack, {**stack.env(), "PREFECT_API_URL": stack.api_url}, partial(wait_until_quiet, stack)
    finally:
        down(stack)
        remove_state(stack)


def measure_s3(datasets: dict[str, Path]) -> int:
    """`BENCH_ONLY=s3`: the S3 rows alone (a few minutes): the client's CPU and speed against a local folder."""
    with bench_stack() as (_, env, settle):
        rows = s3_rows(datasets, env, settle)
    for name in ("flow_local_20k", "flow_s3_20k", "flow_s3fs_20k"):
        run = rows[name]
        print(f"{name}: {run['seconds']:.1f} s, CPU {1000 * run['cpu_seconds'] / run['images']:.3f} ms per image "
              f"(runs: {run.get('all_cpu_seconds', [round(run['cpu_seconds'], 2)])} s)")
    print(f"S3 - local: {client_cpu_ms(rows['flow_s3_20k'], rows['flow_local_20k']):+.3f} ms per image (obstore), "
          f"{client_cpu_ms(rows['flow_s3fs_20k'], rows['flow_local_20k']):+.3f} (s3fs); SeaweedFS "
          f"{1000 * rows['flow_s3_20k']['server_cpu_seconds'] / rows['flow_s3_20k']['images']:.3f} ms per PUT")
    print(json.dumps({"runs": _rounded(rows)}))
    return 0


def measure_derivatives(datasets: dict[str, Path]) -> int:
    """`BENCH_ONLY=derivatives`: derivatives on against off, and near-duplicate grouping at 1,000,000 scenes."""
    with bench_stack() as (_, env, settle):
        rows = derivative_rows(datasets, env, settle)
    grouping = near_duplicates.measure()
    print_targets(derivative_targets(rows, grouping))
    print(json.dumps({"runs": _rounded(rows), "near_duplicates": grouping}))
    return 0


def measure_defaults(datasets: dict[str, Path]) -> int:
    """`BENCH_ONLY=defaults`: `make up`'s defaults against the raw limit on 200,000 small images (a few minutes
    a round)."""
    bench_environment()
    rows = defaults_rows(datasets)
    print_targets(defaults_report(rows))
    print(json.dumps({"defaults": {name: [_rounded_run(run) for run in runs] for name, runs in rows["runs"].items()},
                      "pairs": rows["pairs"]}))
    return 0


def measure_sync(datasets: dict[str, Path]) -> int:
    """`BENCH_ONLY=sync`: a Hub dataset kept current over four commits (bench/sync.py)."""
    with bench_stack() as (_, env, settle):
        runs = sync.measure(env, settle)
    print_targets(sync.targets(runs))
    print(json.dumps({"runs": _rounded(runs)}))
    return 0


def bench_environment() -> None:
    """The bench's own stack (ports, state, store and database beside the checkout's other data)."""
    os.environ.update(
        HF_INGEST_STATE_DIR=str(CHECKOUT / ".data" / "bench-stack"),
        PREFECT_PORT=os.environ.get("BENCH_PREFECT_PORT", "4310"),
        TRIGGER_PORT=os.environ.get("BENCH_TRIGGER_PORT", "8110"),
        WEBHOOK_SECRET=SECRET,
        LOCAL_DATASET_ROOT=str(DATA),
        DATABASE_URL=f"sqlite:///{CHECKOUT / '.data' / 'bench-stack' / 'jobs.db'}",
        STORAGE_URL=str(CHECKOUT / ".data" / "bench-stack" / "objects"),
    )


def measure_all(datasets: dict[str, Path], small_n: int) -> int:
    bench_environment()
    if os.environ.get("BENCH_ONLY") == "scale":  # the scale table alone (a few minutes, not the whole bench)
        scale = scale_rows(datasets)
        targets = scale_report(scale)
        print_targets(targets)
        print(json.dumps({"scale": _rounded(scale)}))
        return 0
    results: dict[str, Any] = {}
    with bench_stack() as (stack, env, settle):
        big = datasets[f"small-{small_n}"]
        small = repeated(["raw", "flow", "floor"], big, env, settle, int(os.environ.get("BENCH_REPEAT", 5)))
        results["raw_small"], results["flow_small"], results["floor"] = small["raw"], small["flow"], small["floor"]
        warm = warm_runs(big, datasets["small-1000"], env, settle, int(os.environ.get("BENCH_WARM_REPEAT", 5)))
        results["raw_warm"], results["flow_warm"] = warm["raw"], warm["flow"]
        results["flow_5k"] = run_import("flow", datasets["small-5000"], env, settle)
        results["naive_5k"] = run_import("naive", datasets["small-5000"], env, settle)
        results["raw_large"] = run_import("raw", datasets["large-200"], env, settle)
        results["flow_large"] = run_import("flow", datasets["large-200"], env, settle)
        results["flow_photos"] = run_import("flow", datasets["photos-400"], env, settle)
        results["flow_folder"] = run_import("flow", datasets["folder-2000"], env, settle)
        results["flow_photos_hub"] = hub_import(datasets["photos-400"], env, settle)
        results.update(s3_rows(datasets, env, settle))
        results.update(derivative_rows(datasets, env, settle))
        results.update(sync.measure(env, settle))
        latencies = trigger_latency(stack)
        burst = burst_and_sequence(stack)
    scale = scale_rows(datasets)
    grouping = near_duplicates.measure()
    report(results, latencies, burst, small_n, scale, grouping)
    return 0


def print_targets(targets: list[tuple[str, bool, str]]) -> None:
    print()
    for name, ok, value in targets:
        print(f"{'PASS' if ok else 'MISS'}  {name}: {value}")


def _rounded(runs: dict[str, Any]) -> dict[str, Any]:
    return {k: (_rounded_run(v) if isinstance(v, dict) else v) for k, v in runs.items()}


def _rounded_run(run: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in run.items() if k != "stdout"}


def client_cpu_ms(s3: dict[str, Any], local: dict[str, Any]) -> float:
    """The import's own CPU per object that writing to S3 adds to writing to a local folder (ms)."""
    return 1000 * (s3["cpu_seconds"] - local["cpu_seconds"]) / max(1, s3["images"])


def report(
    r: dict[str, Any], latencies: list[float], burst: dict[str, float], small_n: int, scale: dict[str, Any],
    grouping: dict[str, Any],
) -> None:
    p50 = statistics.median(latencies)
    p95 = sorted(latencies)[max(0, int(round(0.95 * len(latencies))) - 1)]
    rows = [
        (f"raw limit, {small_n} small, local", r["raw_small"]),
        (f"flow (hf-ingest run), {small_n} small, local", r["flow_small"]),
        (f"raw loop, {small_n} small, in a warm process", r["raw_warm"]),
        (f"flow, {small_n} small, same warm process", r["flow_warm"]),
        ("flow, 5000 small, local", r["flow_5k"]),
        ("naive: one task per image, 5000 small", r["naive_5k"]),
        ("raw limit, 200 large (1600x1200), local", r["raw_large"]),
        ("flow, 200 large, local", r["flow_large"]),
        ("flow, 400 photos (~1.4 MB) in one parquet file", r["flow_photos"]),
        ("flow, the same 400 photos from the Hub (olah)", r["flow_photos_hub"]),
        ("flow, imagefolder of 2000 files (~1.2 MB)", r["flow_folder"]),
        ("flow, 20000 small, local", r["flow_local_20k"]),
        ("flow, 20000 small, S3 (SeaweedFS), obstore", r["flow_s3_20k"]),
        ("flow, 20000 small, S3 (SeaweedFS), s3fs", r["flow_s3fs_20k"]),
        ("flow, 2000 photos 0.2-1.5 MB, local", r["flow_local_mixed"]),
        ("flow, 2000 photos 0.2-1.5 MB, S3 (SeaweedFS), obstore", r["flow_s3_mixed"]),
        ("flow, 2000 photos, derivatives on (default)", r["derivatives_photos_on"]),
        ("flow, 2000 photos, DERIVATIVES=false", r["derivatives_photos_off"]),
        ("flow, 200000 small in 8 files, derivatives on (default)", r["derivatives_small_on"]),
        ("flow, 200000 small in 8 files, DERIVATIVES=false", r["derivatives_small_off"]),
        ("flow, 5000 small, S3 via proxy, +0 ms", r["flow_s3_proxy_0ms"]),
        ("flow, 5000 small, S3 via proxy, +50 ms a request", r["flow_s3_proxy_50ms"]),
    ]
    print(f"\nhf-ingest benchmark on {platform.node()}: {psutil.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}\n")
    print(f"{'run':56} {'images':>7} {'s':>7} {'img/s':>8} {'MB/s':>7} {'peak RSS MB':>12}")
    for name, m in rows:
        if "all_seconds" in m:
            name = f"{name} (median of {len(m['all_seconds'])})"
        print(f"{name:56} {m['images']:>7} {m['seconds']:>7.1f} {m['images_per_s']:>8.0f} {m['mb_per_s']:>7.2f} "
              f"{m['peak_rss_mb']:>12.0f}")
    floor = r["floor"]["seconds"]
    print(f"\n40 tiny imports posted at once: {burst['burst_per_min']:.1f} imports/min ({burst['burst_seconds']:.0f} s); "
          f"the same one after another: {burst['sequence_per_min']:.1f} imports/min ({burst['sequence_seconds']:.0f} s); "
          f"POST -> running for the first 4 of the burst: at most {burst['first_to_running_p95_s']:.2f} s")
    print(f"\nPrefect's floor (an empty flow run in a new process): {floor:.1f} s; flow - raw - floor on "
          f"{small_n} images: {r['flow_small']['seconds'] - r['raw_small']['seconds'] - floor:+.1f} s")
    budget = 0.1 * r["raw_small"]["seconds"]
    print(f"In one warm process the flow runs at {r['raw_warm']['seconds'] / r['flow_warm']['seconds']:.2f}x the raw loop; "
          f"the 0.9x target leaves {budget:.1f} s (10 % of raw) for all orchestration, the floor alone takes {floor:.1f} s")
    figures = {
        "flow_vs_raw_small": r["flow_small"]["images_per_s"] / r["raw_small"]["images_per_s"],
        "flow_vs_raw_warm": r["raw_warm"]["seconds"] / r["flow_warm"]["seconds"],
        "flow_vs_naive": r["flow_5k"]["images_per_s"] / r["naive_5k"]["images_per_s"],
        "flow_vs_raw_large": r["flow_large"]["mb_per_s"] / r["raw_large"]["mb_per_s"],
        "s3_vs_local_small": r["flow_s3_20k"]["images_per_s"] / r["flow_local_20k"]["images_per_s"],
        "s3_vs_local_mixed_mb": r["flow_s3_mixed"]["mb_per_s"] / r["flow_local_mixed"]["mb_per_s"],
        "s3_50ms_vs_0ms": r["flow_s3_proxy_50ms"]["images_per_s"] / r["flow_s3_proxy_0ms"]["images_per_s"],
        "client_cpu_ms_per_object_obstore": client_cpu_ms(r["flow_s3_20k"], r["flow_local_20k"]),
        "client_cpu_ms_per_object_s3fs": client_cpu_ms(r["flow_s3fs_20k"], r["flow_local_20k"]),
        "server_cpu_ms_per_put": 1000 * r["flow_s3_20k"]["server_cpu_seconds"] / r["flow_s3_20k"]["images"],
        # both fill the pipeline (MAX_IN_FLIGHT_BATCHES of BATCH_SIZE=8192 rows); 5,000 rows are less than one batch
        "rss_big_vs_20k": r["flow_small"]["peak_rss_mb"] / r["flow_local_20k"]["peak_rss_mb"],
        "prefect_floor_s": floor,
        "trigger_to_running_p50_s": p50,
        "trigger_to_running_p95_s": p95,
    }
    targets = [
        # issue 14: Prefect's per-process start-up is reported apart (the floor), the flow's per-run and
        # per-image cost is judged in one warm process, and throughput on amortized imports (the scale rows)
        ("flow >= 0.9x the raw loop in one warm process (per-run and per-image cost)",
         figures["flow_vs_raw_warm"] >= 0.9,
         f"{figures['flow_vs_raw_warm']:.2f}x (end to end, start-up {floor:.1f} s included: "
         f"{figures['flow_vs_raw_small']:.2f}x)"),
        ("flow >= 5x naive per-image design", figures["flow_vs_naive"] >= 5, f"{figures['flow_vs_naive']:.1f}x"),
        (f"peak RSS at {small_n} <= 1.15x at 20000 (one file each)", figures["rss_big_vs_20k"] <= 1.15,
         f"{figures['rss_big_vs_20k']:.2f}x"),
        ("peak RSS, 400 photos in one parquet file <= 800 MB", r["flow_photos"]["peak_rss_mb"] <= 800,
         f"{r['flow_photos']['peak_rss_mb']:.0f} MB"),
        ("peak RSS, the same from the Hub <= 800 MB", r["flow_photos_hub"]["peak_rss_mb"] <= 800,
         f"{r['flow_photos_hub']['peak_rss_mb']:.0f} MB"),
        ("peak RSS, 2000-file imagefolder (~1.2 MB each) <= 800 MB", r["flow_folder"]["peak_rss_mb"] <= 800,
         f"{r['flow_folder']['peak_rss_mb']:.0f} MB"),
        ("POST -> running p95 <= 5 s", p95 <= 5, f"p50 {p50:.2f} s, p95 {p95:.2f} s"),
        ("20000 small to S3 (SeaweedFS) >= 0.9x local", figures["s3_vs_local_small"] >= 0.9,
         f"{figures['s3_vs_local_small']:.2f}x (client CPU per object: obstore "
         f"{figures['client_cpu_ms_per_object_obstore']:.2f} ms, s3fs {figures['client_cpu_ms_per_object_s3fs']:.2f} ms; "
         f"SeaweedFS on the same cores: {figures['server_cpu_ms_per_put']:.2f} ms per PUT)"),
        ("a whole import's own CPU: S3 - local <= 0.15 ms per image (20000 small, obstore)",
         figures["client_cpu_ms_per_object_obstore"] <= 0.15,
         f"{figures['client_cpu_ms_per_object_obstore']:+.3f} ms (per image: S3 "
         f"{1000 * r['flow_s3_20k']['cpu_seconds'] / r['flow_s3_20k']['images']:.3f} ms, local "
         f"{1000 * r['flow_local_20k']['cpu_seconds'] / r['flow_local_20k']['images']:.3f} ms, medians of "
         f"{r['flow_s3_20k']['all_cpu_seconds']} and {r['flow_local_20k']['all_cpu_seconds']} s; wall "
         f"{figures['s3_vs_local_small']:.2f}x, bound by SeaweedFS's CPU on the same cores)"),
        ("2000 photos to S3: MB/s >= 0.9x local", figures["s3_vs_local_mixed_mb"] >= 0.9,
         f"{figures['s3_vs_local_mixed_mb']:.2f}x"),
        ("S3 with +50 ms a request >= 0.8x without", figures["s3_50ms_vs_0ms"] >= 0.8, f"{figures['s3_50ms_vs_0ms']:.2f}x"),
        ("a burst of 40 imports >= 1/1.5 of their rate one after another",
         burst["burst_per_min"] >= burst["sequence_per_min"] / 1.5,
         f"{burst['burst_per_min']:.1f} vs {burst['sequence_per_min']:.1f} imports/min"),
    ]
    targets += scale_report(scale)
    targets += derivative_targets(r, grouping)
    targets += sync.targets(r)
    print_targets(targets)
    print(json.dumps({"runs": _rounded(r), "scale": _rounded(scale), "near_duplicates": grouping, "ratios": {k: round(v, 3) for k, v in figures.items()},
                      "latencies_s": [round(x, 3) for x in latencies],
                      "burst": {k: round(v, 3) for k, v in burst.items()}}))


if __name__ == "__main__":
    raise SystemExit(main())
