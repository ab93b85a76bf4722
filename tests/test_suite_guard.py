"""The suite is hermetic (the caller's HF_*, PREFECT_*, database and storage variables change nothing) and
stoppable (SIGTERM or Ctrl-C ends it within seconds, and none of its servers outlives it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from tests import session_guard

CHECKOUT = Path(__file__).resolve().parents[1]
# What a caller's shell may hold: offline switches, another Hub, another Prefect, another database and bucket.
HOSTILE = {
    "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9/nowhere",
    "HF_TOKEN": "hf_not_the_tests_token", "HF_HOME": "/nonexistent/hf-home",
    "PREFECT_API_URL": "http://127.0.0.1:9/api", "PREFECT_HOME": "/nonexistent/prefect-home",
    "PREFECT_API_DATABASE_CONNECTION_URL": "postgresql+asyncpg://nobody@127.0.0.1:9/none",
    "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none", "STORAGE_URL": "s3://no-such-bucket/x",
    "SUPABASE_URL": "http://127.0.0.1:9", "SUPABASE_SERVICE_ROLE_KEY": "not-a-key",
    "AWS_ACCESS_KEY_ID": "nobody", "S3_ENDPOINT_URL": "http://127.0.0.1:9", "WORKER_LIMIT": "1",
    "BATCH_SIZE": "1", "SHARD_ROWS": "1", "LOCAL_DATASET_ROOT": "/", "HF_INGEST_STATE_DIR": "/nonexistent/state",
}
# Hub tests that failed on a fresh clone with HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 in the shell.
HUB_TESTS = [
    "tests/test_hub_import.py::test_an_imagefolder_repo_with_broken_images_completes_with_the_valid_ones",
    "tests/test_dataset_files.py::test_hub_paths_resolve_inside_the_repo_at_the_commit_only",
]

# tests/worker_groups.py runs this module whole on one worker of `make test`, in the "sub-suites" group.


def test_the_callers_variables_are_dropped_and_named_settings_with_them() -> None:
    environ = {**HOSTILE, "PATH": "/usr/bin", "HOME": "/root", "HF_INGEST_FORBID_SKIPS": "1"}
    dropped = session_guard.clean_environment(environ)
    assert set(dropped) == set(HOSTILE)
    assert environ == {"PATH": "/usr/bin", "HOME": "/root", "HF_INGEST_FORBID_SKIPS": "1"}


def _sub_suite(tmp_path: Path, *targets: str) -> tuple[subprocess.Popen[str], Path, Path, Path]:
    """pytest on `targets` in a session of its own, with the hostile shell above; the last path is the
    session's scratch folder."""
    ready, log, session = tmp_path / "ready", tmp_path / "sub-suite.log", uuid.uuid4().hex
    ours = {name: value for name, value in os.environ.items() if not name.startswith("PYTEST_XDIST_")}
    env = {**ours, **HOSTILE, "HF_INGEST_TEST_SESSION": session,
           "HF_INGEST_STOP_PROBE_READY": str(ready), "TMPDIR": "/nonexistent/tmp"}
    process = subprocess.Popen(  # as `make test` runs it: pyproject's options (its xdist workers)
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "-rA", *targets],
        cwd=CHECKOUT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    return process, ready, log, session_guard.scratch_dir(session)


def _wait_for(path: Path, process: subprocess.Popen[str], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the sub-suite ended early:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"the sub-suite was not ready in {timeout:.0f} s:\n{log.read_text()[-4000:]}"
        time.sleep(0.5)


def _snapshot(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _still_running(processes: list[psutil.Process]) -> list[str]:
    left = []
    for process in processes:
        try:  # the same process (psutil compares the start time), and not a zombie
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{process.pid} {' '.join(process.cmdline())[:160]}")
        except psutil.Error:
            continue
    return left


@pytest.mark.timeout(300)
def test_a_hostile_shell_changes_nothing_and_sigterm_stops_the_suite_leaving_no_server(tmp_path: Path) -> None:
    """A sub-suite with the hostile shell runs Hub tests (they pass: the suite sets its own Hub, Prefect and
    database), then starts every kind of server the suite uses at once and waits. SIGTERM to pytest ends it
    within seconds, and not one of its processes (Prefect's test server, the stack's PostgreSQL, Prefect
    server, worker and trigger, PostgreSQL, SeaweedFS, moto, olah, Chromium) is left."""
    _stop_and_check(tmp_path, signal.SIGTERM, "tests/stop_probe.py::test_wait_with_every_server", *HUB_TESTS,
                    servers=("postgres", "weed", "olah", "prefect", "uvicorn", "chromium"))


@pytest.mark.timeout(120)
def test_ctrl_c_stops_the_suite_leaving_no_server(tmp_path: Path) -> None:
    """Ctrl-C: a terminal sends SIGINT to the whole foreground process group."""
    _stop_and_check(tmp_path, signal.SIGINT, "tests/stop_probe.py::test_wait_with_the_servers_that_start_fast",
                    servers=("postgres", "weed", "olah"))


def _temporary_entries() -> set[str]:
    """What the suite's servers would leave in /tmp if they did not use the session's scratch folder (the
    scratch folders of sessions running beside this one, such as the other sub-suite, are theirs)."""
    return {entry.name for entry in Path(session_guard.SCRATCH_ROOT).iterdir()
            if entry.name.startswith(("hf-ingest-", "fault-proxy-", "tmp", "pytest-of-"))
            and not entry.name.startswith("hf-ingest-test-")}


def _stop_and_check(tmp_path: Path, stop: signal.Signals, probe: str, *tests: str, servers: tuple[str, ...]) -> None:
    before = _temporary_entries()
    process, ready, log, scratch = _sub_suite(tmp_path, *tests, probe)
    try:
        _wait_for(ready, process, log, timeout=240)
        deadline = time.monotonic() + 120
        while not all(f"PASSED {test}" in log.read_text() for test in tests):  # the other worker's tests
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.5)
        started = _snapshot(process.pid)
        names = " ".join(" ".join(p.cmdline()) for p in started if p.is_running())
        for server in servers:
            assert server in names, f"{server} is not running in the sub-suite"
        sockets = session_guard.socket_files(started)  # SeaweedFS's, in /tmp whatever its folders
        assert sockets, "SeaweedFS has no socket in /tmp any more: drop the sockets' cleanup in session_guard"
        assert any(scratch.glob("hf-ingest-pg-*/PG_VERSION")), "PostgreSQL's data is not in the scratch folder"
        stopped_at = time.monotonic()
        if stop is signal.SIGINT:
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(stop)
        process.wait(timeout=60)
        took = time.monotonic() - stopped_at
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    output = log.read_text()
    for test in tests:
        assert f"PASSED {test}" in output, output[-4000:]
    assert took < 15, f"the sub-suite took {took:.1f} s to stop"
    assert not scratch.exists(), f"the sub-suite left {sorted(p.name for p in scratch.iterdir())} in {scratch}"
    assert _temporary_entries() - before == set(), "the sub-suite left folders in /tmp"
    assert [path for path in sockets if path.exists()] == [], "the sub-suite left its servers' sockets in /tmp"
    time.sleep(0.5)
    assert _still_running(started) == [], output[-3000:]
