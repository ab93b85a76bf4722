"""`hf-ingest` as a user types it: a subprocess on the bundled sample dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from hf_ingest.cli import build_parser
from hf_ingest.sample import sample_rows


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hf_ingest.cli", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_make_sample_then_run_prints_the_completed_job(isolated_settings: Path, prefect_api: str) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    made = _cli(["make-sample", "sample"], env, isolated_settings)
    assert made.returncode == 0, made.stderr
    assert (isolated_settings / "sample" / "data" / "train-00000-of-00001.parquet").exists()

    run = _cli(["run", "sample"], env, isolated_settings)
    assert run.returncode == 0, run.stderr[-3000:]
    job = json.loads(run.stdout)
    valid = sum(1 for r in sample_rows() if r["scene"] != "broken")
    assert job["status"] == "completed"
    assert job["progress"]["stored"] == valid
    assert job["progress"]["invalid"] == {"corrupt": 1, "empty": 1, "not_an_image": 1}
    assert f"rows: {valid} scenes of this job" in run.stderr
    assert "images: file://" in run.stderr

    shown = _cli(["show", job["id"]], env, isolated_settings)
    assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == job["id"]

    # The CLI skips Python's module teardown on exit (hf_ingest/fast_exit.py); the run's last
    # log lines must still have reached the server before the process ended.
    logs = httpx.post(
        f"{prefect_api}/logs/filter",
        json={"logs": {"flow_run_id": {"any_": [job["flow_run_id"]]}}, "sort": "TIMESTAMP_ASC"},
    ).json()
    assert "Finished in state Completed()" in [entry["message"] for entry in logs][-3:]


def test_bad_arguments_are_refused_before_any_run(isolated_settings: Path) -> None:
    run = _cli(["run", "sample", "--limit", "-3"], dict(os.environ), isolated_settings)
    assert run.returncode == 2 and "must be >= 0" in run.stderr


def test_a_failed_import_exits_non_zero_with_the_reason(isolated_settings: Path, prefect_api: str) -> None:
    from hf_ingest.hub_formats import write_parquet_dataset

    write_parquet_dataset(isolated_settings / "text-only", [{"text": "hello"}])
    run = _cli(["run", "text-only"], {**os.environ, "PREFECT_API_URL": prefect_api}, isolated_settings)
    assert run.returncode == 1
    assert json.loads(run.stdout)["status"] == "failed"
    assert "has no image column" in run.stderr


@pytest.mark.parametrize("layout", ["parquet", "imagefolder"])
def test_run_a_hub_id_as_a_new_user_would(
    isolated_settings: Path, prefect_api: str, hub: "object", layout: str
) -> None:
    """`hf-ingest run OWNER/NAME` against the Hub (the tests' Hub server at HF_ENDPOINT): a repo holding
    a few broken images completes with exactly the valid images stored."""
    import hashlib
    import uuid

    from hf_ingest.hub_formats import write_imagefolder, write_parquet_dataset
    from tests.image_cases import cases, expected_invalid, valid_cases

    folder = isolated_settings / "upload"
    if layout == "parquet":
        write_parquet_dataset(folder, [{"image": c.data, "name": c.name} for c in cases()], shards=2)
    else:
        write_imagefolder(folder, [(f"{c.name}.{'jpg' if c.extension == 'bin' else c.extension}", c.data,
                                    {"name": c.name}) for c in cases()], metadata_format="jsonl")
    repo = f"someone/{layout}-{uuid.uuid4().hex[:6]}"
    commit = hub.publish(repo, folder)  # type: ignore[attr-defined]

    run = _cli(["run", repo], {**os.environ, "PREFECT_API_URL": prefect_api}, isolated_settings)

    assert run.returncode == 0, run.stderr[-3000:]
    job = json.loads(run.stdout)
    assert job["status"] == "completed" and job["params"]["dataset"] == repo
    assert job["progress"]["revision"] == commit
    assert job["progress"]["invalid"] == expected_invalid()
    assert job["progress"]["stored"] == len(valid_cases())
    objects = isolated_settings / "objects" / "images"
    stored = {hashlib.sha256(p.read_bytes()).hexdigest() for p in objects.rglob("*") if p.is_file()}
    assert stored == {hashlib.sha256(c.data).hexdigest() for c in valid_cases()}


def test_a_worker_runs_at_most_this_machines_cores_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    """`hf-ingest worker` is Prefect's process worker for the hf-ingest pool with a limit: this machine's cores by
    default (a shard run is one busy process), WORKER_LIMIT or --limit otherwise."""
    from deployments.worker import machine_cores, worker_argv
    from hf_ingest import runtime

    argv = worker_argv(None, "machine-1")
    assert argv[1:] == ["worker", "start", "--pool", "hf-ingest", "--type", "process", "--limit",
                        str(machine_cores()), "--name", "machine-1"]
    assert machine_cores() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("WORKER_LIMIT", "7")
    runtime.reset()
    assert worker_argv(None, None)[-2:] == ["--limit", "7"]
    assert worker_argv(3, None)[-2:] == ["--limit", "3"]
    assert build_parser().parse_args(["worker", "--limit", "2", "--name", "w"]).limit == 2
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "--limit", "0"])
