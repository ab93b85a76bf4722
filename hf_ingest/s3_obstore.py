"""Uploads to S3/R2 with obstore (Rust's `object_store`): a fraction of a millisecond of CPU per object.

Measured against SeaweedFS on 5,000 small objects (client CPU per PUT): obstore 0.24-0.33 ms, s3fs
2.4 ms (plus a HEAD at 2.1 ms), boto3 3.1 ms. The work stays off the GIL, so many uploads are in
flight from one process: STORE_CONCURRENCY of them at once, across all the batches of the process,
on one event loop.

No HEAD per object: keys are content hashes, so every PUT is a conditional create
(`If-None-Match: *`). A 412/409 answer means the object is already there (`already_present`);
R2, AWS S3, SeaweedFS and moto honour it. A store that ignores the condition (it would overwrite
and answer 200, making every object look new) is found by a probe when the store is opened, and
then each object is checked with a HEAD first, concurrently. (The probe writes and deletes one
object of its own under `.hf-ingest-probe/` in the store's prefix.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from fsspec.asyn import get_loop, sync

from hf_ingest.storage import PutOutcome, PutRequest
from hf_ingest.transient import is_transient

# Each layer retries a little; Prefect's task retries (with backoff and jitter) own the rest.
OBSTORE_RETRY = {
    "max_retries": 2,
    "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=2), "base": 2},
    "retry_timeout": timedelta(seconds=30),
}
PROBE_PREFIX = ".hf-ingest-probe"
T = TypeVar("T")
OBJECT_ATTEMPTS = 3  # per object, for what obstore's own retries leave (a reset connection)


class ObstoreUploader:
    """`put_many` for `s3://bucket/prefix` through obstore, idempotent and safe to retry."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        *,
        endpoint_url: str | None,
        access_key_id: str | None,
        secret_access_key: str | None,
        concurrency: int,
    ) -> None:
        from obstore.store import S3Store

        options: dict[str, Any] = {"connect_timeout": "5s", "timeout": "60s"}
        if endpoint_url and endpoint_url.startswith("http://"):
            options["allow_http"] = True
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        self.store = S3Store(
            bucket,
            prefix=prefix or None,
            endpoint=endpoint_url,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            region=region or ("auto" if endpoint_url else "us-east-1"),
            client_options=options,
            retry_config=OBSTORE_RETRY,  # type: ignore[arg-type]
        )
        self.concurrency = concurrency
        self._window: asyncio.Semaphore | None = None  # made on the loop that uses it
        self._honours_create: bool | None = None

    def put_many(self, requests: Sequence[PutRequest]) -> dict[str, PutOutcome]:
        return sync(get_loop(), self._put_many, requests)

    async def _put_many(self, requests: Sequence[PutRequest]) -> dict[str, PutOutcome]:
        if self._window is None:
            self._window = asyncio.Semaphore(self.concurrency)
        if self._honours_create is None:
            self._honours_create = await self._probe_conditional_create()
        put = self._create if self._honours_create else self._head_then_put
        outcomes = await asyncio.gather(*(put(r) for r in requests), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return {r.key: o for r, o in zip(requests, outcomes, strict=True)}  # type: ignore[misc]

    async def _create(self, request: PutRequest) -> PutOutcome:
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        assert self._window is not None
        async with self._window:
            try:
                await _retried(lambda: obstore.put_async(
                    self.store, request.key, request.data, mode="create", use_multipart=False,
                    attributes={"Content-Type": request.content_type},
                ))
            except (AlreadyExistsError, PreconditionError):
                return PutOutcome.ALREADY_PRESENT
        return PutOutcome.STORED

    async def _head_then_put(self, request: PutRequest) -> PutOutcome:
        """For a store that ignores `If-None-Match`: one HEAD, then a PUT only of what is missing."""
        import obstore
        from obstore.exceptions import NotFoundError

        assert self._window is not None
        async with self._window:
            try:
                head = await _retried(lambda: obstore.head_async(self.store, request.key))
                if int(head["size"]) == len(request.data):
                    return PutOutcome.ALREADY_PRESENT
            except (NotFoundError, FileNotFoundError):  # obstore raises either for a 404
                pass
            await _retried(lambda: obstore.put_async(
                self.store, request.key, request.data, use_multipart=False,
                attributes={"Content-Type": request.content_type},
            ))
        return PutOutcome.STORED

    async def _probe_conditional_create(self) -> bool:
        """Does the store refuse a second create of one key? Once per process, with a key of its own,
        removed afterwards (best effort: a token without delete rights leaves 9 bytes behind)."""
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        key = f"{PROBE_PREFIX}/{uuid.uuid4().hex}"
        try:
            await _retried(lambda: obstore.put_async(self.store, key, b"hf-ingest", mode="create", use_multipart=False))
            try:
                await _retried(lambda: obstore.put_async(self.store, key, b"hf-ingest", mode="create", use_multipart=False))
                return False
            except (AlreadyExistsError, PreconditionError):
                return True
        finally:
            with contextlib.suppress(Exception):
                await _retried(lambda: obstore.delete_async(self.store, key))


async def _retried(request: Callable[[], Awaitable[T]]) -> T:
    """`request()`, again after a transient failure obstore's own retries leave (it does not retry a
    connection reset on a PUT); OBJECT_ATTEMPTS in all, then the task's retries take over."""
    for attempt in range(OBJECT_ATTEMPTS):
        try:
            return await request()
        except Exception as exc:
            if attempt == OBJECT_ATTEMPTS - 1 or not is_transient(exc):
                raise
            await asyncio.sleep(0.1 * 4**attempt)
    raise AssertionError("unreachable")
