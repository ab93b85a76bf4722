"""End to end: POST /process-huggingface → a flow run on a real Prefect server and worker → jobs and scenes.

The stack is the one `make up` starts (deployments/stack.py), on free ports, with its state,
database and objects in a temporary folder; it is stopped with `down` at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from hf_ingest.hub_formats import encode_image, write_parquet_dataset
from hf_ingest.jobstore import JobStatus
from hf_ingest.sample import sample_rows
from tests.fault_proxy import free_port
from tests.live_stack import CHECKOUT, SECRET, LiveStack, _stack_command

VALID_SAMPLE_IMAGES = sum(1 for r in sample_rows() if r["scene"] != "broken")

# tests/worker_groups.py runs this module whole on one worker of `make test`, in the "live-stack" group.

@pytest.fixture(autouse=True)
def _stack_env(live_stack: LiveStack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", live_stack.database_url)


def _seconds(later: str, earlier: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


# ---- the old system's three acceptance tests --------------------------------------------------


def test_post_creates_a_job_that_is_running_within_10_seconds(live_stack: LiveStack) -> None:
    with live_stack.client() as client:
        posted = time.monotonic()
        response = client.post("/process-huggingface", json={"dataset": "large"})
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["status"] == "queued" and body["flow_run_id"] and uuid.UUID(body["job_id"])
        job = live_stack.wait_for(body["job_id"], {"running", "completed"}, timeout=10)
        elapsed = time.monotonic() - posted
    assert elapsed <= 10, elapsed
    assert job["flow_run_id"] == body["flow_run_id"]
    assert _seconds(job["started_at"], job["created_at"]) <= 10
    live_stack.wait_for(body["job_id"], {"completed"}, timeout=180)


def test_a_successful_job_creates_scene_rows(live_stack: LiveStack) -> None:
    with live_stack.client() as client:
        body = client.post("/process-huggingface", json={"dataset": "sample", "split": "train"}).json()
    job = live_stack.wait_for(body["job_id"], {"completed", "failed"})
    assert job["status"] == "completed", job
    assert job["progress"]["rows_seen"] == len(sample_rows())
    assert job["progress"]["invalid"] == {"corrupt": 1, "empty": 1, "not_an_image": 1}
    assert job["finished_at"] and job["started_at"]
    with live_stack.store.engine.connect() as conn:
        scenes = conn.execute(
            sa.text("select count(*) from scenes where dataset = :d"), {"d": str(live_stack.datasets / "sample")}
        ).scalar_one()
    assert scenes == VALID_SAMPLE_IMAGES


def test_flow_runs_start_as_forks_of_the_workers_warm_engine(live_stack: LiveStack) -> None:
    """`hf-ingest worker` (as `make up` starts it) made the runs' imports once: a run's process is forked from
    its warm engine, in the environment the deployment gives it, not refused and imported again. (A run given
    other variables than the worker's imports for itself: tests/test_platform_restarts.py sets OUTAGE_SECONDS.)
    A dataset of its own: an import of `sample` here would leave the next full one nothing to read."""
    name = f"warm-engine-{uuid.uuid4().hex[:6]}"
    write_parquet_dataset(live_stack.datasets / name, [{"image": encode_image((20, 16), "PNG"), "i": 0}])
    with live_stack.client() as client:
        body = client.post("/process-huggingface", json={"dataset": name}).json()
    job = live_stack.wait_for(body["job_id"], {"completed", "failed"})
    assert job["status"] == "completed", job
    worker_log = (live_stack.state / "logs" / "worker.log").read_text()
    assert "warm engine ready" in worker_log
    assert f"flow run {body['flow_run_id']} forked from the warm engine" in worker_log


def test_a_failed_job_ends_failed_with_its_error_message(live_stack: LiveStack) -> None:
    with live_stack.client() as client:
        body = client.post("/process-huggingface", json={"dataset": "no-images"}).json()
    job = live_stack.wait_for(body["job_id"], {"completed", "failed"})
    assert job["status"] == "failed"
    assert "has no image column" in job["error"] and "columns: text (Value('string')), n" in job["error"]
    assert job["finished_at"]


# ---- bad requests: refused with a reason, and no job is created ------------------------------


@pytest.mark.parametrize(
    ("token", "scheme"),
    [(None, "Bearer"), ("wrong-secret", "Bearer"), (SECRET + "x", "Bearer"), (SECRET[:-1], "Bearer"), (SECRET, "Basic")],
    ids=["missing", "wrong", "longer", "prefix", "not-bearer"],
)
def test_requests_without_the_right_token_are_refused(live_stack: LiveStack, token: str | None, scheme: str) -> None:
    expected = 401
    before = live_stack.job_count()
    with live_stack.client(token, scheme) as client:
        assert client.post("/process-huggingface", json={"dataset": "sample"}).status_code == expected
        assert client.get(f"/jobs/{uuid.uuid4()}").status_code == expected
        assert client.post(f"/jobs/{uuid.uuid4()}/cancel").status_code == expected
        assert client.get("/healthz").status_code == 200
    assert live_stack.job_count() == before


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"dataset": "/etc"}, "LOCAL_DATASET_ROOT"),
        ({"dataset": "../../etc"}, "LOCAL_DATASET_ROOT"),
        ({"dataset": "sample/../../.."}, "LOCAL_DATASET_ROOT"),
        ({"dataset": "does-not-exist"}, "does not exist"),
        ({"dataset": "owner/name", "split": "train; drop table jobs"}, "split"),
        ({"dataset": "owner/name", "split": "train[:10%]"}, "split"),
        ({"dataset": "owner/name", "limit": -1}, "limit"),
        ({"dataset": "owner/name", "limit": 0}, "limit"),
        ({"dataset": "owner/name", "config": "../x"}, "config"),
        ({"dataset": ""}, "dataset"),
        ({"dataset": "owner/name", "surprise": 1}, "surprise"),
        ({"split": "train"}, "dataset"),
        ({"type": "INSERT", "table": "scenes", "record": {"id": str(uuid.uuid4())}}, "INSERT events on the jobs table"),
    ],
)
def test_bad_bodies_get_422_with_a_reason_and_create_no_job(live_stack: LiveStack, body: dict, reason: str) -> None:
    before = live_stack.job_count()
    with live_stack.client() as client:
        response = client.post("/process-huggingface", json=body)
    assert response.status_code == 422, response.text
    assert reason in response.text
    assert live_stack.job_count() == before


def test_a_symlink_out_of_the_dataset_root_is_refused(live_stack: LiveStack) -> None:
    link = live_stack.datasets / f"escape-{uuid.uuid4().hex[:6]}"
    link.symlink_to(live_stack.state / "logs")
    before = live_stack.job_count()
    with live_stack.client() as client:
        response = client.post("/process-huggingface", json={"dataset": link.name})
    assert response.status_code == 422 and "inside LOCAL_DATASET_ROOT" in response.text
    assert live_stack.job_count() == before


def test_unknown_jobs_are_404(live_stack: LiveStack) -> None:
    with live_stack.client() as client:
        assert client.get(f"/jobs/{uuid.uuid4()}").status_code == 404
        assert client.post(f"/jobs/{uuid.uuid4()}/cancel").status_code == 404
        assert client.get("/jobs/not-a-uuid").status_code == 422


# ---- idempotency, cancel, webhook, deployment runs, Prefect down ------------------------------


def test_an_idempotent_repeat_returns_the_same_job(live_stack: LiveStack) -> None:
    key = f"app-request-{uuid.uuid4()}"
    with live_stack.client() as client:
        first = client.post("/process-huggingface", json={"dataset": "sample", "limit": 5}, headers={"Idempotency-Key": key})
        again = client.post("/process-huggingface", json={"dataset": "sample", "limit": 5}, headers={"Idempotency-Key": key})
        other = client.post("/process-huggingface", json={"dataset": "sample", "limit": 6}, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 202
    assert first.json()["job_id"] == again.json()["job_id"]
    assert first.json()["flow_run_id"] == again.json()["flow_run_id"]
    assert other.status_code == 409
    live_stack.wait_for(first.json()["job_id"], {"completed"})


def test_cancel_ends_the_job_cancelled(live_stack: LiveStack) -> None:
    with live_stack.client() as client:
        body = client.post("/process-huggingface", json={"dataset": "large"}).json()
        live_stack.wait_for(body["job_id"], {"running"}, timeout=30)
        response = client.post(f"/jobs/{body['job_id']}/cancel")
        assert response.status_code == 202, response.text
        job = live_stack.wait_for(body["job_id"], {"cancelled", "completed", "failed"}, timeout=60)
        assert job["status"] == "cancelled" and job["finished_at"]
        assert client.post(f"/jobs/{body['job_id']}/cancel").status_code == 409
        assert client.post(f"/jobs/{uuid.uuid4()}/retry").status_code == 404
    deadline = time.monotonic() + 60
    while True:  # Prefect's own view agrees: the run is cancelled, not still running
        state = httpx.get(f"{live_stack.api_url}/flow_runs/{body['flow_run_id']}").json()["state"]["type"]
        if state == "CANCELLED" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert state == "CANCELLED"


def test_a_supabase_webhook_for_an_app_inserted_job_starts_it(live_stack: LiveStack) -> None:
    job_id = uuid.uuid4()
    params = {"dataset": "sample", "limit": 4}
    live_stack.store.create_job(job_id, params)  # the app inserted the row itself
    record = {**live_stack.store.get_job(job_id).as_dict(), "params": params}  # type: ignore[union-attr]
    payload = {"type": "INSERT", "table": "jobs", "schema": "public", "record": record, "old_record": None}
    with live_stack.client() as client:
        response = client.post("/process-huggingface", json=payload)
    assert response.status_code == 202, response.text
    assert response.json()["job_id"] == str(job_id)
    job = live_stack.wait_for(str(job_id), {"completed", "failed"})
    assert job["status"] == "completed" and job["progress"]["rows_seen"] == 4


def test_prefect_deployment_run_gets_a_job_row_that_completes(live_stack: LiveStack) -> None:
    env = {**live_stack.env, "PREFECT_API_URL": live_stack.api_url}
    dataset = str(live_stack.datasets / "sample")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "prefect"), "deployment", "run", "hf-ingest/default",
         "-p", f"dataset={dataset}", "-p", "limit=3"],
        env=env, cwd=CHECKOUT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    flow_run_id = _flow_run_id_from(result.stdout)
    job = None
    deadline = time.monotonic() + 90
    while job is None or job.status.value not in ("completed", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
        job = live_stack.store.get_job(uuid.UUID(flow_run_id))
    assert job.status.value == "completed" and job.flow_run_id == flow_run_id
    assert job.params["dataset"] == dataset and job.progress["rows_seen"] == 3
    assert "source:ui" in _prefect(live_stack, "GET", f"/flow_runs/{flow_run_id}")["tags"]  # a deployment run


def _flow_run_id_from(output: str) -> str:
    start = output.find("{")
    if start >= 0:
        try:
            return str(json.loads(output[start:])["id"])
        except (ValueError, KeyError):
            pass
    for token in output.replace("'", " ").split():
        try:
            return str(uuid.UUID(token.strip(".,:()")))
        except ValueError:
            continue
    raise AssertionError(f"no flow run id in: {output}")


def test_prefect_down_answers_503_keeps_the_job_queued_and_it_starts_once_prefect_answers(live_stack: LiveStack) -> None:
    """A trigger that cannot reach Prefect answers 503 and leaves the job `queued` with the reason; the
    stack's own trigger (whose Prefect answers) then starts it from its reconciler, and it completes."""
    port = free_port()
    env = {**live_stack.env, "DATABASE_URL": live_stack.database_url,
           "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api", "RECONCILE_INTERVAL_SECONDS": "0"}
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "uvicorn"), "deployments.trigger:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=CHECKOUT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        started = time.monotonic()
        response = httpx.post(
            f"http://127.0.0.1:{port}/process-huggingface", json={"dataset": "sample", "limit": 3},
            headers={"Authorization": f"Bearer {SECRET}", "Idempotency-Key": f"prefect-down-{uuid.uuid4()}"}, timeout=120,
        )
        assert time.monotonic() - started < 60
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert response.status_code == 503, response.text
    body = response.json()
    assert "Prefect API unreachable" in body["detail"]
    job = live_stack.store.get_job(uuid.UUID(body["job_id"]))
    assert job is not None and job.status.value == "queued" and job.flow_run_id is None
    assert (job.error or "").startswith("waiting for Prefect: Prefect API unreachable") and SECRET not in job.error

    done = live_stack.wait_for(body["job_id"], {"completed", "failed"}, timeout=90)
    assert done["status"] == "completed" and done["error"] is None and done["flow_run_id"]
    assert done["progress"]["rows_seen"] == 3


def test_openapi_documents_every_endpoint(live_stack: LiveStack) -> None:
    schema = httpx.get(f"{live_stack.trigger}/openapi.json").json()
    assert {"/process-huggingface", "/jobs/{job_id}", "/jobs/{job_id}/cancel", "/jobs/{job_id}/retry", "/healthz"} <= set(
        schema["paths"]
    )
    post = schema["paths"]["/process-huggingface"]["post"]
    assert {"202", "401", "409", "413", "422", "429", "503"} <= set(post["responses"])
    assert any(p["name"].lower() == "idempotency-key" for p in post["parameters"])


def _kill_worker_and_its_runs(state: Path) -> list[int]:
    """SIGKILL the worker and every process under it (the flow run's): no hook gets to run."""
    import psutil

    pid = json.loads((state / "run" / "worker.pid").read_text())["pid"]
    worker = psutil.Process(pid)
    victims = [worker, *worker.children(recursive=True)]
    for process in victims:
        process.kill()
    psutil.wait_procs(victims, timeout=10)
    return [p.pid for p in victims]


def _another_teams_deployment(live_stack: LiveStack) -> dict[str, Any]:
    flow = _prefect(live_stack, "POST", "/flows/", json={"name": f"another-team-{uuid.uuid4().hex[:6]}"})
    return _prefect(live_stack, "POST", "/deployments/", json={"name": "theirs", "flow_id": flow["id"]})


def _silent_run_of_another_team(live_stack: LiveStack, theirs: dict[str, Any]) -> str:
    """A Running flow run of another flow's deployment, whose one heartbeat is followed by silence."""
    from datetime import timezone

    run = _prefect(live_stack, "POST", f"/deployments/{theirs['id']}/create_flow_run",
                   json={"state": {"type": "RUNNING", "name": "Running"}})
    _prefect(live_stack, "POST", "/events", json=[{
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(timezone.utc).isoformat(),
        "event": "prefect.flow-run.heartbeat",
        "resource": {"prefect.resource.id": f"prefect.flow-run.{run['id']}"},
        "related": [{"prefect.resource.id": f"prefect.deployment.{theirs['id']}", "prefect.resource.role": "deployment"}],
    }])
    return str(run["id"])


def _taken_by_a_dead_worker(live_stack: LiveStack, deployment_id: str, parameters: dict[str, Any]) -> str:
    """A run of this deployment that a worker took (Pending, as a worker sets it) and never started. It is
    created Pending: created Scheduled, the stack's live worker could take and run it before it is set so."""
    run = _prefect(live_stack, "POST", f"/deployments/{deployment_id}/create_flow_run",
                   json={"parameters": parameters, "state": {"type": "PENDING", "name": "Pending"}})
    return str(run["id"])


def test_a_killed_worker_fails_the_job_as_crashed_and_a_rerun_completes(live_stack: LiveStack) -> None:
    """The zombie automation crashes our run whose heartbeats stopped, and our run a worker took but died
    before starting (and only ours: another team's silent or pending run on the same server is left alone);
    the reconciler fails the job; a retry completes it."""
    their_deployment = _another_teams_deployment(live_stack)
    theirs = _silent_run_of_another_team(live_stack, their_deployment)
    their_pending = _taken_by_a_dead_worker(live_stack, their_deployment["id"], {})
    shard_deployment = _prefect(live_stack, "GET", "/deployments/name/hf-ingest-shard/default")["id"]
    never_started = _taken_by_a_dead_worker(live_stack, shard_deployment, {
        "job_id": str(uuid.uuid4()), "shard": 0, "dataset": "sample", "revision": "main"})
    with live_stack.client() as client:
        body = client.post("/process-huggingface", json={"dataset": "huge"}).json()
        deadline = time.monotonic() + 60
        while True:  # mid-import: running, some rows already stored
            job = client.get(f"/jobs/{body['job_id']}").json()
            if job["status"] == "running" and job["progress"].get("stored", 0) > 0:
                break
            assert job["status"] in ("queued", "running") and time.monotonic() < deadline, job
            time.sleep(0.2)
        killed = _kill_worker_and_its_runs(live_stack.state)
        assert len(killed) >= 2  # the worker and the flow run process
        stored_before = job["progress"]["stored"]

        try:
            killed_at = time.monotonic()
            job = live_stack.wait_for(body["job_id"], {"failed", "completed", "cancelled"}, timeout=200)
            bound = time.monotonic() - killed_at
            assert job["status"] == "failed", job
            assert job["error"].startswith("crashed:"), job["error"]
            assert bound <= 180, f"job failed only {bound:.0f}s after the worker died"
            assert _prefect(live_stack, "GET", f"/flow_runs/{theirs}")["state"]["type"] == "RUNNING"  # not ours
            assert _prefect(live_stack, "GET", f"/flow_runs/{their_pending}")["state"]["type"] == "PENDING"
            never = _prefect(live_stack, "GET", f"/flow_runs/{never_started}")["state"]
            assert never["type"] == "CRASHED", never  # it no longer holds a slot of the shards queue
            assert "never started" in never["message"] and job["error"].startswith("crashed: no heartbeat for 45 s")
        finally:  # bring the worker back (the rest is reused), also for the stack's next tests if this one failed
            up = _stack_command(live_stack.env, "up")
        assert up.returncode == 0, up.stderr
        first = client.post(f"/jobs/{body['job_id']}/retry")
        assert first.status_code == 202, first.text
        again = client.post(f"/jobs/{body['job_id']}/retry").json()  # a repeat is the same retry
        assert again["job_id"] == first.json()["job_id"] != body["job_id"]
        job = live_stack.wait_for(again["job_id"], {"completed", "failed"}, timeout=240)
    assert job["status"] == "completed", job
    assert job["progress"]["already_present"] >= stored_before > 0  # not uploaded again
    assert job["progress"]["stored"] + job["progress"]["already_present"] == 20000
    with live_stack.store.engine.connect() as conn:
        scenes, distinct = conn.execute(
            sa.text("select count(*), count(distinct row_index) from scenes where dataset = :d"),
            {"d": str(live_stack.datasets / "huge")},
        ).one()
    assert scenes == distinct == 20000


def test_concurrent_duplicates_with_one_idempotency_key_make_one_job_and_one_run(live_stack: LiveStack) -> None:
    from concurrent.futures import ThreadPoolExecutor

    key = f"burst-{uuid.uuid4()}"
    before = live_stack.job_count()

    def post(_: int) -> httpx.Response:
        with live_stack.client() as client:
            return client.post("/process-huggingface", json={"dataset": "sample", "limit": 2}, headers={"Idempotency-Key": key})

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(post, range(8)))
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["job_id"] for r in responses}) == 1
    assert len({r.json()["flow_run_id"] for r in responses}) == 1
    assert live_stack.job_count() == before + 1
    live_stack.wait_for(responses[0].json()["job_id"], {"completed"})


BURST = 12  # 3x the queue's limit (IMPORT_CONCURRENCY) and 6x the worker's; `make bench` posts 40


def test_a_burst_of_imports_is_accepted_at_once_and_every_one_completes(live_stack: LiveStack) -> None:
    """Imports over the work queue's concurrency limit wait Scheduled, unoffered to the worker, and cost
    nothing: a burst is all accepted within seconds and drains at the pool's pace, none lost."""
    from concurrent.futures import ThreadPoolExecutor

    def post(i: int) -> tuple[int, float, dict]:
        started = time.monotonic()
        with live_stack.client() as client:
            response = client.post("/process-huggingface", json={"dataset": "sample", "limit": 1 + i % 5})
        return response.status_code, time.monotonic() - started, response.json()

    with ThreadPoolExecutor(max_workers=BURST) as pool:
        answers = list(pool.map(post, range(BURST)))
    assert [status for status, _, _ in answers] == [202] * BURST
    assert max(seconds for _, seconds, _ in answers) < 30
    for i, (_, _, body) in enumerate(answers):
        job = live_stack.wait_for(body["job_id"], {"completed", "failed"}, timeout=300)
        assert job["status"] == "completed" and job["progress"]["rows_seen"] == 1 + i % 5, job
    proposals = (live_stack.state / "logs" / "worker.log").read_text().count("AwaitingConcurrencySlot")
    assert proposals == 0  # no run was offered to the worker only to be parked


def test_floods_of_unauthenticated_bodies_leave_the_trigger_small_and_serving(live_stack: LiveStack) -> None:
    """Ten clients stream 200 MB bodies without the token, others with the token but over the size
    limit, while an authorised client keeps working: the trigger answers 401/413 without reading the
    bodies, and its memory stays within +50 MB."""
    import socket
    from concurrent.futures import ThreadPoolExecutor

    import psutil

    trigger = psutil.Process(json.loads((live_stack.state / "run" / "trigger.pid").read_text())["pid"])
    port = int(live_stack.trigger.rsplit(":", 1)[1])
    baseline = trigger.memory_info().rss
    peak = [baseline]
    stop = [False]

    def sample() -> None:
        while not stop[0]:
            peak[0] = max(peak[0], trigger.memory_info().rss)
            time.sleep(0.05)

    def flood(i: int) -> int:
        authorised = i >= 10
        headers = ["POST /process-huggingface HTTP/1.1", f"Host: 127.0.0.1:{port}",
                   "Content-Type: application/json", "Content-Length: 209715200"]
        if authorised:
            headers.append(f"Authorization: Bearer {SECRET}")
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
            response = sock.recv(4096).decode(errors="replace")  # answered from the headers alone
            chunk = b"A" * (1 << 20)
            try:  # then push the body anyway, as an attacker would: the trigger has stopped listening
                for _ in range(200):
                    sock.sendall(chunk)
            except OSError:
                pass
        return int(response.split(" ", 2)[1])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with ThreadPoolExecutor(max_workers=13) as pool:
        floods = [pool.submit(flood, i) for i in range(13)]
        with live_stack.client() as client:  # meanwhile, the app's own requests keep working
            for _ in range(5):
                assert client.get(f"/jobs/{uuid.uuid4()}").status_code == 404
                assert client.get("/healthz").status_code == 200
        statuses = [f.result() for f in floods]
    stop[0] = True
    sampler.join()
    assert statuses[:10] == [401] * 10 and statuses[10:] == [413] * 3
    assert peak[0] - baseline < 50 * 2**20, f"trigger grew {(peak[0] - baseline) / 2**20:.0f} MB"


def _prefect(live_stack: LiveStack, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, f"{live_stack.api_url}{path}", timeout=30, **kwargs)
    response.raise_for_status()
    return response.json() if response.content else None


def test_an_import_reads_well_in_the_prefect_ui(live_stack: LiveStack, tmp_path: Path) -> None:
    """What an operator sees, in a real browser (Debian's Chromium, headless, driven by Playwright): the
    run named after its dataset, the progress artifact at 100 %, and the summary with the counts."""
    from playwright.sync_api import sync_playwright

    with live_stack.client() as client:
        body = client.post("/process-huggingface", json={"dataset": "sample"}).json()
    job = live_stack.wait_for(body["job_id"], {"completed", "failed"})
    assert job["status"] == "completed", job
    run = _prefect(live_stack, "GET", f"/flow_runs/{body['flow_run_id']}")
    assert run["name"] == "sample:train"
    assert {"hf-ingest", "dataset:sample", "source:api"} <= set(run["tags"])
    artifacts = _prefect(live_stack, "POST", "/artifacts/filter",
                         json={"artifacts": {"flow_run_id": {"any_": [body["flow_run_id"]]}}})
    by_type = {a["type"]: a for a in artifacts}
    assert by_type["progress"]["data"] == 100.0
    assert "| rows seen | 27 |" in by_type["markdown"]["data"] and "`not_an_image` | 1" in by_type["markdown"]["data"]

    ui = live_stack.api_url.removesuffix("/api")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{ui}/runs/flow-run/{body['flow_run_id']}", wait_until="networkidle")
            # the run's name, once the UI has rendered it (an empty body right after "networkidle" was seen)
            page.get_by_text("sample:train").first.wait_for(timeout=15_000)
            page.get_by_text("Artifacts", exact=True).first.click()
            page.get_by_text("progress-sample", exact=True).last.click()
            page.get_by_text("Progress: 100%").wait_for(timeout=15_000)
            page.screenshot(path=str(tmp_path / "progress.png"))
            page.go_back(wait_until="networkidle")
            page.get_by_text("Artifacts", exact=True).first.click()
            page.get_by_text("summary-sample", exact=True).last.click()
            page.get_by_text("rows seen").wait_for(timeout=15_000)
            summary = page.inner_text("body")
            page.screenshot(path=str(tmp_path / "summary.png"))
        finally:
            browser.close()
    assert "sample · default · train: completed" in summary and "not_an_image" in summary


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_a_deployment_run_with_parameters_the_trigger_would_refuse_fails_fast_with_the_reason(
    live_stack: LiveStack,
) -> None:
    """From the Prefect UI or `prefect deployment run`, the same validation as the trigger's."""
    env = {**live_stack.env, "PREFECT_API_URL": live_stack.api_url}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "prefect"), "deployment", "run", "hf-ingest/default",
         "-p", "dataset=/etc", "-p", "revision=main"],
        env=env, cwd=CHECKOUT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    flow_run_id = _flow_run_id_from(result.stdout)
    deadline = time.monotonic() + 60
    while (job := live_stack.store.get_job(uuid.UUID(flow_run_id))) is None or not job.status.is_terminal:
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
    assert job.status.value == "failed" and "dataset folder must lie inside LOCAL_DATASET_ROOT" in (job.error or "")
    assert live_stack.store.count_scenes(job_id=job.id) == 0
    run = _prefect(live_stack, "GET", f"/flow_runs/{flow_run_id}")
    assert run["state"]["type"] == "FAILED"


def test_cancelling_a_run_that_already_finished_reports_how_it_ended(live_stack: LiveStack) -> None:
    """Prefect refuses to cancel a completed run: the job then shows how the run really ended (a job row
    whose hook never wrote the outcome is what makes this case reachable)."""
    with live_stack.client() as client:
        body = client.post("/process-huggingface", json={"dataset": "sample", "limit": 2}).json()
        live_stack.wait_for(body["job_id"], {"completed"})
        stale = uuid.uuid4()  # a job that still says running, for that completed run
        live_stack.store.create_job(stale, {"dataset": "sample", "limit": 2}, flow_run_id=body["flow_run_id"])
        live_stack.store.advance(stale, JobStatus.RUNNING)
        response = client.post(f"/jobs/{stale}/cancel")
        assert response.status_code == 409, response.text
        assert "the flow run is Completed, not cancelled; the job is completed" in response.json()["detail"]
        assert client.get(f"/jobs/{stale}").json()["status"] == "completed"
    assert _prefect(live_stack, "GET", f"/flow_runs/{body['flow_run_id']}")["state"]["type"] == "COMPLETED"

