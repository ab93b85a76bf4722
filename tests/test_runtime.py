"""The process-wide helpers in hf_ingest.runtime."""

from __future__ import annotations

import gc
import weakref

from hf_ingest import runtime


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
