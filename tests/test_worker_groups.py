"""The scheduler of `make test` keeps each group of end-to-end modules on one worker and sends the groups first."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import worker_groups
from tests.worker_groups import GroupScheduling


class _Config:
    """What xdist's scheduler reads from pytest's config: two workers, scopes reordered by size (its default)."""

    class option:
        loadscopereorder = True

    @staticmethod
    def getvalue(name: str) -> object:
        return {"tx": ["2*popen"]}[name]


class _Worker:
    def __init__(self, name: str) -> None:
        self.name, self.shutting_down = name, False
        self.sent: list[int] = []
        self.gateway = type("Gateway", (), {"id": name})()

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent.extend(indices)

    def shutdown(self) -> None:
        self.shutting_down = True


def test_each_group_runs_on_one_worker_and_the_groups_go_first() -> None:
    collection = [
        "tests/test_cli.py::test_a", "tests/test_platform_restarts.py::test_a", "tests/test_platform_restarts.py::test_b",
        "tests/test_scale_out.py::test_a", "tests/test_scale_out.py::test_b", "tests/test_scale_out.py::test_c",
        "tests/test_shards.py::test_a", "tests/test_trigger_e2e.py::test_a[x]", "tests/test_trigger_e2e.py::test_a[y]",
    ]
    scheduler = GroupScheduling(_Config())  # type: ignore[arg-type]
    workers = [_Worker("gw0"), _Worker("gw1")]
    for worker in workers:
        scheduler.add_node(worker)  # type: ignore[arg-type]
        scheduler.add_node_collection(worker, collection)  # type: ignore[arg-type]
    scheduler.schedule()
    first = {worker.name: [collection[i] for i in worker.sent] for worker in workers}
    assert first == {  # live-stack (4 tests) and scale-out (3) first, one worker each; the rest waits for a free one
        "gw0": [name for name in collection if "platform_restarts" in name or "trigger_e2e" in name],
        "gw1": [name for name in collection if "scale_out" in name],
    }
    for index in list(workers[1].sent):  # gw1 finishes its group: it takes the single tests, one at a time
        scheduler.mark_test_complete(workers[1], index)  # type: ignore[arg-type]
    taken = [collection[i] for i in workers[1].sent[3:]]
    assert taken and all(worker_groups.group_of(name) is None for name in taken)


def test_a_group_claimed_by_a_second_worker_fails_the_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    worker_groups.claim("live-stack")
    worker_groups.claim("live-stack")  # the same worker again (a module of the group after another): fine
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    with pytest.raises(pytest.fail.Exception, match="'live-stack' group started on gw1 after gw0"):
        worker_groups.claim("live-stack")
