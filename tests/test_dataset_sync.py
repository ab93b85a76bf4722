"""Keeping a dataset current: imports of newer commits through the tests' Hub server (and of a local folder
changed the same way) read only the data files that changed, move rows that only moved, and mark rows
that are gone, ending every time with exactly one live scene per valid row, checked row by row.

The commits are what happens to datasets on the Hub: a card edit; an append as `push_to_hub(append=True)`
makes it (the old files renamed `-of-00005`, byte for byte); a middle file rewritten with rows added; a file
deleted; a revert to the first commit. An imagefolder split is compared row by row (an image replaced, a
caption edited, a row inserted or deleted), a WebDataset split tar by tar.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tarfile
import shutil
import uuid
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from flows.import_dataset import hf_ingest
from hf_ingest import runtime
from hf_ingest.hub_formats import encode_image, write_imagefolder, write_parquet_file, write_webdataset
from hf_ingest.jobstore import Job
from tests.hub_server import HubServer

pytestmark = pytest.mark.usefixtures("prefect_api")

ROWS = 24  # per data file


def _rows(start: int, count: int, broken_every: int = 7) -> list[dict[str, Any]]:
    """Distinct small JPEGs, every `broken_every`-th row a broken image (skipped and counted)."""
    return [{"image": b"broken image" if (start + n) % broken_every == 3 else
             encode_image((30 + (start + n) % 41, 20 + (start + n) % 13), color=((start + n) % 251, 60, 9)),
             "n": start + n} for n in range(count)]


def _name(index: int, of: int) -> str:
    return f"data/train-{index:05d}-of-{of:05d}.parquet"


def _expected(folder: Path) -> dict[int, str]:
    """Row -> sha256 of every valid image of the split, read from the files as the split orders them."""
    expected, row = {}, 0
    for path in sorted(folder.glob("data/*.parquet")):
        for value in pq.read_table(path).column("image").to_pylist():
            data = value["bytes"]
            if data != b"broken image":
                expected[row] = hashlib.sha256(data).hexdigest()
            row += 1
    return expected


def _live(dataset: str) -> dict[int, str]:
    with runtime.job_store().engine.connect() as conn:  # type: ignore[attr-defined]
        rows = conn.execute(sa.text("select row_index, sha256 from scenes where dataset = :d and removed_at is null"),
                            {"d": dataset}).all()
    assert len(rows) == len({r.row_index for r in rows})
    return {r.row_index: r.sha256 for r in rows}


def _removed(dataset: str) -> dict[int, str | None]:
    with runtime.job_store().engine.connect() as conn:  # type: ignore[attr-defined]
        rows = conn.execute(sa.text("select row_index, removed_in from scenes where dataset = :d "
                                    "and removed_at is not null"), {"d": dataset}).all()
    return {r.row_index: r.removed_in for r in rows}


def _import(dataset: str, **parameters: Any) -> Job:
    job_id = uuid.uuid4()
    state = asyncio.run(hf_ingest(dataset=dataset, job_id=job_id, return_state=True, **parameters))
    job = runtime.job_store().get_job(job_id)
    assert job is not None
    assert state.is_completed(), job.error
    return job


class Versions:
    """One dataset's commits: a folder changed in place (a local dataset) and published to the Hub after each
    change (a Hub dataset)."""

    def __init__(self, root: Path, hub: HubServer | None) -> None:
        self.folder = root / "dataset"
        self.hub = hub
        self.repo = f"sync/ds-{uuid.uuid4().hex[:8]}"
        self.commits: list[str] = []

    @property
    def dataset(self) -> str:
        return self.repo if self.hub else str(self.folder)

    def commit(self, message: str) -> None:
        if self.hub:
            self.commits.append(self.hub.publish(self.repo, self.folder, message))

    def removed_in(self) -> str | None:
        return self.commits[-1] if self.hub else None


@pytest.fixture(params=["hub", "local"])
def versions(request: pytest.FixtureRequest, tmp_path: Path) -> Versions:
    hub = request.getfixturevalue("hub") if request.param == "hub" else None
    return Versions(tmp_path, hub)


def test_a_dataset_kept_current_over_its_commits_reads_only_what_changed(versions: Versions) -> None:
    folder = versions.folder
    for index in range(4):
        write_parquet_file(folder / _name(index, 4), _rows(index * ROWS, ROWS))
    (folder / "README.md").write_text("# the first card\n")
    versions.commit("four files")

    first = _import(versions.dataset)
    assert first.progress["files_read"] == 4 and first.progress["files_kept"] == 0
    assert _live(versions.dataset) == _expected(folder)

    (folder / "README.md").write_text("# the card, edited\n")  # commit 2: only the card
    versions.commit("card edit")
    if versions.hub:
        versions.hub.proxy.requests.clear()
    card = _import(versions.dataset)
    if versions.hub:  # the kept files' rows and schema come from the record: no data file is read at all
        read = {path.rsplit("/", 1)[-1] for method, path in versions.hub.proxy.requests if path.endswith(".parquet")}
        assert read == set(), read
    assert (card.progress["files_read"], card.progress["files_kept"], card.progress["rows_seen"]) == (0, 4, 0)
    assert card.progress["scenes_unchanged"] == 4 * ROWS and card.progress["scenes_removed"] == 0
    assert _live(versions.dataset) == _expected(folder)

    for index in range(4):  # commit 3: push_to_hub(append=True): the old files renamed, a fifth added
        os.rename(folder / _name(index, 4), folder / _name(index, 5))
    write_parquet_file(folder / _name(4, 5), _rows(1000, ROWS))
    versions.commit("append")
    appended = _import(versions.dataset)
    assert (appended.progress["files_read"], appended.progress["files_kept"]) == (1, 4)
    assert appended.progress["rows_seen"] == ROWS and appended.progress["scenes_moved"] == 0
    assert _live(versions.dataset) == _expected(folder)

    write_parquet_file(folder / _name(1, 5), _rows(2000, ROWS + 5))  # commit 4: a middle file grows by 5 rows
    versions.commit("middle file changed")
    grown = _import(versions.dataset)
    assert (grown.progress["files_read"], grown.progress["files_kept"]) == (1, 4)
    assert grown.progress["rows_seen"] == ROWS + 5  # only that file was read
    valid_after_it = sum(1 for row in _expected(folder) if row >= 2 * ROWS + 5)
    assert grown.progress["scenes_moved"] == valid_after_it  # the three files after it, without being read
    assert _live(versions.dataset) == _expected(folder)

    (folder / _name(2, 5)).unlink()  # commit 5: a file deleted: the rest moves down, the end comes earlier
    versions.commit("a file deleted")
    deleted = _import(versions.dataset)
    assert deleted.progress["files_read"] == 0 and deleted.progress["rows_seen"] == 0
    assert deleted.progress["scenes_removed"] > 0
    assert _live(versions.dataset) == _expected(folder)
    removed = _removed(versions.dataset)
    assert not set(removed) & set(_expected(folder))  # a removed scene is never at a valid row
    assert max(removed) >= 4 * ROWS and versions.removed_in() in set(removed.values())

    shutil.rmtree(folder / "data")  # commit 6: a revert to the first commit
    for index in range(4):
        write_parquet_file(folder / _name(index, 4), _rows(index * ROWS, ROWS))
    versions.commit("revert")
    reverted = _import(versions.dataset)
    assert _live(versions.dataset) == _expected(folder)
    assert len(_live(versions.dataset)) == len(_expected(folder))
    assert not set(_removed(versions.dataset)) & set(_expected(folder))  # rows back in the split came back to life
    if versions.hub:  # blob ids are content: the first and fourth files are as recorded, the other two read
        assert (reverted.progress["files_kept"], reverted.progress["files_read"]) == (2, 2)
    else:  # every file was written anew (new modification times): all read
        assert (reverted.progress["files_kept"], reverted.progress["files_read"]) == (0, 4)


def test_a_sync_that_crashes_half_way_is_finished_by_the_next_import(hub: HubServer, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    versions = Versions(tmp_path, hub)
    folder = versions.folder
    for index in range(3):
        write_parquet_file(folder / _name(index, 3), _rows(index * ROWS, ROWS))
    versions.commit("three files")
    _import(versions.dataset)

    write_parquet_file(folder / _name(0, 3), _rows(5000, ROWS + 3))  # the first file grows: the other two move
    versions.commit("first file grown")
    import flows.import_tasks

    real = flows.import_tasks.ingest_batch

    def crash(rows: Any, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the worker died here")

    monkeypatch.setattr("flows.import_tasks.ingest_batch", crash)
    job_id = uuid.uuid4()
    state = asyncio.run(hf_ingest(dataset=versions.dataset, job_id=job_id, return_state=True))
    assert state.is_failed()
    monkeypatch.setattr("flows.import_tasks.ingest_batch", real)

    retried = _import(versions.dataset)  # the moves were made once; the grown file is read now
    assert retried.progress["files_read"] == 1 and retried.progress["scenes_moved"] == 0
    assert _live(versions.dataset) == _expected(folder)


def test_an_image_that_became_invalid_is_removed_and_a_limit_import_forgets_the_layout(
    hub: HubServer, tmp_path: Path
) -> None:
    versions = Versions(tmp_path, hub)
    folder = versions.folder
    rows = _rows(0, ROWS)
    write_parquet_file(folder / _name(0, 1), rows)
    versions.commit("one file")
    _import(versions.dataset)
    rows[0]["image"] = b"broken image"  # row 0's image is broken at the next commit
    write_parquet_file(folder / _name(0, 1), rows)
    versions.commit("row 0 broken")
    again = _import(versions.dataset)
    assert again.progress["scenes_removed"] == 1 and 0 not in _live(versions.dataset)
    assert _live(versions.dataset) == _expected(folder)

    limited = _import(versions.dataset, limit=5)  # a limit reads part of the split: no sync is planned after it
    assert "files_read" not in limited.progress
    full = _import(versions.dataset)
    assert full.progress["files_read"] == 1  # read again in full, as nothing recorded says it is current


def test_an_imagefolder_repo_that_lost_its_last_image_marks_that_scene_removed(hub: HubServer, tmp_path: Path) -> None:
    images = [(f"img{n:02d}.jpg", encode_image((30 + n, 20), color=(n, 9, 9)), {"caption": f"n{n}"}) for n in range(6)]
    repo = f"sync/folder-{uuid.uuid4().hex[:8]}"
    hub.publish(repo, write_imagefolder(tmp_path / "v1", images))
    _import(repo)
    assert len(_live(repo)) == 6
    commit = hub.publish(repo, write_imagefolder(tmp_path / "v2", images[:5]), "last image removed")
    _import(repo)
    assert sorted(_live(repo)) == list(range(5)) and _removed(repo) == {5: commit}


class Folder:
    """An imagefolder split (`train/` with a `metadata.csv`) changed in place, one image file at a time."""

    def __init__(self, versions: Versions) -> None:
        self.versions = versions
        self.split = versions.folder / "train"
        self.split.mkdir(parents=True)
        self.rows: list[tuple[str, str]] = []  # (file name, caption), in the metadata's order: the split's rows

    def put(self, name: str, seed: int, caption: str, at: int | None = None) -> None:
        data = b"broken image" if seed % 7 == 3 else encode_image((30 + seed % 41, 20 + seed % 13), color=(seed % 251, 9, 60))
        (self.split / name).write_bytes(data)
        if all(existing != name for existing, _ in self.rows):
            self.rows.insert(len(self.rows) if at is None else at, (name, caption))

    def caption(self, name: str, caption: str) -> None:
        self.rows = [(n, caption if n == name else c) for n, c in self.rows]

    def delete(self, name: str) -> None:
        (self.split / name).unlink()
        self.rows = [(n, c) for n, c in self.rows if n != name]

    def commit(self, message: str) -> None:
        lines = ["file_name,caption", *(f"{name},{caption}" for name, caption in self.rows)]
        (self.split / "metadata.csv").write_text("\n".join(lines) + "\n")
        self.versions.commit(message)

    def expected(self) -> dict[int, str]:
        return {row: hashlib.sha256(data).hexdigest() for row, (name, _) in enumerate(self.rows)
                if (data := (self.split / name).read_bytes()) != b"broken image"}


def _images_fetched(versions: Versions) -> set[str]:
    return {path.rsplit("/", 1)[-1] for method, path in versions.hub.proxy.requests
            if method == "GET" and path.endswith(".jpg")} if versions.hub else set()


def test_an_imagefolder_kept_current_reads_only_the_rows_whose_image_or_metadata_changed(versions: Versions) -> None:
    folder = Folder(versions)
    for n in range(12):
        folder.put(f"img{n:03d}.jpg", n, f"caption {n}")
    folder.commit("twelve images")
    first = _import(versions.dataset)
    assert (first.progress["files_read"], first.progress["files_kept"]) == (12, 0)
    assert _live(versions.dataset) == folder.expected()

    def sync(message: str) -> Job:
        folder.commit(message)
        if versions.hub:
            versions.hub.proxy.requests.clear()
        job = _import(versions.dataset)
        assert _live(versions.dataset) == folder.expected(), message
        assert not set(_removed(versions.dataset)) & set(folder.expected()), message
        return job

    (versions.folder / "README.md").write_text("# a card\n")
    card = sync("card edit")  # nothing read: no image fetched
    assert (card.progress["files_read"], card.progress["files_kept"], card.progress["rows_seen"]) == (0, 12, 0)
    assert _images_fetched(versions) == set()

    for n in range(12, 15):
        folder.put(f"img{n:03d}.jpg", n, f"caption {n}")
    appended = sync("three images appended")
    assert (appended.progress["files_read"], appended.progress["files_kept"]) == (3, 12)
    assert appended.progress["rows_seen"] == 3
    if versions.hub:
        assert _images_fetched(versions) == {"img012.jpg", "img013.jpg", "img014.jpg"}

    folder.put("img005.jpg", 105, "caption 5")  # one image replaced in place
    folder.caption("img008.jpg", "a better caption")  # one row's metadata edited
    changed = sync("an image replaced, a caption edited")
    assert (changed.progress["files_read"], changed.progress["files_kept"]) == (2, 13)
    if versions.hub:
        assert _images_fetched(versions) == {"img005.jpg", "img008.jpg"}
    with runtime.job_store().engine.connect() as conn:  # type: ignore[attr-defined]
        caption = conn.execute(sa.text("select metadata from scenes where dataset = :d and row_index = 8 "
                                       "and removed_at is null"), {"d": versions.dataset}).scalar_one()
    assert "a better caption" in str(caption)

    folder.put("img004b.jpg", 200, "inserted", at=5)  # a row inserted in the middle: the ten after it move
    inserted = sync("an image inserted")
    assert (inserted.progress["files_read"], inserted.progress["rows_seen"]) == (1, 1)
    assert inserted.progress["scenes_moved"] == sum(1 for row in folder.expected() if row > 5)

    folder.delete("img014.jpg")
    deleted = sync("the last image deleted")
    assert deleted.progress["files_read"] == 0 and deleted.progress["scenes_removed"] == 1
    assert max(_removed(versions.dataset)) == len(folder.rows)


def _put_tar(folder: Path, index: int, first: int, count: int) -> None:
    """Tar `train-<index>.tar` of WebDataset samples `first`..`first + count - 1` (every 7th image broken)."""
    staging = folder.parent / f"staging-{uuid.uuid4().hex[:6]}"
    write_webdataset(staging, [{"__key__": f"s{first + n:05d}", "jpg": row["image"], "json": {"n": row["n"]}}
                               for n, row in enumerate(_rows(first, count))])
    folder.mkdir(parents=True, exist_ok=True)
    os.replace(staging / "train-00000.tar", folder / f"train-{index:05d}.tar")
    shutil.rmtree(staging)


def _expected_tars(folder: Path) -> dict[int, str]:
    expected, row = {}, 0
    for path in sorted(folder.glob("train-*.tar")):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".jpg"):
                    data = tar.extractfile(member).read()  # type: ignore[union-attr]
                    if data != b"broken image":
                        expected[row] = hashlib.sha256(data).hexdigest()
                    row += 1
    return expected


def _tars_fetched(versions: Versions) -> set[str]:
    return {path.rsplit("/", 1)[-1] for method, path in versions.hub.proxy.requests
            if method == "GET" and path.endswith(".tar")} if versions.hub else set()


def test_a_webdataset_kept_current_reads_only_its_new_or_changed_tars(versions: Versions) -> None:
    folder = versions.folder
    for index in range(3):
        _put_tar(folder, index, index * 10, 10)

    def sync(message: str) -> Job:
        versions.commit(message)
        if versions.hub:
            versions.hub.proxy.requests.clear()
        job = _import(versions.dataset)
        assert _live(versions.dataset) == _expected_tars(folder), message
        assert not set(_removed(versions.dataset)) & set(_expected_tars(folder)), message
        return job

    first = sync("three tars")
    assert (first.progress["files_read"], first.progress["files_kept"], first.progress["rows_seen"]) == (3, 0, 30)

    (folder / "README.md").write_text("# a card\n")
    card = sync("card edit")  # every tar as recorded: none is read (`datasets` opens the first for its columns)
    assert (card.progress["files_read"], card.progress["files_kept"], card.progress["rows_seen"]) == (0, 3, 0)
    assert _tars_fetched(versions) <= {"train-00000.tar"}

    _put_tar(folder, 3, 100, 10)
    appended = sync("a tar appended")  # only the new tar is read
    assert (appended.progress["files_read"], appended.progress["files_kept"], appended.progress["rows_seen"]) == (1, 3, 10)
    if versions.hub:
        assert _tars_fetched(versions) - {"train-00000.tar"} == {"train-00003.tar"}

    _put_tar(folder, 1, 200, 12)
    changed = sync("a middle tar grew")  # counted, then imported: the tars after it move unread
    assert (changed.progress["files_read"], changed.progress["files_kept"], changed.progress["rows_seen"]) == (1, 3, 12)
    assert changed.progress["scenes_unchanged"] == 10
    assert changed.progress["scenes_moved"] == sum(1 for row in _expected_tars(folder) if row >= 22)
    if versions.hub:
        assert _tars_fetched(versions) - {"train-00000.tar"} == {"train-00001.tar"}

    (folder / "train-00000.tar").unlink()
    deleted = sync("the first tar deleted")  # every tar left is recorded: their scenes move, nothing is read
    assert (deleted.progress["files_read"], deleted.progress["rows_seen"]) == (0, 0)
    assert deleted.progress["scenes_moved"] > 0 and deleted.progress["scenes_removed"] > 0

    _put_tar(folder, 3, 300, 4)
    shrunk = sync("the last tar shrank")  # the split's end is known once it is read: the rows after it removed
    assert (shrunk.progress["files_read"], shrunk.progress["files_kept"], shrunk.progress["rows_seen"]) == (1, 2, 4)
    assert shrunk.progress["scenes_removed"] > 0


def test_the_summary_an_operator_reads_says_what_a_sync_read_kept_moved_and_removed() -> None:
    from hf_ingest.summary import ImportReport, summary_markdown

    idle = {"rows_seen": 0, "files_read": 0, "files_kept": 24, "scenes_unchanged": 24, "scenes_moved": 0,
            "scenes_removed": 0}
    text = summary_markdown(ImportReport("j", "o/n", "default", "train", "abc", "file:///x/", 1.0, idle))
    assert "| data files read / kept (a sync: kept files are not read) | 0 / 24 |" in text
    assert "| scenes unchanged / moved | 24 / 0 |" in text and "| scenes marked removed (rows gone at this commit) | 0 |" in text
    assert "| near-duplicates (of an earlier scene of this split) | as before (the split is as recorded) |" in text
    moved = {**idle, "files_read": 1, "files_kept": 3, "scenes_moved": 1000, "scenes_removed": 7, "near_duplicates": 4}
    text = summary_markdown(ImportReport("j", "o/n", "default", "train", "abc", "file:///x/", 1.0, moved))
    assert "| 1 / 3 |" in text and "| 24 / 1,000 |" in text and "| 7 |" in text
    assert "| near-duplicates (of an earlier scene of this split) | 4 |" in text
