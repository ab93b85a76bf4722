"""Importing Hub ids through a real Hub-API server (olah over local git repos), as users do.

Every test publishes its own dataset repository (parquet with several files, row groups and configs;
imagefolder with metadata.jsonl or metadata.csv; WebDataset tars; private and gated repos) and
imports it by its Hub id with the flow, in-process against a real Prefect server. Local folders
alone hid bugs that only `hf://` streaming shows (a decoding step wrapped around the stream, paths
read without the token).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flows.import_dataset import hf_ingest
from hf_ingest import runtime
from hf_ingest.hub_formats import configs_card, encode_image, write_imagefolder, write_parquet_dataset, write_webdataset
from hf_ingest.jobstore import Job, JobStatus
from tests.hub_server import HUB_TOKEN, HubServer
from tests.image_cases import cases, expected_invalid, valid_cases

pytestmark = pytest.mark.usefixtures("prefect_api")


def _repo(name: str) -> str:
    return f"tester/{name}-{uuid.uuid4().hex[:8]}"


def _import(**parameters: Any) -> tuple[Job, Any]:
    job_id = uuid.uuid4()
    state = asyncio.run(hf_ingest(job_id=job_id, return_state=True, **parameters))
    job = runtime.job_store().get_job(job_id)
    assert job is not None
    return job, state


def _scenes(job_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
    store = runtime.job_store()
    query = "select * from scenes" + (" where job_id = :j" if job_id else "") + " order by image_column, row_index"
    with store.engine.connect() as conn:  # type: ignore[attr-defined]
        rows = [dict(r._mapping) for r in conn.execute(sa.text(query), {"j": job_id.hex} if job_id else {})]
    for row in rows:  # SQLite hands back JSON as text and uuids as hex
        row["metadata"] = json.loads(row["metadata"]) if isinstance(row["metadata"], str) else row["metadata"]
        row["job_id"] = uuid.UUID(str(row["job_id"]))
    return rows


def _messy_rows(offset: int = 0) -> list[dict[str, Any]]:
    return [{"image": c.data, "name": c.name, "n": offset + i} for i, c in enumerate(cases())]


def _image_files() -> list[tuple[str, bytes, dict[str, Any]]]:
    """Every case as a file with an image extension (the imagefolder builder lists only those), as
    broken files appear in real datasets."""
    return [(f"{c.name}.{c.extension if c.extension != 'bin' else 'jpg'}", c.data, {"caption": f"a {c.name}"})
            for c in cases()]


def _valid_shas() -> set[str]:
    return {hashlib.sha256(c.data).hexdigest() for c in valid_cases()}


def test_a_parquet_repo_with_configs_files_and_row_groups_imports_exactly_its_valid_images(
    hub: HubServer, tmp_path: Path
) -> None:
    """Two configs declared in the README, each with train/test splits in several files of several row groups."""
    folder = tmp_path / "repo"
    for config in ("photos", "other"):
        for split, offset in (("train", 0), ("test", 100)):
            write_parquet_dataset(
                folder, _messy_rows(offset), split=split, shards=2, row_group_size=3, data_dir=config
            )
    (folder / "README.md").write_text(
        configs_card({c: {s: f"{c}/{s}-*.parquet" for s in ("train", "test")} for c in ("photos", "other")})
    )
    repo = _repo("parquet")
    commit = hub.publish(repo, folder)

    job, state = _import(dataset=repo, config="photos", split="test")

    assert state.is_completed(), job.error
    assert job.status is JobStatus.COMPLETED
    assert job.progress["rows_seen"] == len(cases())
    assert job.progress["invalid"] == expected_invalid()
    assert job.progress["revision"] == commit
    scenes = _scenes(job.id)
    assert {s["sha256"] for s in scenes} == _valid_shas()
    assert {(s["dataset"], s["config"], s["split"], s["image_column"], s["revision"]) for s in scenes} == {
        (repo, "photos", "test", "image", commit)
    }
    by_name = {c.name: i for i, c in enumerate(cases())}
    assert {s["metadata"]["name"]: s["row_index"] for s in scenes} == {
        c.name: by_name[c.name] for c in valid_cases()
    }  # row identity = position in the split, across files and row groups
    assert all(s["metadata"]["n"] == 100 + s["row_index"] for s in scenes)
    assert sum(1 for m, p, _ in hub.proxy.faults) == 0
    assert any("/resolve/" in path for _, path in hub.proxy.requests)  # read through the Hub API, not a folder


@pytest.mark.parametrize("metadata_format", ["jsonl", "csv"])
def test_an_imagefolder_repo_with_broken_images_completes_with_the_valid_ones(
    hub: HubServer, tmp_path: Path, metadata_format: str
) -> None:
    """The bug local folders hid: on `hf://`, datasets wraps the stream in a decoding step, and the first
    corrupt image ended the whole import."""
    folder = write_imagefolder(tmp_path / "repo", _image_files(), metadata_format=metadata_format)
    repo = _repo("imagefolder")
    commit = hub.publish(repo, folder)

    job, state = _import(dataset=repo)

    assert state.is_completed(), job.error
    assert job.progress["invalid"] == expected_invalid()
    scenes = _scenes(job.id)
    assert {s["sha256"] for s in scenes} == _valid_shas()
    assert {s["revision"] for s in scenes} == {commit}
    assert {s["metadata"]["caption"] for s in scenes} == {f"a {c.name}" for c in valid_cases()}


def test_a_webdataset_repo_imports_its_images_and_json(hub: HubServer, tmp_path: Path) -> None:
    samples = [
        {"__key__": f"sample{i:04d}", "jpg": encode_image((40 + i, 30), "JPEG", color=(i * 20, 5, 5)),
         "json": {"label": i % 3, "text": f"sample {i}"}}
        for i in range(10)
    ]
    samples[4]["jpg"] = b"not a jpeg at all"
    folder = write_webdataset(tmp_path / "repo", samples, shards=2)
    repo = _repo("webdataset")
    hub.publish(repo, folder)

    job, state = _import(dataset=repo)

    assert state.is_completed(), job.error
    assert job.progress["rows_seen"] == 10 and job.progress["scenes_recorded"] == 9
    assert job.progress["invalid"] == {"not_an_image": 1}
    assert job.params["image_column"] is None
    scenes = _scenes(job.id)
    assert {s["image_column"] for s in scenes} == {"jpg"}
    assert sorted(s["row_index"] for s in scenes) == [0, 1, 2, 3, 5, 6, 7, 8, 9]


def test_a_missing_repo_fails_fast_naming_the_dataset(hub: HubServer) -> None:
    job, state = _import(dataset="tester/does-not-exist")
    assert state.is_failed() and job.status is JobStatus.FAILED
    assert "'tester/does-not-exist'" in (job.error or "") and "not found" in (job.error or "")
    assert "HF_TOKEN" in (job.error or "")


def test_a_missing_revision_fails_fast(hub: HubServer, tmp_path: Path) -> None:
    repo = _repo("revisions")
    hub.publish(repo, write_parquet_dataset(tmp_path / "repo", _messy_rows()))
    job, state = _import(dataset=repo, revision="no-such-branch")
    assert state.is_failed()
    assert "no-such-branch" in (job.error or "")


@pytest.mark.parametrize("layout", ["parquet", "imagefolder"])
def test_a_private_repo_needs_hf_token_and_with_it_every_read_is_authorised(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    """Without a token: failed at once, saying to set HF_TOKEN (not `completed` with every row missing).
    With it: every request (repo info, listing, parquet ranges, and each imagefolder file) carries it."""
    if layout == "parquet":
        folder = write_parquet_dataset(tmp_path / "repo", _messy_rows())
    else:
        folder = write_imagefolder(tmp_path / "repo", _image_files(), metadata_format="jsonl")
    repo = f"tester/private-{layout}-{uuid.uuid4().hex[:6]}"
    hub.publish(repo, folder)

    job, state = _import(dataset=repo)
    assert state.is_failed() and "set HF_TOKEN" in (job.error or ""), job.error

    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    runtime.reset()
    hub.proxy.requests.clear()
    job, state = _import(dataset=repo)
    assert state.is_completed(), job.error
    assert {s["sha256"] for s in _scenes(job.id)} == _valid_shas()
    assert HUB_TOKEN not in (job.error or "") and HUB_TOKEN not in str(job.params) + str(job.progress)


def test_a_gated_repo_says_to_accept_its_terms(hub: HubServer, tmp_path: Path) -> None:
    repo = f"tester/gated-{uuid.uuid4().hex[:6]}"
    hub.publish(repo, write_parquet_dataset(tmp_path / "repo", _messy_rows()))
    job, state = _import(dataset=repo)
    assert state.is_failed() and "gated" in (job.error or "") and "accept its terms" in (job.error or "")


def test_a_worker_told_to_stay_offline_fails_at_once_saying_which_setting(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HF_HUB_OFFLINE=1 in the worker's shell (huggingface_hub reads it at import) is a setting, not an outage:
    no retries, and the job says what to unset."""
    repo = _repo("offline")
    hub.publish(repo, write_parquet_dataset(tmp_path / "repo", _messy_rows()))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    started = time.monotonic()
    job, state = _import(dataset=repo)
    assert state.is_failed() and "HF_HUB_OFFLINE is set" in (job.error or ""), job.error
    assert time.monotonic() - started < 10  # the open-dataset task's retries take ~15 s


def test_a_revision_is_pinned_recorded_and_a_newer_one_updates_what_changed(hub: HubServer, tmp_path: Path) -> None:
    repo = _repo("versions")
    rows = _messy_rows()
    first = hub.publish(repo, write_parquet_dataset(tmp_path / "v1", rows))
    changed = [dict(r) for r in rows]
    changed[0]["image"] = encode_image((44, 33), "JPEG", color=(250, 1, 1))  # row 0 is a new photo
    changed[1]["name"] = "renamed"  # row 1 gets new metadata
    second = hub.publish(repo, write_parquet_dataset(tmp_path / "v2", changed), "second version")
    valid = len(valid_cases())

    job, state = _import(dataset=repo, revision=first)
    assert state.is_completed() and job.progress["revision"] == first
    assert job.progress["scenes_recorded"] == valid and job.params["revision"] == first

    again, _ = _import(dataset=repo, revision=first)
    assert again.progress["scenes_recorded"] == 0 and again.progress["scenes_updated"] == 0

    newer, _ = _import(dataset=repo)  # main = the second commit
    assert newer.progress["revision"] == second and newer.params["revision"] == "main"
    assert newer.progress["scenes_recorded"] == 0 and newer.progress["scenes_updated"] == valid
    scenes = {s["row_index"]: s for s in _scenes()}
    assert len(scenes) == valid and {s["revision"] for s in scenes.values()} == {second}
    assert scenes[0]["sha256"] == hashlib.sha256(changed[0]["image"]).hexdigest()
    assert scenes[1]["metadata"]["name"] == "renamed"


def test_two_image_columns_give_two_sets_of_scenes_and_a_list_one_scene_per_image(
    hub: HubServer, tmp_path: Path
) -> None:
    from datasets import Image, List

    photo = [encode_image((30 + i, 20), "PNG", color=(i, 90, 9)) for i in range(4)]
    mask = [encode_image((30 + i, 20), "PNG", "L", i * 40) for i in range(4)]
    views = [[{"bytes": encode_image((10 + j, 12), "JPEG", color=(j * 50, i, 0)), "path": None} for j in range(i)]
             for i in range(4)]
    rows = [{"image": photo[i], "mask": {"bytes": mask[i], "path": None}, "views": views[i], "n": i} for i in range(4)]
    folder = write_parquet_dataset(
        tmp_path / "repo", rows, extra_features={"mask": Image(), "views": List(Image())}
    )
    repo = _repo("columns")
    hub.publish(repo, folder)

    first, _ = _import(dataset=repo)
    masks, _ = _import(dataset=repo, image_column="mask")
    lists, state = _import(dataset=repo, image_column="views")

    assert state.is_completed(), lists.error
    assert first.progress["scenes_recorded"] == 4 and masks.progress["scenes_recorded"] == 4
    assert lists.progress["scenes_recorded"] == 0 + 1 + 2 + 3
    scenes = _scenes()
    assert {s["image_column"] for s in scenes if s["job_id"] == masks.id} == {"mask"}
    assert sorted((s["row_index"], s["image_column"]) for s in scenes if s["job_id"] == lists.id) == [
        (1, "views[0]"), (2, "views[0]"), (2, "views[1]"), (3, "views[0]"), (3, "views[1]"), (3, "views[2]")
    ]
    assert all("views" not in s["metadata"] and "mask" not in s["metadata"] for s in scenes)  # media, not metadata


def test_an_image_inside_a_struct_is_refused_naming_the_column(hub: HubServer, tmp_path: Path) -> None:
    from datasets import Image, Value

    rows = [{"sample": {"photo": {"bytes": encode_image(), "path": None}, "caption": "x"}, "n": 1}]
    folder = write_parquet_dataset(
        tmp_path / "repo", rows, image_column="none", extra_features={"sample": {"photo": Image(), "caption": Value("string")}}
    )
    repo = _repo("struct")
    hub.publish(repo, folder)
    job, state = _import(dataset=repo)
    assert state.is_failed()
    assert "column 'sample'" in (job.error or "") and "inside a struct" in (job.error or "")


def test_path_rows_on_the_hub_are_read_only_inside_the_repo_at_its_commit(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parquet repo whose rows carry only paths: inside the repository at the imported commit they are
    read (with the token, capped); anything else is `outside_dataset` and never requested."""
    other = _repo("other")
    hub.publish(other, write_parquet_dataset(tmp_path / "other", _messy_rows()))
    folder = tmp_path / "repo"
    (folder / "images").mkdir(parents=True)
    photo = encode_image((64, 48), "PNG", color=(10, 200, 10))
    (folder / "images" / "photo.png").write_bytes(photo)
    (folder / "images" / "big.png").write_bytes(encode_image((400, 400), "PNG", color=(1, 2, 3)) + b"\0" * 4096)
    repo = _repo("paths")
    earlier = hub.publish(repo, folder)  # the images alone: an earlier commit of the same repo
    fates = {
        "images/photo.png": "stored",
        "images/./photo.png": "stored",
        "images/missing.png": "missing_file",
        "images": "not_an_image",
        "images/big.png": "too_large",
        f"hf://datasets/{repo}@{earlier}/images/photo.png": "outside_dataset",  # another commit
        f"hf://datasets/{repo}@main/images/photo.png": "outside_dataset",  # a branch, not the commit read
        f"hf://datasets/{other}@main/README.md": "outside_dataset",
        "../../other/images/photo.png": "outside_dataset",
        "/etc/passwd": "outside_dataset",
        "/dev/zero": "outside_dataset",
        "file:///etc/passwd": "outside_dataset",
        f"{hub.endpoint}/datasets/{other}/resolve/main/README.md": "outside_dataset",
        "http://169.254.169.254/latest/meta-data/": "outside_dataset",
        "s3://bucket/key.png": "outside_dataset",
        "zip://images/photo.png::hf://datasets/x/y@main/a.zip": "outside_dataset",
    }
    rows = [{"image": {"bytes": None, "path": path}, "n": i} for i, path in enumerate(fates)]
    hub.publish(repo, write_parquet_dataset(folder, rows, row_group_size=100))  # pyarrow: paths stay paths
    monkeypatch.setenv("MAX_IMAGE_BYTES", str(len(photo) + 100))
    runtime.reset()
    hub.proxy.requests.clear()

    job, state = _import(dataset=repo)

    assert state.is_completed(), job.error
    expected: dict[str, int] = {}
    for fate in fates.values():
        if fate != "stored":
            expected[fate] = expected.get(fate, 0) + 1
    assert job.progress["invalid"] == expected
    assert job.progress["scenes_recorded"] == 2 and job.progress["stored"] == 1
    resolved = [path for method, path in hub.proxy.requests if "/resolve/" in path]
    assert not any(other in path or earlier in path or "big.png" in path for path in resolved), resolved
    assert any(path.endswith("/images/photo.png") and job.progress["revision"] in path for path in resolved)
