"""The bundled sample dataset: a few dozen small images in the Hub's parquet layout, three of them broken.

`make demo` writes it with `hf-ingest make-sample .data/sample` and imports it, so a new user sees
the whole path (valid images stored, broken ones skipped and counted) without the network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hf_ingest.hub_formats import encode_image, write_parquet_dataset

SAMPLE_SCENES = ("beach", "forest", "city", "desert", "harbour", "glacier", "meadow", "canyon")


def sample_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    formats = (("JPEG", "RGB"), ("PNG", "RGBA"), ("WEBP", "RGB"))
    for i in range(24):
        fmt, mode = formats[i % len(formats)]
        color = ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256) + ((255,) if mode == "RGBA" else ())
        rows.append(
            {
                "image": encode_image((48 + i, 32 + i), fmt, mode, color),
                "scene": SAMPLE_SCENES[i % len(SAMPLE_SCENES)],
                "caption": f"sample {SAMPLE_SCENES[i % len(SAMPLE_SCENES)]} #{i}",
                "score": round(0.5 + i / 100, 2),
            }
        )
    good_jpeg = encode_image((64, 64), "JPEG")
    rows.append({"image": good_jpeg[: len(good_jpeg) // 2], "scene": "broken", "caption": "truncated JPEG", "score": 0.0})
    rows.append({"image": b"", "scene": "broken", "caption": "zero bytes", "score": 0.0})
    rows.append({"image": b"this is not an image", "scene": "broken", "caption": "text, not an image", "score": 0.0})
    return rows


def write_sample_dataset(folder: Path) -> Path:
    """Write the sample into `folder` (replacing an earlier copy) and return it."""
    import shutil

    if folder.exists():
        shutil.rmtree(folder)
    write_parquet_dataset(folder, sample_rows())
    (folder / "README.md").write_text(
        "# hf-ingest sample\n\n27 rows: 24 valid images (JPEG, PNG, WebP) and 3 broken ones "
        "(truncated, empty, not an image), with `scene`, `caption` and `score` columns.\n"
    )
    return folder
