"""The process-wide helpers in hf_ingest.runtime."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref
from pathlib import Path

from hf_ingest import runtime

CHECKOUT = Path(__file__).resolve().parents[1]


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_freezing_collects_the_young_dead_and_takes_the_living_out_of_gc_scans_until_exit() -> None:
    dead = _Node()
    dead_ref = weakref.ref(dead)
    del dead
    alive = _Node()
    assert any(o is alive for o in gc.get_objects())
    with runtime.long_lived_objects_frozen():
        assert dead_ref() is None, "a dead cycle was frozen instead of collected"
        assert gc.get_freeze_count() > 0
        assert not any(o is alive for o in gc.get_objects()), "a living object is still scanned"
    assert gc.get_freeze_count() == 0
    assert any(o is alive for o in gc.get_objects()), "frozen objects were not handed back to the collector"
    assert alive.me is alive


def test_a_flow_runs_process_imports_without_collections_then_collects_as_usual() -> None:
    """`python -m flows.engine` (the deployments' command): the imports every run needs are made with the collector
    off and frozen out of later scans, and the collector is on again before Prefect's engine runs."""
    probe = (
        "import gc, sys\n"
        "from flows.engine import import_quietly\n"
        "counts = []\n"
        "gc.callbacks.append(lambda phase, info: counts.append(info['generation']) if phase == 'start' else None)\n"
        "import_quietly()\n"
        "assert 'datasets' in sys.modules and 'prefect.flow_engine' in sys.modules and 'flows.import_shard' in sys.modules\n"
        "assert not counts, f'{len(counts)} collections ran during the imports'\n"
        "assert gc.isenabled() and gc.get_freeze_count() > 100_000, gc.get_freeze_count()\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=CHECKOUT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
