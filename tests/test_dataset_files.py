"""Path-only rows are located and read strictly inside the dataset: a local folder, or a Hub repo at one commit."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest

from hf_ingest.data_file_ids import local_content_id
from hf_ingest.dataset_files import FileRef, HubDatasetFiles, LocalDatasetFiles
from hf_ingest.hub import hub_filesystem
from hf_ingest.images import InvalidImage
from tests.hub_server import HubServer


def _reason(files: LocalDatasetFiles | HubDatasetFiles, path: str) -> str:
    with pytest.raises(InvalidImage) as raised:
        files.locate(path)
    return raised.value.reason.value


def test_local_paths_resolve_inside_the_folder_only(tmp_path: Path) -> None:
    root = tmp_path / "dataset"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.png").write_bytes(b"12345")
    (tmp_path / "outside.png").write_bytes(b"secret")
    (root / "a" / "link.png").symlink_to(tmp_path / "outside.png")
    (root / "a" / "inner-link.png").symlink_to(root / "a" / "x.png")
    files = LocalDatasetFiles(root)

    for path in ("a/x.png", str(root / "a" / "x.png"), "a/../a/x.png", "a/inner-link.png"):
        target = os.path.realpath(root / "a" / "x.png")
        assert files.locate(path) == FileRef(target, 5, local_content_id(os.stat(target)))
    for path in ("../outside.png", str(tmp_path / "outside.png"), "a/link.png", "/dev/zero", "/proc/self/environ",
                 "file://" + str(root / "a" / "x.png"), ".", "", "a/x.png\x00.jpg"):
        assert _reason(files, path) == "outside_dataset", path
    assert _reason(files, "a/nope.png") == "missing_file"
    assert _reason(files, "a") == "not_an_image"


def test_local_reads_are_capped_and_a_file_that_grew_is_too_large(tmp_path: Path) -> None:
    (tmp_path / "f.png").write_bytes(b"x" * 100)
    files = LocalDatasetFiles(tmp_path)
    ref = files.locate("f.png")
    assert files.read(ref, 100) == b"x" * 100
    with pytest.raises(InvalidImage) as raised:
        files.read(ref, 99)
    assert raised.value.reason.value == "too_large"
    (tmp_path / "f.png").write_bytes(b"x" * 1000)  # grew after it was listed: never read past the cap
    with pytest.raises(InvalidImage) as raised:
        files.read(ref, 500)
    assert raised.value.reason.value == "too_large"


def test_hub_paths_resolve_inside_the_repo_at_the_commit_only(hub: HubServer, tmp_path: Path) -> None:
    (tmp_path / "repo" / "img").mkdir(parents=True)
    (tmp_path / "repo" / "img" / "a.png").write_bytes(b"A" * 300)
    repo = f"tester/files-{uuid.uuid4().hex[:8]}"
    first = hub.publish(repo, tmp_path / "repo")
    commit = hub.publish(repo, tmp_path / "repo", "again")
    files = HubDatasetFiles(repo, commit, hub_filesystem(None))

    for path in ("img/a.png", f"hf://datasets/{repo}@{commit}/img/a.png", "img/./a.png", "img/../img/a.png"):
        ref = files.locate(path)
        blob = hashlib.sha1(b"blob 300\x00" + b"A" * 300).hexdigest()  # git's id of the file: no read needed
        assert ref == FileRef(f"hf://datasets/{repo}@{commit}/img/a.png", 300, f"git:{blob}")
    assert files.read(files.locate("img/a.png"), 300) == b"A" * 300
    for path in (f"hf://datasets/{repo}@{first}/img/a.png", f"hf://datasets/{repo}@main/img/a.png",
                 f"hf://datasets/{repo}@{commit}/../other/x.png", "../x", "/img/a.png", "http://x/img/a.png",
                 "img\\..\\a.png", f"hf://datasets/other/repo@{commit}/img/a.png"):
        assert _reason(files, path) == "outside_dataset", path
    assert _reason(files, "img/missing.png") == "missing_file"
    assert _reason(files, "img") == "not_an_image"
    with pytest.raises(InvalidImage) as raised:
        files.read(files.locate("img/a.png"), 299)
    assert raised.value.reason.value == "too_large"
