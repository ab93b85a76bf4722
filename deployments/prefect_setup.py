"""`hf-ingest setup-prefect`: everything hf-ingest needs on a Prefect server or Prefect Cloud, in one
idempotent command (`make up` runs it; run it again after changing any of it).

1. the process work pool `hf-ingest`;
2. the deployments of prefect.yaml, pointing at this checkout and its Python (HF_INGEST_HOME,
   HF_INGEST_PYTHON default to them) and sending heartbeats every HF_INGEST_HEARTBEAT_SECONDS (30);
3. the work queue's concurrency limit, IMPORT_CONCURRENCY (4): imports over it stay Scheduled,
   unoffered to workers, and cost nothing while they wait;
4. the block types of `blocks/` (R2 bucket, Supabase credentials);
5. the zombie automation, scoped to these deployments (deployments/automations.py).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from deployments.automations import register
from deployments.flow_runs import DEPLOYMENT

CHECKOUT = Path(__file__).resolve().parents[1]
WORK_POOL = "hf-ingest"
WORK_QUEUE = "default"


def _prefect(*args: str, env: dict[str, str]) -> str:
    prefect = Path(sys.executable).parent / "prefect"
    result = subprocess.run([str(prefect), *args], cwd=CHECKOUT, env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise SystemExit(f"`prefect {' '.join(args)}` failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout


async def _limit_queue_and_find_deployments(concurrency: int) -> list[str]:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        queue = await client.read_work_queue_by_name(WORK_QUEUE, work_pool_name=WORK_POOL)
        await client.update_work_queue(queue.id, concurrency_limit=concurrency)
        deployment = await client.read_deployment_by_name(DEPLOYMENT)
        return [str(deployment.id)]


def main() -> int:
    env = dict(os.environ)
    env.setdefault("HF_INGEST_HOME", str(CHECKOUT))
    env.setdefault("HF_INGEST_PYTHON", sys.executable)
    env.setdefault("HF_INGEST_HEARTBEAT_SECONDS", "30")
    heartbeat = int(env["HF_INGEST_HEARTBEAT_SECONDS"])
    if heartbeat < 30:
        raise SystemExit("HF_INGEST_HEARTBEAT_SECONDS must be at least 30 (Prefect's minimum heartbeat interval)")
    concurrency = int(env.get("IMPORT_CONCURRENCY", "4"))

    _prefect("work-pool", "create", WORK_POOL, "--type", "process", "--overwrite", env=env)
    _prefect("--no-prompt", "deploy", "--all", env=env)
    _prefect("block", "register", "-m", "blocks.prefect_blocks", env=env)
    deployment_ids = asyncio.run(_limit_queue_and_find_deployments(concurrency))
    automation = register(heartbeat, deployment_ids)
    print(f"work pool       {WORK_POOL}, queue {WORK_QUEUE}: at most {concurrency} imports at once")
    print(f"deployment      {DEPLOYMENT} from {env['HF_INGEST_HOME']}, heartbeats every {heartbeat} s")
    print(f"automation      {automation.name!r} for these deployments only")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
