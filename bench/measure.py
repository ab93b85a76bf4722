"""How the benchmark runs and times imports: wall time, CPU, and the peak RSS of each process tree."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from deployments.stack import CHECKOUT, Stack, remove_state, running_pids

BIN = Path(sys.executable).parent
DATA = CHECKOUT / ".data" / "bench"
SCRATCH = CHECKOUT / ".data" / "bench-scratch"
SECRET = "bench-webhook-secret"


def scratch_dir(prefix: str) -> Path:
    """A folder for one run's database and objects, kept until the bench ends (`remove_scratch`).

    Deleting a run's 200,000 files right after it slowed the runs that came next: this machine's ext4 has
    no journal, and allocating an inode then skips every inode freed in the last 60 s (300 s while its
    inode table block is dirty), reading its block each time (the kernel's `recently_deleted()`): the same
    raw import's system time rose from 16 s to 51 s over runs that each followed a deletion (measured with
    perf: `find_inode_bit`, `recently_deleted`, `find_get_block_common`)."""
    SCRATCH.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=SCRATCH))


def check_free_space(needed_gib: float) -> None:
    """Stop before measuring, not 40 minutes in, when the disk cannot hold what the bench keeps: every
    run's objects stay until the end (`scratch_dir`), and a full disk fails an import half way (a
    bench with 52 GB free did, in its last scale round)."""
    DATA.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(DATA).free / 2**30
    if free < needed_gib:
        raise SystemExit(f"the bench keeps every run's files until it ends and needs ~{needed_gib:.0f} GiB free "
                         f"in {DATA.parent}; {free:.0f} GiB are (fewer BENCH_SCALE_ROUNDS need less)")


def fresh_stack() -> Stack:
    """The stack of the environment's state dir with nothing left from before: an earlier bench killed
    mid-import left a shard run `Running` in the stack's Prefect database, which held one of the
    `shards` queue's slots through the whole next bench (its child runs then ran one at a time)."""
    stack = Stack.from_env()
    remove_state(stack)
    return stack


def remove_scratch() -> None:
    """The runs' folders, once nothing is measured any more."""
    shutil.rmtree(SCRATCH, ignore_errors=True)


class PeakRss:
    """The peak RSS (MB) of each of some process trees (a process and all its children), sampled every
    50 ms in a thread while the block runs: an import process, or a worker and its flow-run processes."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = {name: psutil.Process(pid) for name, pid in roots.items()}
        self.peaks: dict[str, float] = {name: 0.0 for name in roots}
        self.process_peak = 0.0  # the largest single process seen in any tree
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            for name, root in self.roots.items():
                try:
                    sizes = [p.memory_info().rss / 2**20 for p in [root, *root.children(recursive=True)]]
                except psutil.Error:
                    continue
                self.peaks[name] = max(self.peaks[name], sum(sizes))
                self.process_peak = max(self.process_peak, *sizes)
            self._stop.wait(0.05)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()


def measure_group(argvs: list[list[str]], env: dict[str, str], settle: Callable[[], None]) -> dict[str, Any]:
    """Run processes all at once; wall time until the last one ends, their CPU, the highest peak RSS
    of any one of them (its process tree), and each one's stdout.

    The previous run must not land on this one: its dirty pages are flushed (their writeback
    otherwise costs whichever run comes next ±15 % here on 20,000-file runs), and `settle` waits
    until the Prefect server has digested its events and logs."""
    os.sync()
    settle()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    processes = [subprocess.Popen(argv, cwd=CHECKOUT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                 for argv in argvs]
    with PeakRss({str(i): p.pid for i, p in enumerate(processes)}) as rss:
        outputs = [p.communicate()[0].decode() for p in processes]
    seconds = time.perf_counter() - started
    for argv, process in zip(argvs, processes):
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({process.returncode})")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the imports, once they have been waited for
    cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    return {"seconds": seconds, "peak_rss_mb": max(rss.peaks.values()), "cpu_seconds": cpu, "stdouts": outputs}


def run_import(
    kind: str, dataset: Path | str, base_env: dict[str, str], settle: Callable[[], None], storage: str | None = None,
    database: str | None = None, parts: int = 1, rows: int = 0, keep: bool = True,
) -> dict[str, Any]:
    """One import of `kind` (raw, flow, naive, floor) into a fresh store and database (SQLite unless
    `database` is given); a raw import in `parts` processes at once, each over its part of the `rows`.
    Its folder is kept until the bench ends (`scratch_dir`), unless `keep` is false: a run of a few
    thousand large photos costs the next runs nothing measurable to delete, and gigabytes to keep."""
    scratch = scratch_dir("run-")
    env = {**base_env, "DATABASE_URL": database or f"sqlite:///{scratch / 'db.sqlite'}"}
    env["STORAGE_URL"] = storage or str(scratch / "objects")
    argv = {
        "raw": [str(BIN / "python"), "-m", "bench.raw", str(dataset)],
        "flow": [str(BIN / "hf-ingest"), "run", str(dataset)],
        "naive": [str(BIN / "python"), "-m", "bench.naive", str(dataset)],
        "floor": [str(BIN / "python"), "-m", "bench.floor", str(dataset)],
    }[kind]
    argvs = [argv] if parts == 1 else [
        [*argv, str(rows * part // parts), str(rows * (part + 1) // parts)] for part in range(parts)
    ]
    if kind == "raw" and parts > 1:  # the part that starts the split groups it once the others are done
        env.update(BENCH_RAW_PARTS_DIR=str(scratch / "parts"), BENCH_RAW_PARTS=str(parts))
        (scratch / "parts").mkdir()
    try:
        result = measure_group(argvs, env, settle)
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
    stdouts = result.pop("stdouts")
    result["stdout"] = stdouts[0]
    if kind == "flow":
        progress = json.loads(result["stdout"])["progress"]
        result["images"], result["bytes"] = progress["scenes_recorded"], progress["bytes_stored"]
    else:
        outs = [json.loads(out.strip().splitlines()[-1]) for out in stdouts]
        result["images"], result["bytes"] = sum(o["images"] for o in outs), sum(o.get("bytes", 0) for o in outs)
        result["group_seconds"] = max(o.get("group_seconds", 0.0) for o in outs)
    return with_rates(result)


def tree_cpu(root: psutil.Process) -> float:
    """CPU seconds of a process and every process under it, with the children each of them has waited for
    (a worker's ended flow runs; a warm engine's ended forks): each ended process is counted once, in the
    process that waited for it."""
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += sum(process.cpu_times()[:4])  # user, system, children_user, children_system
        except psutil.Error:  # ended meanwhile: counted with its parent's children once waited for
            pass
    return total


def with_rates(run: dict[str, Any]) -> dict[str, Any]:
    """`run` (images, bytes, seconds) with its images/s and MB/s."""
    run.update(images_per_s=run["images"] / run["seconds"], mb_per_s=run["bytes"] / 2**20 / run["seconds"])
    return run


def wait_until_quiet(stack: Stack, timeout: float = 60) -> None:
    """Until the stack's processes use < 15 % of a core (idle, the worker's polls take ~10 %): the
    server digests a run's events and logs for a while after it."""
    processes = [psutil.Process(pid) for pid in running_pids(stack)]
    processes += [c for p in list(processes) for c in p.children(recursive=True)]
    deadline = time.monotonic() + timeout

    def busy() -> float:
        total = 0.0
        for process in processes:
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
        return total

    while time.monotonic() < deadline:
        before = busy()
        time.sleep(2)
        if busy() - before < 0.3:
            return
