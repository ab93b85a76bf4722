"""One import shared by two workers that share nothing but the Prefect API, an S3 store (SeaweedFS) and
PostgreSQL, as two machines would; and a worker killed (SIGKILL, with its flow-run processes) mid-import.

The dataset is a Hub id served by the tests' Hub server: a multi-file parquet repo cut into shards
(SHARD_ROWS is small here): one per process that can run one at once, the parent run's own and the
`shards` queue's SHARD_CONCURRENCY slots, each but the parent's a child run of `hf-ingest-shard/default`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import sqlalchemy as sa

from hf_ingest.hub_formats import encode_image, write_parquet_dataset, write_parquet_file
from hf_ingest.jobstore.sql import SqlJobStore
from tests import worker_groups
from tests.fault_proxy import free_port
from tests.hub_server import HubServer
from tests.image_cases import corrupt_first_data_page
from tests.seaweed_server import SeaweedServer
from tests.test_jobstore_sql import _fresh_database
from tests.live_stack import _stack_command

SECRET = "scale-out-secret-0123456789"
FILES, ROWS_PER_FILE = 8, 300
SHARD_CONCURRENCY = 4
SHARDS = 1 + SHARD_CONCURRENCY  # the parent's own shard and one child run per slot of the shards queue

# tests/worker_groups.py runs this module whole on one worker of `make test`, in the "scale-out" group.


@dataclass
class TwoWorkers:
    trigger: str
    api_url: str
    env: dict[str, str]
    store: SqlJobStore
    state: Path
    second_worker: subprocess.Popen[bytes]
    second_name: str
    second_home: Path

    def start_second_worker(self) -> None:
        """The second machine's worker, as README says to start one (again, if a test killed it)."""
        env = {**self.env, "PREFECT_API_URL": self.api_url, "PREFECT_HOME": str(self.second_home / "prefect"),
               "PREFECT_WORKER_QUERY_SECONDS": "0.5", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        self.second_worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "hf-ingest"), "worker", "--name", self.second_name],
            cwd=self.second_home, env=env, stdout=(self.second_home / "worker.log").open("ab"),
            stderr=subprocess.STDOUT, start_new_session=True,
        )

    def worker_logs(self) -> str:
        """Both workers' logs (each has its runs' output)."""
        return "\n".join(p.read_text() for p in (self.state / "logs" / "worker.log", self.second_home / "worker.log")
                         if p.exists())

    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(f"{self.trigger}/process-huggingface", json=body,
                              headers={"Authorization": f"Bearer {SECRET}"}, timeout=60)
        assert response.status_code == 202, response.text
        return response.json()

    def wait_for(self, job_id: str, statuses: set[str], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = httpx.get(f"{self.trigger}/jobs/{job_id}", headers={"Authorization": f"Bearer {SECRET}"}).json()
            if job["status"] in statuses:
                return job
            assert time.monotonic() < deadline, f"job still {job['status']} after {timeout:.0f} s: {job}"
            time.sleep(0.5)

    def worker_of(self, flow_run_id: str) -> str | None:
        """The worker that submitted the run, from the run's own logs."""
        logs = httpx.post(f"{self.api_url}/logs/filter",
                          json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}}).json()
        for entry in logs:
            if "submitting flow run" in entry["message"]:
                return entry["message"].split("'")[1]
        return None


@pytest.fixture(scope="module")
def two_workers(postgres_url: str, seaweed: SeaweedServer, hub_server: HubServer) -> Iterator[TwoWorkers]:
    worker_groups.claim("scale-out")
    state = Path(tempfile.mkdtemp(prefix="hf-ingest-scale-"))
    bucket = f"scale-{uuid.uuid4().hex[:8]}"
    seaweed.create_bucket(bucket)
    database_url = _fresh_database(postgres_url)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
        **seaweed.env(bucket),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "HF_INGEST_STATE_DIR": str(state),
        "PREFECT_PORT": str(free_port()),
        "TRIGGER_PORT": str(free_port()),
        "WEBHOOK_SECRET": SECRET,
        "DATABASE_URL": database_url,
        "SHARD_ROWS": str(ROWS_PER_FILE),
        "SHARD_CONCURRENCY": str(SHARD_CONCURRENCY),
        "BATCH_SIZE": "64",
        "RECONCILE_INTERVAL_SECONDS": "2",
        "HF_INGEST_ZOMBIE_SECONDS": "45",  # 1.5 heartbeats: a dead run is crashed sooner (default: 6)
    }
    up = _stack_command(env, "up")
    if up.returncode != 0:
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in (state / "logs").glob("*.log"))
        _stack_command(env, "down")
        pytest.fail(f"stack did not come up: {up.stdout}\n{up.stderr}\n{logs}")
    api_url = f"http://127.0.0.1:{env['PREFECT_PORT']}/api"
    home = Path(tempfile.mkdtemp(prefix="hf-ingest-worker2-"))  # its own working folder
    # both workers as README says to start one, with their defaults: each runs at most this machine's cores
    # (unlimited, the first worker to poll took every shard, and the second machine sat idle)
    stack = TwoWorkers(
        trigger=f"http://127.0.0.1:{env['TRIGGER_PORT']}", api_url=api_url, env=env,
        store=SqlJobStore.from_url(database_url), state=state, second_worker=None,  # type: ignore[arg-type]
        second_name="second-machine", second_home=home,
    )
    stack.start_second_worker()
    try:
        yield stack
    finally:
        _kill_tree(stack.second_worker.pid)
        _stack_command(env, "down")
        from deployments.stack import Stack, remove_state

        remove_state(Stack(state, 0, 0))  # Prefect's PostgreSQL data: ~80 MB a run
        shutil.rmtree(home, ignore_errors=True)


def _kill_tree(pid: int) -> list[int]:
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    victims = [root, *root.children(recursive=True)]
    for process in victims:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=10)
    return [p.pid for p in victims]


def _publish(
    hub: HubServer, tmp: Path, name: str, rows_per_file: int = ROWS_PER_FILE, damaged_file: int | None = None
) -> tuple[str, dict[int, str], int]:
    """A multi-file parquet repo with a few broken images (and, if asked, one damaged data file); returns its
    id, the hash of each valid image that can be read by its row, and the rows."""
    rows = []
    for i in range(FILES * rows_per_file):
        data = encode_image((40 + i % 31, 30 + i % 17), "JPEG", color=(i % 256, (i // 256) % 256, 99))
        rows.append({"image": b"broken" if i % 97 == 5 else data, "i": i})
    repo = f"scale/{name}-{uuid.uuid4().hex[:6]}"
    folder = write_parquet_dataset(tmp / name, rows, shards=FILES)
    readable = range(len(rows))
    if damaged_file is not None:
        corrupt_first_data_page(sorted(folder.rglob("*.parquet"))[damaged_file])
        readable = [n for n in readable if n // rows_per_file != damaged_file]
    hub.publish(repo, folder)
    valid = {n: hashlib.sha256(rows[n]["image"]).hexdigest() for n in readable if rows[n]["image"] != b"broken"}
    return repo, valid, len(rows)


def _scene_rows(stack: TwoWorkers, dataset: str) -> tuple[int, int, set[str]]:
    with stack.store.engine.connect() as conn:
        count, distinct = conn.execute(
            sa.text("select count(*), count(distinct row_index) from scenes where dataset = :d"), {"d": dataset}
        ).one()
        shas = {r[0] for r in conn.execute(sa.text("select sha256 from scenes where dataset = :d"), {"d": dataset})}
    return int(count), int(distinct), shas


@pytest.mark.timeout(600)
def test_a_worker_killed_mid_import_leaves_the_job_to_the_other_one(
    two_workers: TwoWorkers, hub_server: HubServer, tmp_path: Path
) -> None:
    """Both workers take shards of one import; then SIGKILL the one that runs shards but not the parent run:
    its child runs are crashed by the zombie automation (no heartbeat for 45 s here), the parent starts those
    shards again, the other worker runs them from their checkpoints, and the job completes with exactly one
    scene per valid image."""
    repo, by_row, rows = _publish(hub_server, tmp_path, "killed", rows_per_file=600)
    valid = set(by_row.values())
    body = two_workers.post({"dataset": repo})
    parent_worker = None
    deadline = time.monotonic() + 120
    while True:  # until a shard of this job runs on the worker that does not run the parent
        shards = two_workers.store.list_shards(uuid.UUID(body["job_id"]))
        parent_worker = parent_worker or two_workers.worker_of(body["flow_run_id"])
        running = [s for s in shards if s.status.value == "running" and s.flow_run_id]
        victims = {two_workers.worker_of(s.flow_run_id) for s in running} - {parent_worker, None}
        if parent_worker and victims:
            break
        assert time.monotonic() < deadline, (
            parent_worker, two_workers.wait_for(body["job_id"], {"queued", "running", "completed", "failed"}, 1)["status"],
            [(s.shard, s.status.value, s.attempts, s.flow_run_id and two_workers.worker_of(s.flow_run_id)) for s in shards])
        time.sleep(0.3)
    victim = victims.pop()
    if victim == two_workers.second_name:
        killed = _kill_tree(two_workers.second_worker.pid)
    else:
        killed = _kill_tree(json.loads((two_workers.state / "run" / "worker.pid").read_text())["pid"])
    assert len(killed) >= 2  # the worker and at least one flow-run process

    job = two_workers.wait_for(body["job_id"], {"completed", "failed"}, timeout=400)
    assert job["status"] == "completed", (job["error"], job["progress"])
    count, distinct, shas = _scene_rows(two_workers, repo)
    assert count == distinct == len(valid) and shas == valid
    shards = two_workers.store.list_shards(uuid.UUID(body["job_id"]))
    assert any(s.attempts > 1 for s in shards)  # the killed worker's shards ran again
    survivors = {two_workers.worker_of(s.flow_run_id) for s in shards if s.flow_run_id}
    assert parent_worker in survivors  # it ran the killed worker's shards again (the victim had shards too: above)
    # the planned shards, and any piece the parent split off a running one (tests/test_shard_split.py)
    assert job["progress"]["shards_done"] == job["progress"]["shards_total"] >= SHARDS
    assert job["progress"]["rows_seen"] >= rows and job["progress"]["invalid_total"] == rows - len(valid)


@pytest.mark.timeout(600)
def test_cancel_stops_the_children_and_prefects_retry_resumes_as_the_successor(
    two_workers: TwoWorkers, hub_server: HubServer, tmp_path: Path
) -> None:
    """Cancelling the job cancels its shard runs; Prefect's Retry on the parent run (as the UI's button
    does it) resumes the import as the job's successor: the shards finished before are not run again."""
    from hf_ingest.resume import successor_id

    repo, by_row, rows = _publish(hub_server, tmp_path, "resumed", rows_per_file=600)
    valid = set(by_row.values())
    body = two_workers.post({"dataset": repo})
    job_id = uuid.UUID(body["job_id"])
    deadline = time.monotonic() + 120
    while not any(s.status.value == "completed" for s in two_workers.store.list_shards(job_id)):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    first = two_workers.store.list_shards(job_id)[0]
    assert first.flow_run_id == body["flow_run_id"] and first.attempts == 1  # the parent imports shard 0 itself
    cancelled = httpx.post(f"{two_workers.trigger}/jobs/{job_id}/cancel", headers={"Authorization": f"Bearer {SECRET}"})
    assert cancelled.status_code == 202, cancelled.text
    assert two_workers.wait_for(str(job_id), {"cancelled"}, timeout=60)["status"] == "cancelled"
    children = [s.flow_run_id for s in two_workers.store.list_shards(job_id) if s.flow_run_id]
    deadline = time.monotonic() + 120
    while True:  # Prefect cancels the subflow runs of a cancelled run; the UI offers Retry once the run is Cancelled
        states = {httpx.get(f"{two_workers.api_url}/flow_runs/{run}").json()["state"]["type"] for run in children}
        parent = httpx.get(f"{two_workers.api_url}/flow_runs/{body['flow_run_id']}").json()["state"]["type"]
        if states <= {"COMPLETED", "CANCELLED", "CANCELLING"} and parent == "CANCELLED":
            break
        assert time.monotonic() < deadline, states
        time.sleep(1)
    finished_before = {s.shard for s in two_workers.store.list_shards(job_id) if s.status.value == "completed"}

    retried = httpx.post(  # what the UI's Retry button sends
        f"{two_workers.api_url}/flow_runs/{body['flow_run_id']}/set_state",
        json={"state": {"type": "SCHEDULED", "name": "AwaitingRetry", "message": "Retry from the UI"}, "force": True},
    )
    assert retried.status_code in (200, 201), retried.text
    successor = str(successor_id(job_id))
    deadline = time.monotonic() + 60
    while httpx.get(f"{two_workers.trigger}/jobs/{successor}", headers={"Authorization": f"Bearer {SECRET}"}).status_code == 404:
        assert time.monotonic() < deadline, "the retried run did not resume the job as its successor"
        time.sleep(0.5)
    job = two_workers.wait_for(successor, {"completed", "failed"}, timeout=300)
    assert job["status"] == "completed", (job["error"], job["progress"])
    assert job["flow_run_id"] == body["flow_run_id"]  # the same run, retried, now works for the successor
    assert two_workers.wait_for(str(job_id), {"cancelled"}, timeout=5)["status"] == "cancelled"  # never reopened
    count, distinct, shas = _scene_rows(two_workers, repo)
    assert count == distinct == len(valid) and shas == valid
    resumed = {s.shard: s for s in two_workers.store.list_shards(uuid.UUID(successor))}
    assert finished_before and all(resumed[n].attempts == 0 for n in finished_before)  # not run again


@pytest.mark.timeout(400)
def test_a_shard_out_of_attempts_fails_the_job_naming_it_after_the_others_finish(
    two_workers: TwoWorkers, hub_server: HubServer, tmp_path: Path
) -> None:
    """The first data file is damaged: its shard (the parent's own) fails in the parent's process, then in each
    of the child runs it gets for its other SHARD_ATTEMPTS, and the job fails naming the shard, its rows and
    the file; the other shards finish first, every one of their images stored."""
    repo, by_row, rows = _publish(hub_server, tmp_path, "damaged", damaged_file=0)
    body = two_workers.post({"dataset": repo})
    job = two_workers.wait_for(body["job_id"], {"completed", "failed"}, timeout=300)
    assert job["status"] == "failed", job
    shards = two_workers.store.list_shards(uuid.UUID(body["job_id"]))
    assert len(shards) >= SHARDS  # and any piece split off a running shard
    broken = shards[0]
    assert f"ShardFailed: shard 0 (rows 0-{broken.end_row - 1}) failed after 3 attempts:" in job["error"], job["error"]
    assert "train-00000-of-00008.parquet, row 0 of that file" in job["error"], job["error"]
    assert [(s.shard, s.status.value, s.attempts) for s in shards if s.status.value != "completed"] == [(0, "failed", 3)]
    parent_logs = httpx.post(f"{two_workers.api_url}/logs/filter",
                             json={"logs": {"flow_run_id": {"any_": [body["flow_run_id"]]}}}).json()
    assert any("shard did not complete here; starting it as a child run" in e["message"] for e in parent_logs)
    assert broken.flow_run_id != body["flow_run_id"]  # its last attempt was a child run
    assert job["progress"]["shards_done"] == len(shards) - 1 and job["progress"]["shards_total"] == len(shards)
    count, distinct, shas = _scene_rows(two_workers, repo)
    stored = {sha for row, sha in by_row.items() if row >= broken.end_row}  # the damaged file ends the shard's reads
    assert count == distinct == len(stored) and shas == stored  # nothing of the other shards lost


@pytest.mark.timeout(300)
def test_on_one_machine_the_waiting_parent_imports_the_shards_no_worker_took(
    two_workers: TwoWorkers, hub_server: HubServer, tmp_path: Path
) -> None:
    """The second machine is paused (SIGSTOP): one worker, at its default limit of this machine's cores (2),
    runs the parent and one child run at a time. The parent, once its own shard is done, cancels the child
    runs that no worker has taken and imports their shards itself, so no slot idles while shards wait; every
    image is stored once and the job completes."""
    repo, by_row, rows = _publish(hub_server, tmp_path, "one-machine")
    valid = set(by_row.values())
    assert _stack_command(two_workers.env, "up").returncode == 0  # the stack's worker, if the kill test took it
    paused = two_workers.second_worker.poll() is None  # the kill test may have taken the second one
    if paused:
        os.kill(two_workers.second_worker.pid, signal.SIGSTOP)
    try:
        body = two_workers.post({"dataset": repo})
        job = two_workers.wait_for(body["job_id"], {"completed", "failed"}, timeout=240)
    finally:
        if paused:
            os.kill(two_workers.second_worker.pid, signal.SIGCONT)
    assert job["status"] == "completed", (job["error"], job["progress"])
    shards = two_workers.store.list_shards(uuid.UUID(body["job_id"]))
    by_parent = [s.shard for s in shards if s.flow_run_id == body["flow_run_id"] and s.shard < SHARDS]  # planned
    assert by_parent[0] == 0 and len(by_parent) >= 2, [(s.shard, s.flow_run_id) for s in shards]
    runs = httpx.post(f"{two_workers.api_url}/flow_runs/filter",
                      json={"flow_runs": {"tags": {"all_": [f"job:{body['job_id']}"]}}}).json()
    cancelled = [r for r in runs if r["state"]["type"] == "CANCELLED"]
    assert cancelled and all(r["state"]["message"] == "its shard was imported by the parent run" for r in cancelled)
    children = {int(r["name"].rsplit("#", 1)[1]): r["state"]["type"] for r in runs if "#" in r["name"]}
    # each shard the parent took beyond its own: a child run it cancelled, or (a worker took it in the same
    # instant, which Prefect lets both win) one that found its shard's attempt claimed and did nothing
    assert all(children[shard] in ("CANCELLED", "COMPLETED") for shard in by_parent[1:]), (by_parent, children)
    count, distinct, shas = _scene_rows(two_workers, repo)
    assert count == distinct == len(valid) and shas == valid
    assert all(s.status.value == "completed" and s.attempts == 1 for s in shards)


def _flow_run_process(flow_run_id: str, worker_logs: str) -> psutil.Process | None:
    """The process that runs the flow run: the fork its worker's warm engine made for it (the worker's log names
    it), else the process the worker started for it (Prefect gives it the run's id in its environment)."""
    forked = re.search(rf"flow run {flow_run_id} forked from the warm engine \(pid (\d+)\)", worker_logs)
    if forked:
        return psutil.Process(int(forked.group(1)))
    for process in psutil.process_iter():
        try:
            if process.environ().get("PREFECT__FLOW_RUN_ID") == flow_run_id:
                return process
        except psutil.Error:
            continue
    return None


@pytest.mark.timeout(400)
def test_the_parent_with_nothing_left_takes_the_rest_of_a_slow_child_runs_shard(
    two_workers: TwoWorkers, hub_server: HubServer, tmp_path: Path
) -> None:
    """A child run stalls mid-shard (its process stopped with SIGSTOP, as a slow or late machine would be):
    the parent, once it has read its own rows, cuts that shard after the rows the child has reserved and
    imports the rest itself. The child, let go, reads only up to the cut; every image is stored once and the
    job completes."""
    repo, by_row, rows = _publish(hub_server, tmp_path, "split", rows_per_file=600)
    valid = set(by_row.values())
    assert _stack_command(two_workers.env, "up").returncode == 0  # the stack's worker, if the kill test took it
    if two_workers.second_worker.poll() is not None:  # and the second machine's: child runs beside the parent
        two_workers.start_second_worker()
        time.sleep(5)  # it registers with the pool
    body = two_workers.post({"dataset": repo})
    job_id = uuid.UUID(body["job_id"])
    stalled: psutil.Process | None = None
    try:
        deadline = time.monotonic() + 120
        while stalled is None:  # once the parent has read its own shard: a child run with rows it has not read
            shards = two_workers.store.list_shards(job_id)
            parents_read = bool(shards) and shards[0].reserved_row == shards[0].end_row
            for shard in shards if parents_read else []:
                if (shard.status.value == "running" and shard.flow_run_id not in (None, body["flow_run_id"])
                        and (shard.reserved_row or shard.first_row) < shard.end_row):
                    stalled = _flow_run_process(shard.flow_run_id, two_workers.worker_logs())  # type: ignore[arg-type]
                    if stalled is not None:
                        stalled.suspend()
                        victim = shard
                        break
            assert time.monotonic() < deadline, two_workers.store.list_shards(job_id)
            time.sleep(0.2)
        deadline = time.monotonic() + 120
        while not any(s.shard >= SHARDS and victim.first_row < s.first_row < victim.end_row
                      for s in two_workers.store.list_shards(job_id)):
            assert time.monotonic() < deadline, ("the parent did not split the stalled shard", victim,
                                                 two_workers.store.list_shards(job_id), [
                e["message"][:300] for e in httpx.post(f"{two_workers.api_url}/logs/filter", json={
                    "logs": {"flow_run_id": {"any_": [body["flow_run_id"]]}}}).json()][-15:])
            time.sleep(0.2)
    finally:
        if stalled is not None:
            stalled.resume()
    job = two_workers.wait_for(str(job_id), {"completed", "failed"}, timeout=240)
    assert job["status"] == "completed", (job["error"], job["progress"])
    shards = {s.shard: s for s in two_workers.store.list_shards(job_id)}
    kept = shards[victim.shard]  # the parent may cut the stalled shard more than once (each cut halves its rest)
    cut_off = sorted((s for s in shards.values() if s.shard >= SHARDS and victim.first_row < s.first_row < victim.end_row),
                     key=lambda s: s.first_row)
    assert kept.end_row >= (victim.reserved_row or victim.first_row)  # never inside what the child had reserved
    assert [kept.end_row, *(s.end_row for s in cut_off)] == [*(s.first_row for s in cut_off), victim.end_row]
    assert all(s.flow_run_id == body["flow_run_id"] and s.status.value == "completed" for s in cut_off)
    count, distinct, shas = _scene_rows(two_workers, repo)
    assert count == distinct == len(valid) and shas == valid
    assert job["progress"]["shards_done"] == job["progress"]["shards_total"] == len(shards) > SHARDS
    parent_logs = httpx.post(f"{two_workers.api_url}/logs/filter",
                             json={"logs": {"flow_run_id": {"any_": [body["flow_run_id"]]}}}).json()
    assert any("rest of a running shard split off" in e["message"] for e in parent_logs)


@pytest.mark.timeout(600)
def test_a_sync_reads_only_the_changed_files_in_shards_and_moves_the_rows_after_them(
    two_workers: TwoWorkers, hub_server: HubServer, tmp_path: Path
) -> None:
    """A newer commit rewrites two of the eight files with more rows: the sync plans its shards over those two
    files alone (child runs on the pool, as a first import), moves the rows of the files after them without
    reading them, and ends with one live scene per valid row at the new commit."""
    import pyarrow.parquet as pq

    repo, _, _ = _publish(hub_server, tmp_path, "sync")
    first = two_workers.post({"dataset": repo})
    assert two_workers.wait_for(first["job_id"], {"completed", "failed"}, timeout=300)["status"] == "completed"
    folder = tmp_path / "sync"
    for index in (2, 5):
        rows = [{"image": encode_image((50 + i % 23, 40), "JPEG", color=(index * 40, i % 256, 7)), "i": 10**5 + i}
                for i in range(ROWS_PER_FILE + 40)]
        write_parquet_file(folder / "data" / f"train-{index:05d}-of-{FILES:05d}.parquet", rows)
    hub_server.publish(repo, folder, "two files rewritten with more rows")

    body = two_workers.post({"dataset": repo})
    job = two_workers.wait_for(body["job_id"], {"completed", "failed"}, timeout=300)
    assert job["status"] == "completed", (job["error"], job["progress"])
    progress = job["progress"]
    assert (progress["files_read"], progress["files_kept"]) == (2, FILES - 2)
    assert progress["rows_seen"] == 2 * (ROWS_PER_FILE + 40) and progress["shards_total"] >= 2
    assert progress["scenes_moved"] > 0
    expected, row = {}, 0
    for path in sorted(folder.glob("data/*.parquet")):
        for value in pq.read_table(path, columns=["image"]).column("image").to_pylist():
            if value["bytes"] != b"broken":
                expected[row] = hashlib.sha256(value["bytes"]).hexdigest()
            row += 1
    with two_workers.store.engine.connect() as conn:
        live = conn.execute(sa.text("select row_index, sha256 from scenes where dataset = :d and removed_at is null"),
                            {"d": repo}).all()
    assert len(live) == len(expected) and {r.row_index: r.sha256 for r in live} == expected


@pytest.mark.timeout(600)
def test_a_dataset_kept_current_on_a_schedule_runs_gets_its_job_and_is_seen_and_paused_in_the_prefect_ui(
    two_workers: TwoWorkers, hub_server: HubServer, tmp_path: Path
) -> None:
    """`hf-ingest schedule` makes a Prefect schedule of the deployment, checked as the trigger checks a request;
    it shows on the deployment's page in the UI (Chromium) and survives `setup-prefect` (what `make up` runs);
    its runs are normal imports with job rows (here a commit already imported: a sync that reads nothing); the
    UI's toggle pauses it (its scheduled runs dropped); the CLI lists, resumes and removes it."""
    from playwright.sync_api import sync_playwright

    from tests.test_trigger_e2e import CHROMIUM, CHROMIUM_ARGS

    env = {**two_workers.env, "PREFECT_API_URL": two_workers.api_url}
    cli = str(Path(sys.executable).parent / "hf-ingest")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([cli, *args], env=env, capture_output=True, text=True, timeout=300)

    def api(method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, f"{two_workers.api_url}{path}", timeout=30, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    repo, _, _ = _publish(hub_server, tmp_path, "scheduled", rows_per_file=20)
    refused = run("schedule", "/etc", "--cron", "* * * * *")
    assert refused.returncode == 2 and "Hub id" in refused.stderr
    assert run("schedule", repo, "--cron", "every day").returncode == 2  # not a cron: nothing is made
    first = two_workers.post({"dataset": repo})  # imported before: the schedule's runs will read nothing
    assert two_workers.wait_for(first["job_id"], {"completed", "failed"}, timeout=120)["status"] == "completed"

    made = run("schedule", repo, "--cron", "* * * * *")
    assert made.returncode == 0, made.stderr
    slug = made.stdout.split()[0]
    assert slug.startswith("sync-scale-scheduled-") and "active" in made.stdout
    deployment = api("GET", "/deployments/name/hf-ingest/default")
    schedules = {s["slug"]: s for s in api("GET", f"/deployments/{deployment['id']}/schedules")}
    assert schedules[slug]["active"] and schedules[slug]["parameters"]["dataset"] == repo
    assert schedules[slug]["schedule"]["cron"] == "* * * * *"
    ui = two_workers.api_url.removesuffix("/api")
    page_url = f"{ui}/deployments/deployment/{deployment['id']}"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(page_url, wait_until="networkidle")
            page.get_by_text(slug).first.wait_for(timeout=15_000)  # the schedule, by its slug, with its toggle
            assert page.get_by_role("switch").count() == 1 and page.get_by_role("switch").first.is_checked()
        finally:
            browser.close()
        setup = run("setup-prefect")  # what `make up` runs again: the deployments are redeployed...
        assert setup.returncode == 0, setup.stderr
        assert slug in run("schedule", "--list").stdout  # ...and keep their schedules

        deadline = time.monotonic() + 180  # Prefect's scheduler makes the runs; the next minute starts one
        while True:
            runs = [r for r in api("POST", "/flow_runs/filter", json={"flow_runs": {
                "deployment_id": {"any_": [deployment["id"]]},
                "state": {"type": {"any_": ["COMPLETED", "FAILED", "CRASHED"]}}}}) if r["auto_scheduled"]]
            if runs:
                break
            assert time.monotonic() < deadline, "no scheduled run finished within 3 minutes"
            time.sleep(2)
        assert runs[0]["state"]["type"] == "COMPLETED", runs[0]["state"]
        job = two_workers.store.get_job(uuid.UUID(runs[0]["id"]))  # a scheduled run gets its job row like any other
        assert job is not None and job.status.value == "completed"
        assert job.progress["files_read"] == 0 and job.progress["files_kept"] == FILES and job.progress["rows_seen"] == 0

        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(page_url, wait_until="networkidle")
            page.get_by_text("auto-scheduled").first.wait_for(timeout=15_000)  # the runs it made
            page.get_by_role("switch").first.click()  # the operator pauses it in the UI
            deadline = time.monotonic() + 15
            while api("GET", f"/deployments/{deployment['id']}/schedules")[0]["active"]:
                assert time.monotonic() < deadline, "the UI's toggle did not pause the schedule"
                time.sleep(0.5)
            page.screenshot(path=str(tmp_path / "schedule.png"))
        finally:
            browser.close()
    deadline = time.monotonic() + 30  # paused: Prefect drops the runs it had scheduled, and makes no more
    while api("POST", "/flow_runs/filter", json={"flow_runs": {
            "deployment_id": {"any_": [deployment["id"]]}, "state": {"type": {"any_": ["SCHEDULED"]}}}}):
        assert time.monotonic() < deadline, "a paused schedule still has runs scheduled"
        time.sleep(1)
    listed = run("schedule", "--list").stdout
    assert "paused" in listed.split(slug, 1)[1].splitlines()[0]
    assert run("schedule", repo, "--resume").returncode == 0
    assert "active" in run("schedule", "--list").stdout.split(slug, 1)[1].splitlines()[0]
    assert run("schedule", repo, "--remove").returncode == 0
    assert slug not in run("schedule", "--list").stdout
