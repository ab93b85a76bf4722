"""`hf-ingest setup-prefect`: everything hf-ingest needs on a Prefect server or Prefect Cloud, in one
idempotent command (`make up` runs it; run it again after changing any of it).

1. the process work pool `hf-ingest`;
2. the deployments of prefect.yaml, pointing at this checkout and its Python (HF_INGEST_HOME,
   HF_INGEST_PYTHON default to them) and sending heartbeats every HF_INGEST_HEARTBEAT_SECONDS (30);
3. the work queues' concurrency limits: IMPORT_CONCURRENCY (4) imports at once on `default`, and
   SHARD_CONCURRENCY (4) shard runs at once on `shards` (size it to the workers' cores); runs over a
   limit stay Scheduled, unoffered to workers, and cost nothing while they wait;
4. the block types of `blocks/` (R2 bucket, Supabase credentials);
5. (HF_INGEST_ZOMBIE_SECONDS, 6 heartbeats by default: how long a run may stay silent before the
   zombie automation crashes it; a run cannot beat while the server is down, so this also bounds how long
   an outage of the Prefect server may last before live runs are taken for dead: ~2 minutes by default)
6. the global concurrency limits `hf-ingest-database-writes` (DATABASE_WRITE_CONCURRENCY, 8) and
   `hf-ingest-object-writes` (OBJECT_WRITE_CONCURRENCY, 16): a batch of a deployment run holds a slot
   of each while it writes its objects and scenes, so the smaller bounds the batches writing at once
   across all workers, and twenty workers do not flatten a Supabase instance or an R2 bucket;
7. the zombie automation, scoped to these deployments (deployments/automations.py).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from deployments.automations import register
from deployments.flow_runs import DEPLOYMENT
from deployments.worker import worker_capacity
from hf_ingest.shards import child_slots

CHECKOUT = Path(__file__).resolve().parents[1]
WORK_POOL = "hf-ingest"
QUEUES = {"default": "IMPORT_CONCURRENCY", "shards": "SHARD_CONCURRENCY"}
SHARD_DEPLOYMENT = "hf-ingest-shard/default"
WRITE_LIMITS = {"hf-ingest-database-writes": "DATABASE_WRITE_CONCURRENCY", "hf-ingest-object-writes": "OBJECT_WRITE_CONCURRENCY"}
# A run's heartbeats are lost while the server is down, and after a restart the server judges the silence at once:
# silence = the heartbeat before the outage (up to one interval) + the outage + the next one (one interval). Six
# intervals of 30 s leave an outage of up to ~2 minutes (a restart, an upgrade); three took live runs for dead
# after a 60 s restart.
ZOMBIE_HEARTBEATS = 6
DEFAULTS = {"IMPORT_CONCURRENCY": 4, "SHARD_CONCURRENCY": 4, "DATABASE_WRITE_CONCURRENCY": 8, "OBJECT_WRITE_CONCURRENCY": 16}


def _prefect(*args: str, env: dict[str, str]) -> str:
    prefect = Path(sys.executable).parent / "prefect"
    result = subprocess.run([str(prefect), *args], cwd=CHECKOUT, env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise SystemExit(f"`prefect {' '.join(args)}` failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout


async def _limits_and_deployment_ids(env: dict[str, str]) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        for queue_name, variable in QUEUES.items():
            try:
                queue = await client.read_work_queue_by_name(queue_name, work_pool_name=WORK_POOL)
            except ObjectNotFound:
                queue = await client.create_work_queue(queue_name, work_pool_name=WORK_POOL)
            await client.update_work_queue(queue.id, concurrency_limit=_number(env, variable))
        for name, variable in WRITE_LIMITS.items():
            limit = _number(env, variable)
            try:
                await client.read_global_concurrency_limit_by_name(name)
                await client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=limit, active=True))
            except ObjectNotFound:
                await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
        return [str((await client.read_deployment_by_name(name)).id) for name in (DEPLOYMENT, SHARD_DEPLOYMENT)]


def _number(env: dict[str, str], variable: str) -> int:
    return int(env.get(variable, DEFAULTS[variable]))


async def shard_slots() -> int:
    """How many shard runs can run at once beside the parent: the `shards` queue's concurrency limit, as
    `setup-prefect` set it (SHARD_CONCURRENCY if the queue has none or Prefect cannot say). Where the
    operator did not size SHARD_CONCURRENCY, also no more than the pool's online workers can run besides
    the parent run itself: each `hf-ingest worker` runs WORKER_LIMIT flow runs, by default its machine's
    cores (this machine's count stands for every one's). More shards than that run in rounds, each
    paying a child run's start-up, the last ones late: `make up`'s one worker on 2 cores cut 200,000 rows
    into 4 shards for 2 processes (0.70x the raw limit)."""
    from prefect.client.orchestration import get_client

    limit = _number(dict(os.environ), "SHARD_CONCURRENCY")
    try:
        async with get_client() as client:
            queue = await client.read_work_queue_by_name("shards", work_pool_name=WORK_POOL)
            workers = await client.read_workers_for_work_pool(WORK_POOL)
        if queue.concurrency_limit:
            limit = int(queue.concurrency_limit)
        online = sum(1 for worker in workers if str(worker.status.value).upper() == "ONLINE")
    except Exception:  # noqa: BLE001 - planning goes on with the configured value
        return limit
    return child_slots(limit, online, worker_capacity(), sized_by_operator="SHARD_CONCURRENCY" in os.environ)


def main() -> int:
    env = dict(os.environ)
    env.setdefault("HF_INGEST_HOME", str(CHECKOUT))
    env.setdefault("HF_INGEST_PYTHON", sys.executable)
    env.setdefault("HF_INGEST_HEARTBEAT_SECONDS", "30")
    heartbeat = int(env["HF_INGEST_HEARTBEAT_SECONDS"])
    if heartbeat < 30:
        raise SystemExit("HF_INGEST_HEARTBEAT_SECONDS must be at least 30 (Prefect's minimum heartbeat interval)")

    _prefect("work-pool", "create", WORK_POOL, "--type", "process", "--overwrite", env=env)
    _prefect("--no-prompt", "deploy", "--all", env=env)
    _prefect("block", "register", "-m", "blocks.prefect_blocks", env=env)
    silence = int(env.get("HF_INGEST_ZOMBIE_SECONDS", ZOMBIE_HEARTBEATS * heartbeat))
    if silence <= heartbeat:
        raise SystemExit("HF_INGEST_ZOMBIE_SECONDS must be longer than HF_INGEST_HEARTBEAT_SECONDS")
    deployment_ids = asyncio.run(_limits_and_deployment_ids(env))
    automation = register(silence, deployment_ids)
    print(f"work pool       {WORK_POOL}: at most {_number(env, 'IMPORT_CONCURRENCY')} imports and "
          f"{_number(env, 'SHARD_CONCURRENCY')} shard runs at once")
    print(f"deployments     {DEPLOYMENT}, {SHARD_DEPLOYMENT} from {env['HF_INGEST_HOME']}, heartbeats every {heartbeat} s")
    print(f"automation      {automation.name!r} for these deployments only: {silence} s without a heartbeat")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
