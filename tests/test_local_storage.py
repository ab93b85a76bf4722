"""The local folder store: atomic, idempotent writes with as few system calls as possible."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hf_ingest.storage import ObjectStore, PutOutcome, PutRequest, object_key


def _request(data: bytes, digest: str = "ab" * 32) -> PutRequest:
    return PutRequest(object_key(digest, "png"), data, "image/png")


def test_writes_once_then_reports_already_present(tmp_path: Path) -> None:
    store = ObjectStore(str(tmp_path))
    request = _request(b"png bytes")

    assert store.put_many([request]) == {request.key: PutOutcome.STORED}
    assert store.put_many([request]) == {request.key: PutOutcome.ALREADY_PRESENT}
    assert (tmp_path / request.key).read_bytes() == b"png bytes"
    assert store.url(request.key, None) == (tmp_path / request.key).resolve().as_uri()
    assert not [p for p in tmp_path.rglob("*.tmp")], "no temporary file is left behind"


def test_a_partial_object_is_replaced(tmp_path: Path) -> None:
    store = ObjectStore(str(tmp_path))
    request = _request(b"the whole image")
    target = tmp_path / request.key
    target.parent.mkdir(parents=True)
    target.write_bytes(b"the who")  # an earlier writer died half way (without our rename, impossible; still)

    assert store.put_many([request]) == {request.key: PutOutcome.STORED}
    assert target.read_bytes() == b"the whole image"


def test_a_folder_removed_while_running_is_made_again(tmp_path: Path) -> None:
    store = ObjectStore(str(tmp_path))
    first, second = _request(b"one", "cd" + "0" * 62), _request(b"two", "cd" + "1" * 62)
    store.put_many([first])
    shutil.rmtree(tmp_path / "images" / "cd")  # removed behind the store's back

    assert store.put_many([second]) == {second.key: PutOutcome.STORED}
    assert (tmp_path / second.key).read_bytes() == b"two"


def test_concurrent_writers_of_the_same_object_leave_one_whole_copy(tmp_path: Path) -> None:
    store = ObjectStore(str(tmp_path))
    data = bytes(range(256)) * 4096  # 1 MiB: several write() calls each
    request = _request(data)

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(lambda _: store.put_many([request])[request.key], range(32)))

    assert PutOutcome.STORED in outcomes
    assert (tmp_path / request.key).read_bytes() == data
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_a_failed_write_leaves_no_temporary_and_names_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    from hf_ingest.transient import PermanentIngestError

    store = ObjectStore(str(tmp_path))
    request = _request(b"x" * 10_000)

    def disk_full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(PermanentIngestError, match="cannot write to .*No space left"):
        store.put_many([request])
    monkeypatch.undo()

    assert not [p for p in tmp_path.rglob("*") if p.is_file()], "neither the object nor a temporary"
    assert store.put_many([request]) == {request.key: PutOutcome.STORED}  # and the next try works
