"""The write gate of deployment runs: a slot of each of Prefect's global write limits, held while a batch
writes its objects and scenes, so twenty workers do not flatten one database or bucket.

Prefect's `concurrency()` context manager does the same, but each use builds a client (with a TLS
context) to release, starts a lease-renewal thread with a client of its own that renews at once, and
emits four events: ~29 ms of the flow's CPU and ~12 ms of the server's per batch (measured; a sharded
import of 200,000 images spent ~4 s of CPU there). Here a use is one call to take the slots and one to
give them back, on the run's shared client; one thread per process renews only the leases held for
longer than a third of their duration (batches take seconds, a lease lasts a minute).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from blocks.settings import get_settings
from hf_ingest.backoff import Outage

LEASE_SECONDS = 60  # the shortest lease Prefect allows: a killed worker's slots come back within a minute
LOCKED = 423  # the server's answer while every slot of a limit is taken (with Retry-After)
log = logging.getLogger("hf_ingest.write_slots")


@contextmanager
def shared_sync_client() -> Iterator[Any]:
    """The run's Prefect client: the flow enters a `SyncClientContext` around its batches and task threads
    copy it, so no client (and no TLS context) is built per batch; elsewhere, a client for the block."""
    from prefect.context import SyncClientContext

    with SyncClientContext.get_or_create() as context:
        yield context.client


def _holder() -> Any:
    """Who holds the slots, as the Prefect UI shows it: the batch's task run."""
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.context import TaskRunContext

    context = TaskRunContext.get()
    return ConcurrencyLeaseHolder(type="task_run", id=context.task_run.id) if context is not None else None


@dataclass
class _Lease:
    client: Any
    renewed: float = field(default_factory=time.monotonic)


class WriteSlots:
    """`with slots.held(): ...` takes one slot of each limit in `names` (waiting while they are all taken)
    and gives them back when the block ends, however it ends. Limits that do not exist are not waited for."""

    def __init__(self, names: list[str], lease_seconds: float = LEASE_SECONDS,
                 client: Callable[[], AbstractContextManager[Any]] = shared_sync_client,
                 renew_every: float | None = None) -> None:
        self.names = sorted(names)
        self.lease_seconds = lease_seconds
        self.client = client
        self.renew_every = renew_every if renew_every is not None else lease_seconds / 3
        self._leases: dict[uuid.UUID, _Lease] = {}
        self._lock = threading.Lock()
        self._keeper: threading.Thread | None = None

    @contextmanager
    def held(self) -> Iterator[None]:
        with self.client() as client:
            lease_id = self._acquire(client)
            if lease_id is None:  # no such limits on this server: nothing to hold
                yield
                return
            with self._lock:
                self._leases[lease_id] = _Lease(client)
                self._start_keeper()
            try:
                yield
            finally:
                with self._lock:
                    self._leases.pop(lease_id, None)
                try:
                    client.release_concurrency_slots_with_lease(lease_id)
                except Exception as exc:  # noqa: BLE001 - the batch is written; an unreleased lease lapses
                    log.warning("write slots not given back (%s: %s); they come back within %g s",
                                type(exc).__name__, exc, self.lease_seconds)

    def _acquire(self, client: Any) -> uuid.UUID | None:
        """The lease of one slot of each limit: waits while every slot is taken, and while the Prefect API is
        unreachable (a server restart), up to OUTAGE_SECONDS."""
        from flows.platform import prefect_api_name

        holder = _holder()
        outage = Outage(prefect_api_name(), get_settings().outage_seconds)
        while True:
            began = outage.clock()
            try:
                answer = client.increment_concurrency_slots_with_lease(
                    names=self.names, slots=1, mode="concurrency", lease_duration=self.lease_seconds, holder=holder
                ).json()
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code == LOCKED:
                    time.sleep(float(exc.response.headers.get("Retry-After") or 1.0))  # the server jitters it
                else:
                    time.sleep(outage.delay(exc, began))  # 5xx: waits; anything else: raised
                continue
            except Exception as exc:  # noqa: BLE001 - `delay` re-raises what is not transient
                time.sleep(outage.delay(exc, began))
                continue
            return uuid.UUID(answer["lease_id"]) if answer.get("limits") else None

    def _start_keeper(self) -> None:
        if self._keeper is None or not self._keeper.is_alive():
            self._keeper = threading.Thread(target=self._keep, name="write-slots-renewal", daemon=True)
            self._keeper.start()

    def _keep(self) -> None:
        """Renews every lease held longer than `renew_every`; a renewal that fails is logged, the batch goes on
        (its slots may be taken by another batch once the lease lapses: the limit is a bound, not a lock)."""
        while True:
            time.sleep(self.renew_every / 2)
            now = time.monotonic()
            with self._lock:
                due = [(lease_id, lease) for lease_id, lease in self._leases.items()
                       if now - lease.renewed >= self.renew_every]
            for lease_id, lease in due:
                try:
                    lease.client.renew_concurrency_lease(lease_id=lease_id, lease_duration=self.lease_seconds)
                    lease.renewed = time.monotonic()
                except Exception as exc:  # noqa: BLE001 - advisory, as Prefect's own renewal without strict
                    if lease_id in self._leases:  # (not if the batch gave it back meanwhile)
                        log.warning("write-slot lease %s not renewed: %s: %s", lease_id, type(exc).__name__, exc)
