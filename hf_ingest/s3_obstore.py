"""Uploads to S3/R2 with obstore (Rust's `object_store`): about a tenth of a millisecond of CPU per object.

Each upload is obstore's blocking `put`, called from a pool of STORE_CONCURRENCY threads shared by all the
batches of the process: the call releases the GIL while Rust signs, sends and waits, so that many uploads
are in flight at once. Measured against SeaweedFS on 20,000 small objects (client CPU per object, every
thread of the process): blocking `put` from 128 threads 0.12-0.13 ms (Python 0.03, obstore's runtime 0.09);
`put_async` on one event loop, as before, 0.43-0.45 ms (Python 0.14, obstore's runtime 0.31: each
completion crosses back into Python through a blocking task that takes the GIL and wakes the event loop);
s3fs 2.4 ms (plus a HEAD at 2.1 ms); boto3 3.1 ms.

No HEAD per object: keys are content hashes, so every PUT is a conditional create
(`If-None-Match: *`). A 412/409 answer means the object is already there (`already_present`);
R2, AWS S3, SeaweedFS and moto honour it. A store that ignores the condition (it would overwrite
and answer 200, making every object look new) is found by a probe when the store is opened, and
then each object is checked with a HEAD first. (The probe writes and deletes one object of its own
under `.hf-ingest-probe/` in the store's prefix.)
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

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
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._honours_create: bool | None = None

    def put_many(self, requests: Sequence[PutRequest]) -> dict[str, PutOutcome]:
        """Every request, STORE_CONCURRENCY at a time across the process; raises the first error after all ran."""
        pool = self._executor()
        put = self._create if self._honours_create else self._head_then_put
        futures = [pool.submit(put, request) for request in requests]
        outcomes: dict[str, PutOutcome] = {}
        error: BaseException | None = None
        for request, future in zip(requests, futures, strict=True):
            try:
                outcomes[request.key] = future.result()
            except Exception as exc:  # noqa: BLE001 - the first is raised once every upload has ended
                error = error or exc
        if error is not None:
            raise error
        return outcomes

    def _executor(self) -> ThreadPoolExecutor:
        """The process's upload threads, made (and the store probed) on first use."""
        with self._lock:
            if self._honours_create is None:
                self._honours_create = self._probe_conditional_create()
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="s3-put")
            return self._pool

    def _create(self, request: PutRequest) -> PutOutcome:
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            _retried(lambda: obstore.put(
                self.store, request.key, request.data, mode="create", use_multipart=False,
                attributes={"Content-Type": request.content_type},
            ))
        except (AlreadyExistsError, PreconditionError):
            return PutOutcome.ALREADY_PRESENT
        return PutOutcome.STORED

    def _head_then_put(self, request: PutRequest) -> PutOutcome:
        """For a store that ignores `If-None-Match`: one HEAD, then a PUT only of what is missing."""
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            head = _retried(lambda: obstore.head(self.store, request.key))
            if int(head["size"]) == len(request.data):
                return PutOutcome.ALREADY_PRESENT
        except (NotFoundError, FileNotFoundError):  # obstore raises either for a 404
            pass
        _retried(lambda: obstore.put(
            self.store, request.key, request.data, use_multipart=False,
            attributes={"Content-Type": request.content_type},
        ))
        return PutOutcome.STORED

    def _probe_conditional_create(self) -> bool:
        """Does the store refuse a second create of one key? Once per process, with a key of its own,
        removed afterwards (best effort: a token without delete rights leaves 9 bytes behind)."""
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        key = f"{PROBE_PREFIX}/{uuid.uuid4().hex}"
        try:
            _retried(lambda: obstore.put(self.store, key, b"hf-ingest", mode="create", use_multipart=False))
            try:
                _retried(lambda: obstore.put(self.store, key, b"hf-ingest", mode="create", use_multipart=False))
                return False
            except (AlreadyExistsError, PreconditionError):
                return True
        finally:
            with contextlib.suppress(Exception):
                _retried(lambda: obstore.delete(self.store, key))


def _retried(request: Callable[[], T]) -> T:
    """`request()`, again after a transient failure obstore's own retries leave (it does not retry a
    connection reset on a PUT); OBJECT_ATTEMPTS in all, then the task's retries take over."""
    for attempt in range(OBJECT_ATTEMPTS):
        try:
            return request()
        except Exception as exc:
            if attempt == OBJECT_ATTEMPTS - 1 or not is_transient(exc):
                raise
            time.sleep(0.1 * 4**attempt)
    raise AssertionError("unreachable")
