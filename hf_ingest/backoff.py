"""Retry with exponential backoff and jitter, for the few calls that run outside a Prefect task, and
riding out an outage of the platform (the Prefect API, the jobs database) within a time budget.

Tasks get their retries from Prefect (`flows/retries.py`); state hooks and the HTTP trigger
are not tasks, so their database writes use this instead, with the same transient rule.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from hf_ingest.transient import PermanentIngestError, is_transient, retry_after_seconds

T = TypeVar("T")
logger = logging.getLogger("hf_ingest.outage")
OUTAGE_MAX_DELAY = 5.0  # while a service is down, it is asked again at least this often


def backoff_delay(
    attempt: int, exc: BaseException, *, base_delay: float = 0.5, max_delay: float = 10.0, jitter: float = 0.5
) -> float:
    """Exponential backoff with jitter for the `attempt`-th retry, never shorter than the server's Retry-After."""
    delay = min(max_delay, base_delay * 2**attempt) * (1 + random.uniform(-jitter, jitter))
    return max(delay, min(retry_after_seconds(exc) or 0.0, 60.0))


def call_with_backoff(
    fn: Callable[[], T],
    *,
    attempts: int = 6,
    base_delay: float = 0.5,
    max_delay: float = 10.0,
    jitter: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `fn`, retrying transient failures with exponential backoff; permanent ones raise at once."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if attempt == attempts - 1 or not is_transient(exc):
                raise
            sleep(backoff_delay(attempt, exc, base_delay=base_delay, max_delay=max_delay, jitter=jitter))
    raise AssertionError("unreachable")


class Unreachable(PermanentIngestError):
    """A service the import needs stayed unreachable for longer than OUTAGE_SECONDS; the job fails saying which."""


class Outage:
    """Waiting out an outage of one service (`what`, as the job's error names it): the same call again after
    each transient failure, with backoff, until it answers or `budget` seconds have passed since the first
    failed call began (then `Unreachable`; a client may have retried inside that call: Prefect's retries a lost
    connection for about a minute). A restart of the Prefect server or of PostgreSQL takes seconds to a minute;
    an import waits for it instead of failing, and goes on where it was."""

    def __init__(self, what: str, budget: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.budget = budget
        self.clock = clock
        self.since: float | None = None
        self.attempt = 0

    def delay(self, exc: BaseException, call_began: float) -> float:
        """How long to wait before the next try, after a call begun at `call_began` (this clock) failed with
        `exc`; `Unreachable` once the budget is spent; `exc` itself if it is not transient."""
        if not is_transient(exc):
            raise exc
        now = self.clock()
        self.since = call_began if self.since is None else self.since
        waited = now - self.since
        if waited >= self.budget:
            raise Unreachable(
                f"{self.what} was unreachable for {waited:.0f} s (OUTAGE_SECONDS={self.budget:g}): "
                f"{type(exc).__name__}: {str(exc)[:300]}"
            ) from exc
        delay = min(backoff_delay(self.attempt, exc, max_delay=OUTAGE_MAX_DELAY), self.budget - waited + 0.1)
        self.attempt += 1
        logger.warning("%s unreachable (%s: %s); trying again in %.1f s (%.0f s of %g s)", self.what,
                       type(exc).__name__, str(exc)[:200], delay, waited, self.budget)
        return delay


def call_through_outage(fn: Callable[[], T], what: str, budget: float, *,
                        sleep: Callable[[float], None] = time.sleep) -> T:
    """`fn()`, called again while `what` is unreachable, for up to `budget` seconds (see `Outage`); a budget
    of 0 calls it once, its errors as they are."""
    if budget <= 0:
        return fn()
    outage = Outage(what, budget)
    while True:
        began = outage.clock()
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - `delay` re-raises what is not transient
            sleep(outage.delay(exc, began))


async def acall_through_outage(fn: Callable[[], Awaitable[T]], what: str, budget: float) -> T:
    """`await fn()`, called again while `what` is unreachable, for up to `budget` seconds (see `Outage`)."""
    outage = Outage(what, budget)
    while True:
        began = outage.clock()
        try:
            return await fn()
        except Exception as exc:  # noqa: BLE001 - `delay` re-raises what is not transient
            await asyncio.sleep(outage.delay(exc, began))
