"""`hf-ingest worker`: a Prefect process worker for the `hf-ingest` pool that takes its share of the work.

A worker with no limit takes every scheduled run it is offered: the first machine to poll claimed every
shard of an import, ran more processes than it has cores, and a second machine sat idle. So this worker
runs at most `--limit` flow runs at once (Prefect's `worker start --limit`): WORKER_LIMIT, else the cores
this process may use (a shard run is one busy process). Runs over the limit stay Scheduled for the other
workers of the pool. A parent run that waits for its shards holds a slot too, but does the work of any
shard no worker has started (flows/import_shard.py), so the slot is never idle.

Beside Prefect's worker it starts a warm engine (`flows/warm_engine.py`): the imports every flow run needs,
made once, and a forked child per run, so a run's process is Running ~2 s sooner and spends no CPU on them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

WORK_POOL = "hf-ingest"
CHECKOUT = Path(__file__).resolve().parents[1]


def machine_cores() -> int:
    """The CPUs this process may run on (a container's cpuset, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_capacity() -> int:
    """The flow runs an `hf-ingest worker` runs at once by default: WORKER_LIMIT, else the machine's cores."""
    from blocks.settings import get_settings

    return get_settings().worker_limit or machine_cores()


def worker_argv(limit: int | None, name: str | None) -> list[str]:
    """The `prefect worker start` command line of an hf-ingest worker."""
    limit = limit or worker_capacity()
    argv = [str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool", WORK_POOL, "--type", "process",
            "--limit", str(limit)]
    return argv + (["--name", name] if name else [])


def start_warm_engine() -> str:
    """Start this worker's warm engine (it ends when the worker does) and give the runs its socket's path."""
    from flows.warm_engine import SOCKET_ENV

    base = tempfile.gettempdir()
    folder = tempfile.mkdtemp(prefix="hf-ingest-warm-", dir=base if len(base) <= 60 else "/tmp")  # private (0700)
    path = str(Path(folder) / "engine.sock")  # a socket's path must stay under ~100 characters
    os.environ[SOCKET_ENV] = path
    subprocess.Popen([sys.executable, "-m", "flows.warm_engine"], cwd=CHECKOUT, stdin=subprocess.DEVNULL)
    return path


def start(limit: int | None = None, name: str | None = None) -> None:
    """Become the worker (exec): signals reach Prefect's worker directly, as if it had been started by hand."""
    argv = worker_argv(limit, name)
    start_warm_engine()
    print(f"hf-ingest worker: pool {WORK_POOL}, at most {argv[argv.index('--limit') + 1]} flow runs at once",
          flush=True)
    os.execv(argv[0], argv)
