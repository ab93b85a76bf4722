"""Near-duplicate groups of one split's scenes, from their perceptual hashes, without comparing every pair.

Scenes whose 64-bit pHashes are at most `max_distance` bits apart are linked; the connected groups are
the near-duplicate groups, and every scene of a group but its first (the lowest `row_index`) gets
`duplicate_of` = that first scene. Equal hashes (exact byte duplicates among them) always link.

Candidates come from locality-sensitive hashing by bit sampling: TABLES tables, each keyed by
KEY_BITS bits of the hash picked at random (the same picks every run). Two hashes d bits apart share a
table's key with probability C(64-d, k)/C(64, k), so a pair is found in at least one table with
probability, for the defaults: d <= 6: > 99.9 %, d = 8: 99.9 %, d = 10: 97 %, d = 12: 88 %; unrelated
photos (~32 bits apart) share a key once in ~2^18 pairs per table, and every candidate is checked
on its full hash before it links. The work is numpy over arrays: sorting each table's keys and
comparing neighbours, ~0.07 s per table for 1,000,000 scenes, the tables spread over the machine's cores
(numpy lets the GIL go in each step; bench: `bench/near_duplicates.py`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from hf_ingest.jobstore import JobStore, SplitKey

TABLES = 128
KEY_BITS = 18
NEIGHBOURS = 8  # in a table's sorted order, each scene is compared with this many after it sharing its key
MAX_THREADS = 4  # tables at once: each holds ~60 MB of arrays per 1,000,000 scenes while it runs
_SEED = 0x6866  # the bit picks: fixed, so a grouping is the same on every run and every machine


@dataclass(frozen=True)
class Grouping:
    """For each scene (in the order given): the index of its group's first scene, or its own index."""

    first: np.ndarray

    @property
    def duplicates(self) -> int:
        return int(np.count_nonzero(self.first != np.arange(len(self.first))))


def parse_hashes(hexes: list[str]) -> np.ndarray:
    return np.array([int(h, 16) for h in hexes], dtype=np.uint64)


def group(row_index: np.ndarray, hashes: np.ndarray, max_distance: int) -> Grouping:
    """Group scenes by pHash distance; `first[i]` is the index (into the inputs) of the lowest-row scene of
    i's group."""
    n = len(hashes)
    if n == 0:
        return Grouping(np.zeros(0, dtype=np.int64))
    by_row = np.argsort(row_index, kind="stable")  # work in row order: a group's smallest index is its first row
    h = np.ascontiguousarray(hashes[by_row], dtype=np.uint64)
    values, first_of_value, inverse = np.unique(h, return_index=True, return_inverse=True)
    pairs = [(np.arange(n), first_of_value[inverse])]  # equal hashes: each scene to the first with its hash
    if max_distance > 0:  # distinct hashes, each once (a thousand copies of one picture are one key)
        rng = np.random.default_rng(_SEED)
        picks = [rng.choice(64, KEY_BITS, replace=False) for _ in range(TABLES)]
        with ThreadPoolExecutor(min(MAX_THREADS, os.cpu_count() or 1), thread_name_prefix="near-duplicates") as pool:
            for a, b in pool.map(lambda bits: _table_pairs(values, bits, max_distance), picks):
                pairs.append((first_of_value[a], first_of_value[b]))
    a = np.concatenate([p[0] for p in pairs])
    b = np.concatenate([p[1] for p in pairs])
    labels = _components(n, a, b)
    first = np.empty(n, dtype=np.int64)
    first[by_row] = by_row[labels]
    return Grouping(first)


def _table_pairs(h: np.ndarray, bits: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs that share this table's key and are within `max_distance` bits: in the table's sorted order, each
    hash against the NEIGHBOURS after it, compared where they lie (the sorted hashes gathered once; gathering
    every candidate pair's hashes instead took twice as long)."""
    key = np.zeros(len(h), dtype=np.uint64)
    for position, bit in enumerate(bits):
        key |= ((h >> np.uint64(bit)) & np.uint64(1)) << np.uint64(position)
    order = _key_order(key)
    sorted_keys, sorted_hashes = key[order], h[order]
    found_a, found_b = [], []
    for offset in range(1, NEIGHBOURS + 1):
        same = sorted_keys[offset:] == sorted_keys[:-offset]
        if not same.any():
            break
        close = np.flatnonzero(same & (np.bitwise_count(sorted_hashes[offset:] ^ sorted_hashes[:-offset]) <= max_distance))
        found_a.append(order[close])
        found_b.append(order[close + offset])
    if not found_a:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(found_a), np.concatenate(found_b)


def _key_order(key: np.ndarray) -> np.ndarray:
    """The indexes that sort `key` (KEY_BITS <= 24 bits): two stable sorts, by its low 16 bits then its high
    bits, that numpy does as radix sorts in linear time (one comparison sort of the keys took 5x longer:
    1.5 of the 3 s of grouping 200,000 scenes). Any order within a key will do."""
    order = np.argsort((key & np.uint64(0xFFFF)).astype(np.uint16), kind="stable")
    return order[np.argsort((key[order] >> np.uint64(16)).astype(np.uint8), kind="stable")]


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest index of each index's connected component over the links (a[i], b[i])."""
    labels = np.arange(n)
    if len(a) == 0:
        return labels
    while True:
        low = np.minimum(labels[a], labels[b])
        before = labels.copy()
        np.minimum.at(labels, a, low)
        np.minimum.at(labels, b, low)
        while True:  # point every index at its label's label until nothing moves
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped
        if np.array_equal(labels, before):
            return labels


def regroup(store: JobStore, split: SplitKey, max_distance: int) -> int:
    """Group the split's scenes (every shard's, and earlier imports') and write only the `duplicate_of`
    values that change; returns how many of its scenes are near-duplicates of an earlier one."""
    scenes = store.scene_hashes(split)
    grouping = group(np.array(scenes.row_index, dtype=np.int64), parse_hashes(scenes.phash), max_distance)
    ids = np.array(scenes.ids, dtype=object)
    wanted = ids[grouping.first]
    wanted[grouping.first == np.arange(len(ids))] = None  # a group's first scene is nobody's duplicate
    changed = np.flatnonzero(wanted != np.array(scenes.duplicate_of, dtype=object))
    store.set_duplicates(dict(zip(ids[changed].tolist(), wanted[changed].tolist(), strict=True)))
    return grouping.duplicates
