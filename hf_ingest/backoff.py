"""Retry with exponential backoff and jitter, for the few calls that run outside a Prefect task.

Tasks get their retries from Prefect (`flows/retries.py`); state hooks and the HTTP trigger
are not tasks, so their database writes use this instead, with the same transient rule.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from hf_ingest.transient import is_transient, retry_after_seconds

T = TypeVar("T")


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
