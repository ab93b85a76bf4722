"""Imports make what an app shows: real photographs imported through the Hub server get thumbnails,
previews, placeholders and pHashes, decoded here from the store; near-duplicates (resized,
re-compressed, re-formatted, slightly cropped copies) point at their first scene, different photos do
not; a dataset imported before derivatives existed is backfilled once, and then nothing is written."""

from __future__ import annotations

import hashlib
import io
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from PIL import Image

from hf_ingest import runtime
from hf_ingest.hub_formats import write_parquet_dataset
from tests import photos
from tests.hub_server import HubServer
from tests.test_hub_import import _import, _repo, _scenes

pytestmark = pytest.mark.usefixtures("prefect_api")

DISTINCT = ["astronaut.png", "chelsea.png", "coffee.png", "camera.png", "rocket.jpg", "hubble_deep_field.jpg",
            "horse.png", "coins.png", "moon.png", "retina.jpg"]


def _copies(name: str) -> dict[str, bytes]:
    """What scrapes are full of: the same photo halved, re-compressed, as PNG, as WebP with 2 % cropped."""
    image = photos.photo(name).convert("RGB")
    w, h = image.size
    cw, ch = w // 50, h // 50
    return {
        "halved": photos.encode(image.resize((w // 2, h // 2)), "JPEG", quality=90),
        "quality 40": photos.encode(image, "JPEG", quality=40),
        "png": photos.encode(image, "PNG"),
        "webp cropped 2%": photos.encode(image.crop((cw, ch, w - cw, h - ch)), "WEBP", quality=80),
    }


def _rows() -> list[dict[str, Any]]:
    rows = [{"image": photos.encode(photos.photo(n).convert("RGB"), "JPEG", quality=92), "name": n, "copy_of": None}
            for n in DISTINCT]
    rows += [{"image": data, "name": name, "copy_of": copy_of} for name, data, copy_of in (
        ("phone", photos.phone_jpeg(), None),  # chelsea squeezed to 4:3 and turned upright: another picture
        ("cmyk", photos.cmyk_jpeg(), "coffee.png"),  # the coffee photo in CMYK: the same picture
        ("grey16", photos.grey16_png(), "camera.png"),  # the camera man in 16 bits: the same picture
        ("palette", photos.palette_png_with_transparency(), None),  # a quarter of the astronaut gone
        ("animated", photos.animated_gif(), None),
    )]
    rows.append({"image": photos.phone_jpeg()[:50_000], "name": "truncated", "copy_of": None})
    for original in ("chelsea.png", "coffee.png", "rocket.jpg"):
        rows += [{"image": data, "name": f"{original} {how}", "copy_of": original}
                 for how, data in _copies(original).items()]
    rows.append({"image": rows[0]["image"], "name": "astronaut again, byte for byte", "copy_of": "astronaut.png"})
    return rows


def _object(url: str) -> bytes:
    return Path(urlparse(url).path).read_bytes()


def test_photos_from_the_hub_get_derivatives_and_near_duplicates(hub: HubServer, tmp_path: Path) -> None:
    rows = _rows()
    folder = write_parquet_dataset(tmp_path / "repo", rows, shards=2)
    repo = _repo("photos")
    hub.publish(repo, folder)

    job, state = _import(dataset=repo)

    assert state.is_completed(), job.error
    assert job.progress["invalid"] == {"corrupt": 1}
    scenes = {s["metadata"]["name"]: s for s in _scenes(job.id)}
    assert len(scenes) == len(rows) - 1
    for name, scene in scenes.items():
        original = Image.open(io.BytesIO(_object(scene["url"])))
        assert hashlib.sha256(_object(scene["url"])).hexdigest() == scene["sha256"]
        assert scene["placeholder"] and len(scene["phash"]) == 16, name
        for column, longest in (("thumbnail_url", 256), ("preview_url", 1024)):
            shown = Image.open(io.BytesIO(_object(scene[column])))
            if scene[column] == scene["url"]:  # a small plain image serves as its own thumbnail
                assert max(original.size) <= 256 and original.format in ("JPEG", "PNG", "WEBP"), name
                continue
            assert shown.format == "WEBP", (name, column)
            upright = (original.height, original.width) if name == "phone" else original.size
            assert max(shown.size) == min(longest, max(upright)), (name, column)
            assert (shown.width >= shown.height) == (upright[0] >= upright[1]), (name, column)
    ids = {name: uuid.UUID(str(scene["id"])) for name, scene in scenes.items()}
    for name, scene in scenes.items():
        copy_of = next(r["copy_of"] for r in rows if r["name"] == name)
        expected = ids[copy_of] if copy_of else None
        got = uuid.UUID(str(scene["duplicate_of"])) if scene["duplicate_of"] else None
        assert got == expected, f"{name}: duplicate_of {got}, expected {expected} ({copy_of})"
    copies = sum(1 for r in rows if r["copy_of"])
    assert job.progress["near_duplicates"] == copies
    assert job.progress["derivatives_stored"] > 0


def test_a_dataset_imported_before_derivatives_is_backfilled_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [{"image": photos.encode(photos.photo(n).convert("RGB"), "JPEG", quality=90), "name": n}
            for n in DISTINCT[:6]]
    rows += [{"image": data, "name": how} for how, data in _copies("chelsea.png").items()]
    folder = write_parquet_dataset(tmp_path / "local", rows)

    monkeypatch.setenv("DERIVATIVES", "false")
    runtime.reset()
    before, state = _import(dataset=str(folder))
    assert state.is_completed(), before.error
    assert "near_duplicates" not in before.progress
    assert all(s["thumbnail_url"] is None and s["phash"] is None and s["duplicate_of"] is None for s in _scenes())

    monkeypatch.delenv("DERIVATIVES")
    runtime.reset()
    backfill, state = _import(dataset=str(folder))
    assert state.is_completed(), backfill.error
    assert backfill.progress["derivatives_backfilled"] == len(rows)
    assert backfill.progress["scenes_recorded"] == 0
    assert backfill.progress["near_duplicates"] == 4
    scenes = _scenes()
    assert all(s["thumbnail_url"] and s["preview_url"] and s["placeholder"] and s["phash"] for s in scenes)

    again, state = _import(dataset=str(folder))
    assert state.is_completed(), again.error
    assert again.progress["derivatives_backfilled"] == 0
    assert again.progress["scenes_updated"] == 0 and again.progress["derivatives_stored"] == 0
    assert _scenes() == scenes  # nothing written

    monkeypatch.setenv("DERIVATIVES", "false")  # an import without derivatives keeps those of unchanged content
    runtime.reset()
    off, state = _import(dataset=str(folder))
    assert state.is_completed(), off.error
    assert [s["thumbnail_url"] for s in _scenes()] == [s["thumbnail_url"] for s in scenes]
