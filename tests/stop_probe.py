"""Not collected by `make test` (no `test_` prefix): `test_suite_guard.py` runs it as a suite of its own,
with every kind of server the suite starts running at once, then stops it with a signal.

The one test starts them all through the suite's own fixtures and helpers (Prefect's test server,
PostgreSQL, SeaweedFS, moto, the Hub server, the stack `make up` starts, headless Chromium), writes
the file HF_INGEST_STOP_PROBE_READY names, and waits to be stopped.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fault_proxy import free_port
from tests.live_stack import _stack_command
from tests.test_trigger_e2e import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture
def stack() -> Iterator[Path]:
    state = Path(tempfile.mkdtemp(prefix="hf-ingest-stop-probe-"))
    env = {**os.environ, "HF_INGEST_STATE_DIR": str(state), "PREFECT_PORT": str(free_port()),
           "TRIGGER_PORT": str(free_port()), "WEBHOOK_SECRET": "stop-probe-secret"}
    try:
        up = _stack_command(env, "up")
        assert up.returncode == 0, up.stderr
        yield state
    finally:
        _stack_command(env, "down")
        from deployments.stack import Stack, remove_state

        remove_state(Stack(state, 0, 0))


def _ready_then_wait() -> None:
    Path(os.environ["HF_INGEST_STOP_PROBE_READY"]).write_text("ready")
    time.sleep(600)


def test_wait_with_every_server(
    prefect_api: str, postgres_url: str, seaweed: object, moto_endpoint: str, hub_server: object, stack: Path
) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            browser.new_page().goto(f"{prefect_api.removesuffix('/api')}/api/health")
            _ready_then_wait()
        finally:
            browser.close()


def test_wait_with_the_servers_that_start_fast(postgres_url: str, seaweed: object, hub_server: object) -> None:
    _ready_then_wait()
