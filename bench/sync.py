"""A dataset kept current (issue 23's rows): one Hub dataset over four commits, through the tests' Hub-API
server (olah), each imported with `hf-ingest run` into the same database and store, as a schedule would.

  commit 1: 4 parquet files of small images (BENCH_SYNC_ROWS, 100,000 rows), imported in full = T;
  commit 2: only README.md changes: the sync should cost at most 0.10 T;
  commit 3: a fifth file appended as `push_to_hub(append=True)` does (the old files renamed `-of-00005`,
            byte for byte): at most 0.35 T;
  commit 4: the second file rewritten with 10 % more rows: only it is read, the files after it move.
Every commit ends checked row by row: one live scene per valid row, with that row's image (sha256).
The fixed start-up of any `hf-ingest run` (a new process, Prefect imported, one empty flow run: `floor`)
is measured in the same run and printed beside the syncs, which are mostly that.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import sqlalchemy as sa

from bench.datasets import small_image
from bench.measure import SCRATCH, run_import
from hf_ingest.hub_formats import write_parquet_file

FILES = 4


def _write_file(path: Path, first: int, count: int) -> None:
    write_parquet_file(path, [{"image": small_image(first + i), "i": first + i} for i in range(count)])


def _name(index: int, of: int) -> str:
    return f"data/train-{index:05d}-of-{of:05d}.parquet"


def _check(folder: Path, database: str, repo: str) -> int:
    """Every valid row of the split at this commit has exactly one live scene, with its image; returns rows."""
    expected: dict[int, str] = {}
    row = 0
    for path in sorted(folder.glob("data/*.parquet")):
        for value in pq.read_table(path, columns=["image"]).column("image").to_pylist():
            expected[row] = hashlib.sha256(value["bytes"]).hexdigest()
            row += 1
    engine = sa.create_engine(database)
    with engine.connect() as conn:
        live = conn.execute(sa.text("select row_index, sha256 from scenes where dataset = :d and removed_at is null"),
                            {"d": repo}).all()
    engine.dispose()
    found = {r.row_index: r.sha256 for r in live}
    if len(found) != len(live) or found != expected:
        wrong = sum(1 for r, sha in expected.items() if found.get(r) != sha) + len(set(found) - set(expected))
        raise SystemExit(f"sync of {repo}: {wrong} rows wrong after the import")
    return row


def measure(env: dict[str, str], settle: Callable[[], None], rows: int | None = None) -> dict[str, Any]:
    """The four commits' imports (and the start-up floor), each checked; their runs as `run_import` gives."""
    from tests.hub_server import HubServer

    rows = rows or int(os.environ.get("BENCH_SYNC_ROWS", 100_000))
    per_file = rows // FILES
    SCRATCH.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="sync-", dir=SCRATCH))
    folder, database, storage = work / "repo", f"sqlite:///{work / 'db.sqlite'}", str(work / "objects")
    hub = HubServer().start()
    try:
        hub_env = {**env, **hub.env()}
        repo = "bench/kept-current"
        for index in range(FILES):
            _write_file(folder / _name(index, FILES), index * per_file, per_file)
        (folder / "README.md").write_text("# kept current\n")
        runs: dict[str, Any] = {}

        def commit(name: str, message: str) -> None:
            hub.publish(repo, folder, message)
            runs[name] = run_import("flow", repo, hub_env, settle, storage=storage, database=database)
            runs[name]["progress"] = _progress(runs[name])
            runs[name]["rows_checked"] = _check(folder, database, repo)

        commit("sync_commit1_full", "four files")
        (folder / "README.md").write_text("# kept current\n\nThe card, edited.\n")
        commit("sync_commit2_card", "card edit")
        for index in range(FILES):
            os.rename(folder / _name(index, FILES), folder / _name(index, FILES + 1))
        _write_file(folder / _name(FILES, FILES + 1), 10 * rows, per_file)
        commit("sync_commit3_append", "append")
        _write_file(folder / _name(1, FILES + 1), 20 * rows, per_file + per_file // 10)
        commit("sync_commit4_middle", "middle file grown")
        runs["sync_floor"] = run_import("floor", repo, hub_env, settle)
        return runs
    finally:
        hub.stop()
        shutil.rmtree(work, ignore_errors=True)


def _progress(run: dict[str, Any]) -> dict[str, Any]:
    import json

    progress = json.loads(run["stdout"])["progress"]
    return {name: progress.get(name) for name in ("rows_seen", "files_read", "files_kept", "scenes_unchanged",
                                                   "scenes_moved", "scenes_removed", "scenes_recorded")}


def targets(runs: dict[str, Any]) -> list[tuple[str, bool, str]]:
    full = runs["sync_commit1_full"]["seconds"]
    floor = runs["sync_floor"]["seconds"]

    def row(name: str) -> str:
        run = runs[name]
        p = run["progress"]
        return (f"{run['seconds']:.1f} s = {run['seconds'] / full:.3f} T (T = {full:.1f} s; start-up floor "
                f"{floor:.1f} s); files read {p['files_read']}, kept {p['files_kept']}, rows read {p['rows_seen']:,}, "
                f"scenes moved {p['scenes_moved']:,}; {run['rows_checked']:,} rows checked")

    card, append = runs["sync_commit2_card"], runs["sync_commit3_append"]
    middle = runs["sync_commit4_middle"]
    return [
        ("sync after a card edit <= 0.10 T", card["seconds"] <= 0.10 * full and card["progress"]["files_read"] == 0,
         row("sync_commit2_card")),
        ("sync after an append (old files renamed) <= 0.35 T",
         append["seconds"] <= 0.35 * full and append["progress"]["files_read"] == 1, row("sync_commit3_append")),
        ("sync after a middle file grew: only it read, the rest moved (time reported)",
         middle["progress"]["files_read"] == 1 and middle["progress"]["scenes_moved"] > 0, row("sync_commit4_middle")),
    ]
