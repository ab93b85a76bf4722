"""Object storage: a local folder by default, `s3://bucket/prefix` (R2, S3) in production.

Objects are content-addressed (`images/ab/<sha256>.<ext>`), so writing the same image
twice is a no-op and a retry or re-run never duplicates anything. Uploads to S3 go through
one of two engines (S3_CLIENT): obstore (`s3_obstore.py`, the default: ~0.3 ms of CPU per
object, conditional creates, no HEAD) or s3fs (below: a HEAD and a PUT, ~4.5 ms of CPU per
object). Reads and listings (tests, the CLI's summary) go through fsspec either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import fsspec
from fsspec.asyn import AsyncFileSystem, sync

from hf_ingest.transient import PermanentIngestError, is_transient

# Each layer retries a little; Prefect's task retries (with backoff and jitter) own the rest,
# which keeps a store that never recovers bounded in time.
S3_CLIENT_CONFIG: dict[str, Any] = {
    "retries": {"max_attempts": 2, "mode": "standard"},
    "connect_timeout": 5,
    "read_timeout": 30,
    # botocore otherwise streams every PUT as aws-chunked with a CRC32 trailer, which S3-compatible
    # stores (SeaweedFS here) answer with InternalError; Content-MD5-free PUTs work everywhere.
    "request_checksum_calculation": "when_required",
    "response_checksum_validation": "when_required",
}
S3FS_RETRIES = 2  # s3fs's own loop (SlowDown, timeouts); it does not retry a 500 InternalError


def object_key(sha256: str, extension: str) -> str:
    """The deterministic, content-addressed key of an image."""
    return f"images/{sha256[:2]}/{sha256}.{extension}"


def derived_key(sha256: str, width: int, height: int) -> str:
    """The key of an image's WebP derivative of one size, beside the originals: identical images and
    re-imports share it, and a small image's thumbnail is its preview."""
    return f"derived/{sha256[:2]}/{sha256}-{width}x{height}.webp"


class PutOutcome(StrEnum):
    STORED = "stored"
    ALREADY_PRESENT = "already_present"


@dataclass(frozen=True)
class PutRequest:
    key: str
    data: bytes
    content_type: str


class ObjectStore:
    """Writes images under one root; `put_many` is idempotent and safe to retry."""

    def __init__(
        self,
        storage_url: str,
        *,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        concurrency: int = 128,
        s3_client: str = "obstore",
    ) -> None:
        self.storage_url = storage_url
        self.concurrency = concurrency
        self.uploader: Any = None  # None: the local folder, written below
        protocol, _, rest = storage_url.partition("://")
        if not rest:  # a plain folder
            protocol, rest = "file", storage_url
        self.protocol = protocol
        if protocol == "file":
            self.root = str(Path(rest).expanduser().resolve())
            self.fs: fsspec.AbstractFileSystem = fsspec.filesystem("file")
            self._root_uri = Path(self.root).as_uri()
        elif protocol in ("s3", "s3a"):
            self.root = rest.strip("/")
            if not self.root:
                raise ValueError("STORAGE_URL must name a bucket: s3://bucket[/prefix]")
            self.fs = fsspec.filesystem(
                "s3",
                endpoint_url=endpoint_url,
                key=access_key_id,
                secret=secret_access_key,
                skip_instance_cache=True,
                config_kwargs={**S3_CLIENT_CONFIG, "max_pool_connections": max(concurrency, 10)},
            )
            self.fs.retries = S3FS_RETRIES  # type: ignore[attr-defined]
            if s3_client == "obstore":
                from hf_ingest.s3_obstore import ObstoreUploader

                bucket, _, prefix = self.root.partition("/")
                self.uploader = ObstoreUploader(
                    bucket, prefix, endpoint_url=endpoint_url, access_key_id=access_key_id,
                    secret_access_key=secret_access_key, concurrency=concurrency,
                )
            elif s3_client == "s3fs":
                self.uploader = S3fsUploader(self.fs, self.root, concurrency)
            else:
                raise ValueError(f"unknown S3_CLIENT {s3_client!r}: use obstore or s3fs")
        else:
            raise ValueError(f"unsupported STORAGE_URL scheme {protocol!r}: use a folder or s3://bucket/prefix")

    def path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def url(self, key: str, public_base_url: str | None) -> str:
        """Where a reader finds the object: the public base URL if configured, else the storage URL."""
        if public_base_url:
            return f"{public_base_url.rstrip('/')}/{key}"
        if self.protocol == "file":
            return f"{self._root_uri}/{key}"  # keys are [0-9a-z/.] only: nothing to escape
        return f"{self.protocol}://{self.path(key)}"

    def put_many(self, requests: Sequence[PutRequest]) -> dict[str, PutOutcome]:
        """Write every object that is not there yet. Raises the first error after trying all of them.

        Transient errors propagate as they are (the task's retry policy knows them); anything else
        becomes a `PermanentIngestError` that names the store, so the job says where it could not write.
        """
        try:
            if self.uploader is not None:
                return dict(self.uploader.put_many(requests))
            return {r.key: self._put_local(r) for r in requests}
        except Exception as exc:
            if is_transient(exc):
                raise
            detail = str(exc).split("Debug source:")[0].strip()[:600]  # obstore appends a Rust debug dump
            raise PermanentIngestError(f"cannot write to {self.storage_url}: {type(exc).__name__}: {detail}") from exc

    def _put_local(self, request: PutRequest) -> PutOutcome:
        """stat, open, write, close, rename: the fewest system calls that keep a write atomic.

        This runs once per image, so it uses `os` directly (pathlib costs more than the syscalls);
        an `images/ab/` folder is made only when opening a file in it finds it missing."""
        target = self.path(request.key)
        try:
            if os.stat(target).st_size == len(request.data):
                return PutOutcome.ALREADY_PRESENT
        except FileNotFoundError:
            pass
        folder, name = os.path.split(target)
        # Unique per process and thread: concurrent writers of the same object never share a temp file.
        temporary = f"{folder}/.{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        try:
            descriptor = os.open(temporary, flags, 0o644)
        except FileNotFoundError:  # the first object under this prefix (or its folder was removed)
            os.makedirs(folder, exist_ok=True)
            descriptor = os.open(temporary, flags, 0o644)
        try:
            try:
                view = memoryview(request.data)
                while view:
                    view = view[os.write(descriptor, view):]
            finally:
                os.close(descriptor)
            os.replace(temporary, target)  # atomic: readers never see a partial object
        except BaseException:  # disk full, interrupted: leave no half-written temporary behind
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        return PutOutcome.STORED

    def read(self, key: str) -> bytes:
        return bytes(self.fs.cat_file(self.path(key)))

    def count_objects(self) -> int:
        """How many objects are stored (tests and the demo summary use it)."""
        base = self.path("images")
        if not self.fs.exists(base):
            return 0
        return sum(1 for p in self.fs.find(base) if not Path(p).name.startswith("."))


class S3fsUploader:
    """`put_many` through s3fs: a HEAD per object, then a PUT of what is missing (S3_CLIENT=s3fs)."""

    def __init__(self, fs: AsyncFileSystem, root: str, concurrency: int) -> None:
        self.fs = fs
        self.root = root
        self.concurrency = concurrency

    def put_many(self, requests: Sequence[PutRequest]) -> dict[str, PutOutcome]:
        return sync(self.fs.loop, self._put_many_async, requests)

    async def _put_many_async(self, requests: Sequence[PutRequest]) -> dict[str, PutOutcome]:
        fs = self.fs
        limit = asyncio.Semaphore(self.concurrency)

        async def put_one(request: PutRequest) -> PutOutcome:
            path = f"{self.root}/{request.key}"
            async with limit:
                bucket, key, _ = fs.split_path(path)  # type: ignore[attr-defined]
                try:  # one HEAD; fs._info would add a LIST on every miss
                    head = await fs._call_s3("head_object", Bucket=bucket, Key=key)  # type: ignore[attr-defined]
                    if int(head.get("ContentLength", -1)) == len(request.data):
                        return PutOutcome.ALREADY_PRESENT
                except FileNotFoundError:
                    pass
                await fs._pipe_file(path, request.data, ContentType=request.content_type)
                return PutOutcome.STORED

        outcomes = await asyncio.gather(*(put_one(r) for r in requests), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return {r.key: o for r, o in zip(requests, outcomes, strict=True)}  # type: ignore[misc]
