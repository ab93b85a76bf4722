"""The work of one batch, as plain functions: validate → store → record one scene row per image.

The Prefect flow wraps `ingest_batch` in a task; tests and the benchmark's raw baseline call it directly.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import fsspec

from hf_ingest.images import ImageInfo, InvalidImage, InvalidReason, inspect_image
from hf_ingest.jobstore.base import JobStore
from hf_ingest.jobstore.model import Scene
from hf_ingest.source import ImageRow
from hf_ingest.storage import ObjectStore, PutOutcome, PutRequest, object_key


@dataclass(frozen=True)
class ValidImage:
    row: ImageRow
    info: ImageInfo
    sha256: str
    key: str
    data: bytes


@dataclass
class ValidatedBatch:
    rows: int
    valid: list[ValidImage]
    invalid: Counter[str]


@dataclass(frozen=True)
class BatchOutcome:
    """The counts a batch left behind (no bytes, no scenes: cheap to hold and pass around)."""

    rows: int
    stored: int
    already_present: int
    bytes_stored: int
    scenes_recorded: int
    invalid: Counter[str]


def read_image_bytes(row: ImageRow) -> bytes:
    """The row's image bytes: inline (parquet/Hub) or read from its path (imagefolder)."""
    if row.data is not None:
        return bytes(row.data)
    if not row.path:
        raise InvalidImage(InvalidReason.EMPTY, "row has neither bytes nor a path")
    try:
        with fsspec.open(row.path, "rb") as handle:
            return handle.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        raise InvalidImage(InvalidReason.MISSING_FILE, f"{row.path}: {type(exc).__name__}") from None


def validate_rows(rows: Sequence[ImageRow], max_pixels: int) -> ValidatedBatch:
    """Decode every image; keep the usable ones with their hash and key, count the rest by reason."""
    valid: list[ValidImage] = []
    invalid: Counter[str] = Counter()
    for row in rows:
        try:
            data = read_image_bytes(row)
            info = inspect_image(data, max_pixels)
        except InvalidImage as exc:
            invalid[exc.reason.value] += 1
            continue
        digest = hashlib.sha256(data).hexdigest()
        valid.append(ValidImage(row, info, digest, object_key(digest, info.extension), data))
    return ValidatedBatch(rows=len(rows), valid=valid, invalid=invalid)


@dataclass(frozen=True)
class SceneSource:
    """Which job and which dataset split the scenes belong to."""

    job_id: uuid.UUID
    dataset: str
    config: str
    split: str
    public_base_url: str | None = None


def store_validated(
    store: ObjectStore, batch: ValidatedBatch, source: SceneSource
) -> tuple[list[Scene], BatchOutcome]:
    """Write the batch's objects (idempotent); the scene row of each valid image, and the counts so far."""
    unique: dict[str, PutRequest] = {}
    for image in batch.valid:
        unique.setdefault(image.key, PutRequest(image.key, image.data, image.info.content_type))
    outcomes = store.put_many(list(unique.values()))
    stored = [k for k, o in outcomes.items() if o is PutOutcome.STORED]
    scenes = [
        Scene(
            job_id=source.job_id,
            dataset=source.dataset,
            config=source.config,
            split=source.split,
            row_index=image.row.row_index,
            object_key=image.key,
            url=store.url(image.key, source.public_base_url),
            sha256=image.sha256,
            content_type=image.info.content_type,
            width=image.info.width,
            height=image.info.height,
            bytes=len(image.data),
            metadata=image.row.metadata,
        )
        for image in batch.valid
    ]
    return scenes, BatchOutcome(
        rows=batch.rows,
        stored=len(stored),
        already_present=len(outcomes) - len(stored),
        bytes_stored=sum(len(unique[k].data) for k in stored),
        scenes_recorded=0,
        invalid=batch.invalid,
    )


def ingest_batch(
    rows: Sequence[ImageRow], source: SceneSource, objects: ObjectStore, jobs: JobStore, max_pixels: int
) -> BatchOutcome:
    """Validate, store and record one batch; safe to repeat (objects are content-addressed, scenes upserted)."""
    scenes, outcome = store_validated(objects, validate_rows(rows, max_pixels), source)
    return replace(outcome, scenes_recorded=jobs.upsert_scenes(scenes))


@dataclass
class IngestProgress:
    """Running totals of an import; `as_dict()` is what `jobs.progress` holds."""

    rows_seen: int = 0
    stored: int = 0
    already_present: int = 0
    scenes_recorded: int = 0
    bytes_stored: int = 0
    failed: int = 0
    invalid: Counter[str] = field(default_factory=Counter)

    def add(self, batch: BatchOutcome) -> None:
        self.rows_seen += batch.rows
        self.stored += batch.stored
        self.already_present += batch.already_present
        self.bytes_stored += batch.bytes_stored
        self.scenes_recorded += batch.scenes_recorded
        self.invalid.update(batch.invalid)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_seen": self.rows_seen,
            "stored": self.stored,
            "already_present": self.already_present,
            "invalid": dict(sorted(self.invalid.items())),
            "invalid_total": sum(self.invalid.values()),
            "failed": self.failed,
            "scenes_recorded": self.scenes_recorded,
            "bytes_stored": self.bytes_stored,
        }
