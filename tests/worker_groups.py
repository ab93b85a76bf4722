"""Which test modules run whole on one worker of `make test` (pytest-xdist), and the scheduler that keeps them there.

The end-to-end modules share one expensive stack per group (a `make up` of their own: PostgreSQL, Prefect server,
worker, trigger): split over two workers, each worker would start the stack again. xdist's own `--dist loadgroup`
no longer groups under pytest 9.2 (it rewrites a node id field pytest stopped reading: pytest-dev/pytest-xdist#1386),
and did so silently, so the groups are named here, by module, and scheduled by a scheduler of ours.

The groups go out first, the largest first (they are the suite's longest chains); every other test is a unit of
its own, handed to whichever worker is free.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

GROUPS = {
    "tests/test_platform_restarts.py": "live-stack",
    "tests/test_trigger_e2e.py": "live-stack",
    "tests/test_scale_out.py": "scale-out",
    "tests/test_suite_guard.py": "sub-suites",
}


def group_of(nodeid: str) -> str | None:
    """The group a test belongs to, if any."""
    return GROUPS.get(nodeid.split("::", 1)[0])


class GroupScheduling(LoadScopeScheduling):
    """xdist's scope scheduling with the groups above as scopes and every other test a scope of one."""

    def _split_scope(self, nodeid: str) -> str:
        return group_of(nodeid) or nodeid


def claim(group: str) -> None:
    """Called where a group starts its stack: fails the test if another worker of the session started it already,
    which would mean the groups above no longer hold (and the suite pays for the stack twice)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    marker = Path(tempfile.gettempdir()) / f"worker-group-{group}"
    try:
        with marker.open("x") as file:
            file.write(worker)
        return
    except FileExistsError:
        holder = marker.read_text()
    if holder != worker:
        pytest.fail(f"the {group!r} group started on {worker} after {holder}: tests/worker_groups.py no longer "
                    "keeps its modules on one worker")
