"""The stack `make up` starts (deployments/stack.py), on free ports, with its state, database and objects in a
temporary folder, for the end-to-end tests of every module (one per session); stopped with `down` at the end.
Its jobs and scenes are in the stack's own PostgreSQL, as with `make up`'s defaults."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from hf_ingest.hub_formats import encode_image, write_parquet_dataset
from hf_ingest.jobstore.sql import SqlJobStore
from hf_ingest.sample import write_sample_dataset
from tests import worker_groups
from tests.fault_proxy import free_port

CHECKOUT = Path(__file__).resolve().parents[1]
SECRET = "e2e-webhook-secret-0123456789"


@dataclass
class LiveStack:
    trigger: str
    api_url: str
    env: dict[str, str]
    database_url: str
    store: SqlJobStore
    datasets: Path
    state: Path

    def client(self, token: str | None = SECRET, scheme: str = "Bearer") -> httpx.Client:
        headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
        return httpx.Client(base_url=self.trigger, headers=headers, timeout=30)

    def job_count(self) -> int:
        with self.store.engine.connect() as conn:
            return int(conn.execute(sa.text("select count(*) from jobs")).scalar_one())

    def wait_for(self, job_id: str, statuses: set[str], timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while True:
                job = client.get(f"/jobs/{job_id}").json()
                if job["status"] in statuses:
                    return job
                if time.monotonic() > deadline:
                    raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s: {job}\n"
                                         + self.diagnosis(job.get("flow_run_id")))
                time.sleep(0.2)

    def diagnosis(self, flow_run_id: str | None) -> str:
        """What a wait that timed out needs to be understood afterwards: the run's Prefect states, the flow runs
        the pool still has going, and the worker's last log lines."""
        lines = []
        try:
            with httpx.Client(base_url=self.api_url, timeout=10) as api:
                if flow_run_id:
                    run = api.get(f"/flow_runs/{flow_run_id}").json()
                    states = api.get("/flow_run_states/", params={"flow_run_id": flow_run_id}).json()
                    lines.append(f"flow run {flow_run_id}: {run.get('state_type')} (queue {run.get('work_queue_name')})"
                                 f"; states: {[(s['type'], s['timestamp']) for s in states]}")
                active = api.post("/flow_runs/filter", json={"flow_runs": {"state": {"type": {"any_": [
                    "RUNNING", "PENDING", "CANCELLING"]}}}}).json()
                lines.append(f"runs active: {[(r['id'], r['state_type'], r['name']) for r in active]}")
        except (httpx.HTTPError, ValueError) as error:
            lines.append(f"Prefect API not read: {error}")
        worker_log = self.state / "logs" / "worker.log"
        if worker_log.exists():
            lines.append("worker log (last 40 lines):\n" + "\n".join(worker_log.read_text().splitlines()[-40:]))
        return "\n".join(lines)


def _stack_command(env: dict[str, str], action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deployments.stack", action], cwd=CHECKOUT, env=env, capture_output=True, text=True,
        timeout=400,
    )


@pytest.fixture(scope="session")
def live_stack() -> Iterator[LiveStack]:
    worker_groups.claim("live-stack")
    state = Path(tempfile.mkdtemp(prefix="hf-ingest-e2e-"))
    datasets = state / "datasets"
    write_sample_dataset(datasets / "sample")
    write_parquet_dataset(datasets / "no-images", [{"text": "a", "n": 1}, {"text": "b", "n": 2}])
    rows = [{"image": encode_image((24, 16), "JPEG", color=(i % 256, (i // 256) % 256, 7)), "i": i} for i in range(6000)]
    write_parquet_dataset(datasets / "large", rows)
    rows = [{"image": encode_image((24, 24), "PNG", color=(i % 256, (i // 256) % 256, 9)), "i": i} for i in range(20000)]
    write_parquet_dataset(datasets / "huge", rows, shards=4)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "HF_INGEST_STATE_DIR": str(state),
        "PREFECT_PORT": str(free_port()),
        "TRIGGER_PORT": str(free_port()),
        "WEBHOOK_SECRET": SECRET,
        "STORAGE_URL": str(state / "objects"),
        "LOCAL_DATASET_ROOT": str(datasets),
        "BATCH_SIZE": "64",
        "MAX_IN_FLIGHT_BATCHES": "2",
        "RECONCILE_INTERVAL_SECONDS": "2",
        "RECONCILE_QUEUED_GRACE_SECONDS": "5",
        "AUTH_FAILURES_PER_MINUTE": "10000",  # the limiter itself is tested in test_trigger_guard.py
        "HF_INGEST_ZOMBIE_SECONDS": "45",  # 1.5 heartbeats: a dead run is crashed sooner (default: 6)
    }
    up = _stack_command(env, "up")
    if up.returncode != 0:
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in (state / "logs").glob("*.log"))
        _stack_command(env, "down")
        pytest.fail(f"stack did not come up: {up.stdout}\n{up.stderr}\n{logs}")
    # no DATABASE_URL: jobs and scenes go to the stack's own PostgreSQL, as with `make up`'s defaults
    database_url = (state / "run" / "jobs-db.url").read_text().strip()
    assert database_url.startswith("postgresql://")
    stack = LiveStack(
        trigger=f"http://127.0.0.1:{env['TRIGGER_PORT']}",
        api_url=f"http://127.0.0.1:{env['PREFECT_PORT']}/api",
        env=env,
        database_url=database_url,
        store=SqlJobStore.from_url(database_url),
        datasets=datasets,
        state=state,
    )
    try:
        yield stack
    finally:
        down = _stack_command(env, "down")
        assert down.returncode == 0, down.stderr
        for name in ("server", "worker", "trigger", "prefect-db"):
            assert not (state / "run" / f"{name}.pid").exists()
        import shutil

        from deployments.stack import Stack

        shutil.rmtree(Stack(state, 0, 0).prefect_db_dir, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
