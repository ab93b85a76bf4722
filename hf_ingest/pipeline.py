"""The work of one batch, as plain functions: validate → store → record one scene row per image.

The Prefect flow wraps `ingest_batch` in a task; tests and the benchmark's raw baseline call it directly.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

from hf_ingest.backoff import call_through_outage
from hf_ingest.dataset_files import DatasetFiles
from hf_ingest.derivatives import (
    Derivatives,
    DerivativeSizes,
    Rendered,
    Rendition,
    summarize,
)
from hf_ingest.images import ImageInfo, InvalidImage, InvalidReason, inspect_image
from hf_ingest.jobstore.base import JobStore
from hf_ingest.jobstore.model import Scene, SplitKey
from hf_ingest.source import DatasetStream, ImageRow
from hf_ingest.storage import ObjectStore, PutOutcome, PutRequest, object_key

SAMPLE_URLS = 5
FILE_READ_THREADS = 8  # path-only rows of a batch are read this many at a time (Hub reads are round trips)


@dataclass(frozen=True)
class ValidImage:
    row: ImageRow
    info: ImageInfo
    sha256: str
    key: str
    data: bytes
    derivatives: Derivatives | None = None


@dataclass
class ValidatedBatch:
    rows: int
    valid: list[ValidImage]
    invalid: Counter[str]
    invalid_rows: list[tuple[str, int]] = field(default_factory=list)  # (image_column, row_index) of the invalid


@dataclass(frozen=True)
class BatchOutcome:
    """The counts a batch left behind (no bytes, no scenes: cheap to hold and pass around)."""

    rows: int
    stored: int
    already_present: int
    bytes_stored: int
    scenes_recorded: int
    invalid: Counter[str]
    scenes_updated: int = 0
    sample_urls: tuple[str, ...] = ()  # a few stored images, for the run's summary
    derivatives_stored: int = 0  # thumbnails and previews written (not already in the store)
    derivatives_backfilled: int = 0  # scenes recorded before derivatives existed that got them
    sample_thumbnails: tuple[str, ...] = ()
    scenes_removed: int = 0  # scenes of rows whose image is no longer valid (an earlier revision's)


@dataclass(frozen=True)
class ImageReader:
    """How a batch gets and judges its images: inline bytes or a file of the dataset, capped, decoded,
    and with `sizes` (DERIVATIVES on) turned into derivatives from that decode."""

    files: DatasetFiles
    max_bytes: int
    max_pixels: int
    sizes: DerivativeSizes | None = None

    @classmethod
    def for_stream(cls, stream: DatasetStream, max_pixels: int, sizes: DerivativeSizes | None = None) -> ImageReader:
        return cls(stream.files, stream.max_image_bytes, max_pixels, sizes)

    def read(self, row: ImageRow) -> bytes:
        """The row's image bytes, or `InvalidImage` saying why there are none to use."""
        if row.problem is not None:
            raise row.problem
        if row.data is not None:
            if len(row.data) > self.max_bytes:
                raise InvalidImage(
                    InvalidReason.TOO_LARGE, f"{len(row.data)} bytes exceeds MAX_IMAGE_BYTES={self.max_bytes}"
                )
            return bytes(row.data)
        if row.file is None:
            raise InvalidImage(InvalidReason.EMPTY, "row has neither bytes nor a path")
        return self.files.read(row.file, self.max_bytes)


SUMMARY_CHUNK = 512  # images whose placeholders and pHashes are made together (`summarize`): enough to amortize
# numpy's per-call cost, few enough that their tiny copies go soon (held for a whole batch of 8,192 small
# images, they left the import's threads ~200 MB of malloc fragments)


def validate_rows(rows: Sequence[ImageRow], reader: ImageReader) -> ValidatedBatch:
    """Decode every image; keep the usable ones with their hash, key and derivatives, count the rest by reason."""
    valid: list[ValidImage] = []
    rendered: list[tuple[int, Rendered]] = []  # (index in `valid`, its renditions) not summarized yet
    invalid: Counter[str] = Counter()
    invalid_rows: list[tuple[str, int]] = []
    for row, data in zip(rows, _read_all(rows, reader), strict=True):
        try:
            if isinstance(data, InvalidImage):
                raise data
            info = inspect_image(data, reader.max_pixels, reader.sizes)
        except InvalidImage as exc:
            invalid[exc.reason.value] += 1
            invalid_rows.append((row.image_column, row.row_index))
            continue
        if info.rendered is not None:
            rendered.append((len(valid), info.rendered))
            info = replace(info, rendered=None)
        digest = hashlib.sha256(data).hexdigest()
        valid.append(ValidImage(row, info, digest, object_key(digest, info.extension), data))
        if len(rendered) >= SUMMARY_CHUNK:
            _add_derivatives(valid, rendered)
            rendered = []
    _add_derivatives(valid, rendered)
    return ValidatedBatch(rows=len(rows), valid=valid, invalid=invalid, invalid_rows=invalid_rows)


def _add_derivatives(valid: list[ValidImage], rendered: list[tuple[int, Rendered]]) -> None:
    """Give `valid`'s rendered images their derivatives, summarized together; should that fail, one at a time,
    an image whose summary fails keeping its scene without derivatives (as `inspect_image` does)."""
    if not rendered:
        return
    try:
        made = summarize([item for _, item in rendered])
    except Exception:  # noqa: BLE001 - a derivative never costs a valid image its scene
        made = [_summarized_alone(item) for _, item in rendered]
    for (index, _), derivatives in zip(rendered, made, strict=True):
        valid[index] = replace(valid[index], derivatives=derivatives)


def _summarized_alone(rendered: Rendered) -> Derivatives | None:
    try:
        return summarize([rendered])[0]
    except Exception as exc:  # noqa: BLE001 - as above
        logging.getLogger("hf_ingest.derivatives").warning("no placeholder or pHash: %s: %s", type(exc).__name__, exc)
        return None


def _read_all(rows: Sequence[ImageRow], reader: ImageReader) -> list[bytes | InvalidImage]:
    """Every row's bytes (or why not); files are read a few at a time, inline bytes just taken."""

    def read(row: ImageRow) -> bytes | InvalidImage:
        try:
            return reader.read(row)
        except InvalidImage as exc:
            return exc

    if sum(1 for row in rows if row.file is not None) < 2:
        return [read(row) for row in rows]
    with ThreadPoolExecutor(FILE_READ_THREADS, thread_name_prefix="read-file") as pool:
        return list(pool.map(read, rows))


@dataclass(frozen=True)
class SceneSource:
    """Which job and which dataset split the scenes belong to."""

    job_id: uuid.UUID
    dataset: str
    config: str
    split: str
    revision: str | None = None
    public_base_url: str | None = None

    @classmethod
    def for_stream(cls, job_id: uuid.UUID, stream: DatasetStream, public_base_url: str | None = None) -> SceneSource:
        request = stream.request
        return cls(job_id, request.dataset, stream.config_name, request.split, stream.revision, public_base_url)

    def split_of(self, image_column: str) -> SplitKey:
        return SplitKey(self.dataset, self.config, self.split, image_column.split("[", 1)[0])


def store_validated(
    store: ObjectStore, batch: ValidatedBatch, source: SceneSource
) -> tuple[list[Scene], BatchOutcome]:
    """Write the batch's objects (idempotent); the scene row of each valid image, and the counts so far."""
    unique: dict[str, PutRequest] = {}
    for image in batch.valid:
        unique.setdefault(image.key, PutRequest(image.key, image.data, image.info.content_type))
    derived: dict[str, PutRequest] = {}
    for image in batch.valid:
        if (made := image.derivatives) is not None:
            for rendition in (made.thumbnail, made.preview):
                if rendition is None:  # the original serves as it is
                    continue
                key = rendition.key(image.sha256)
                derived.setdefault(key, PutRequest(key, rendition.data, "image/webp"))
    outcomes = store.put_many([*unique.values(), *derived.values()])
    stored = [k for k in unique if outcomes[k] is PutOutcome.STORED]

    def url(key: str) -> str:
        return store.url(key, source.public_base_url)

    scenes = [
        Scene(
            job_id=source.job_id,
            dataset=source.dataset,
            config=source.config,
            split=source.split,
            image_column=image.row.image_column,
            row_index=image.row.row_index,
            object_key=image.key,
            url=store.url(image.key, source.public_base_url),
            sha256=image.sha256,
            content_type=image.info.content_type,
            width=image.info.width,
            height=image.info.height,
            bytes=len(image.data),
            metadata=image.row.metadata,
            revision=source.revision,
            **_derived_columns(image, url),
        )
        for image in batch.valid
    ]
    return scenes, BatchOutcome(
        sample_urls=tuple(scene.url for scene in scenes[:SAMPLE_URLS]),
        sample_thumbnails=tuple(scene.thumbnail_url for scene in scenes[:SAMPLE_URLS] if scene.thumbnail_url),
        derivatives_stored=sum(1 for k in derived if outcomes[k] is PutOutcome.STORED),
        rows=batch.rows,
        stored=len(stored),
        already_present=len(unique) - len(stored),
        bytes_stored=sum(len(unique[k].data) for k in stored),
        scenes_recorded=0,
        invalid=batch.invalid,
    )


def _derived_columns(image: ValidImage, url: Callable[[str], str]) -> dict[str, Any]:
    made = image.derivatives
    if made is None:
        return {}
    def served(rendition: Rendition | None) -> str:
        return url(rendition.key(image.sha256) if rendition is not None else image.key)

    return {"thumbnail_url": served(made.thumbnail), "preview_url": served(made.preview),
            "placeholder": made.placeholder, "phash": made.phash}


Gate = Callable[[], AbstractContextManager[Any]]  # held while a batch writes its objects and scenes


def ingest_batch(
    rows: Sequence[ImageRow],
    source: SceneSource,
    reader: ImageReader,
    objects: ObjectStore,
    jobs: JobStore,
    gate: Gate = nullcontext,
    database_outage_seconds: float = 0.0,
) -> BatchOutcome:
    """Validate, store and record one batch; safe to repeat (objects are content-addressed, scenes upserted).

    `gate` bounds the writes across processes (the flows pass Prefect's global concurrency limits): one
    gate for both writes, as each use of Prefect's costs ~50 ms of CPU and a round trip (measured). The
    scenes wait up to `database_outage_seconds` for a jobs database that is restarting."""
    validated = validate_rows(rows, reader)
    with gate():
        scenes, outcome = store_validated(objects, validated, source)
        recorded = call_through_outage(lambda: jobs.upsert_scenes(scenes), "the jobs database",
                                       database_outage_seconds)
        removed = 0
        if validated.invalid_rows:  # a row whose image an earlier revision had valid: its scene is not live any more
            gone = validated.invalid_rows
            removed = call_through_outage(lambda: jobs.remove_scenes(source.split_of(gone[0][0]), gone, source.revision),
                                          "the jobs database", database_outage_seconds)
    return replace(outcome, scenes_recorded=recorded.inserted, scenes_updated=recorded.updated,
                   derivatives_backfilled=recorded.backfilled, scenes_removed=removed)


@dataclass
class IngestProgress:
    """Running totals of an import; `as_dict()` is what `jobs.progress` holds."""

    rows_seen: int = 0
    stored: int = 0
    already_present: int = 0
    scenes_recorded: int = 0
    scenes_updated: int = 0
    bytes_stored: int = 0
    failed: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    derivatives_stored: int = 0
    derivatives_backfilled: int = 0
    near_duplicates: int | None = None  # set by the grouping at the end of the import
    scenes_removed: int = 0
    sync: dict[str, int] | None = None  # files_read, files_kept, scenes_unchanged, scenes_moved (a planned import)
    revision: str | None = None  # the commit read (Hub datasets)
    sample_urls: list[str] = field(default_factory=list)
    sample_thumbnails: list[str] = field(default_factory=list)
    next_row: int = 0  # rows before this one are all done (in order): a shard's checkpoint
    shards: tuple[int, int] | None = None  # (done, total) for a sharded import

    def add(self, batch: BatchOutcome) -> None:
        self.rows_seen += batch.rows
        self.stored += batch.stored
        self.already_present += batch.already_present
        self.bytes_stored += batch.bytes_stored
        self.scenes_recorded += batch.scenes_recorded
        self.scenes_updated += batch.scenes_updated
        self.sample_urls.extend(batch.sample_urls[: SAMPLE_URLS - len(self.sample_urls)])
        self.sample_thumbnails.extend(batch.sample_thumbnails[: SAMPLE_URLS - len(self.sample_thumbnails)])
        self.derivatives_stored += batch.derivatives_stored
        self.derivatives_backfilled += batch.derivatives_backfilled
        self.scenes_removed += batch.scenes_removed
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
            "scenes_updated": self.scenes_updated,
            "bytes_stored": self.bytes_stored,
            "derivatives_stored": self.derivatives_stored,
            "derivatives_backfilled": self.derivatives_backfilled,
            **({"near_duplicates": self.near_duplicates} if self.near_duplicates is not None else {}),
            **(self.sync or {}),
            "scenes_removed": self.scenes_removed,
            "revision": self.revision,
            **({"shards_done": self.shards[0], "shards_total": self.shards[1]} if self.shards else {}),
        }
