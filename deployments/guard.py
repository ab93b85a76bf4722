"""The trigger's front door (an ASGI middleware): what is refused before any body is read or parsed.

The trigger faces the internet (Supabase webhooks call it). Before this, an unauthenticated 300 MB
POST took it from 93 MB to 974 MB of memory before the 401. Now, for every path but the open ones:
1. the bearer token is checked from the headers alone: a wrong or missing token is answered 401
   without reading a byte of the body (and the connection closed, so the rest is never received);
2. a client that keeps failing is answered 429 with `Retry-After` (a valid token is never limited);
3. the body is read here, on the stream, up to MAX_REQUEST_BYTES: a larger `Content-Length` is 413 at
   once, a chunked body is 413 as soon as it passes the limit. The app then gets the buffered body.
"""

from __future__ import annotations

import hmac
import json
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/healthz", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})


class FailedAuthLimiter:
    """At most `limit()` failed authentications per client address in any `window` seconds."""

    def __init__(self, limit: Callable[[], int], window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.failures: dict[str, deque[float]] = {}

    def retry_after(self, client: str) -> int | None:
        """Seconds until `client` may try again, or None if it is not limited."""
        recent = self._recent(client)
        if len(recent) < self.limit():
            return None
        return max(1, math.ceil(recent[0] + self.window - self.clock()))

    def record_failure(self, client: str) -> None:
        self._recent(client).append(self.clock())
        if len(self.failures) > 10_000:  # forget idle clients; an attacker cannot grow this without bound
            for name in [name for name, times in self.failures.items() if not self._recent(name)]:
                del self.failures[name]

    def _recent(self, client: str) -> deque[float]:
        times = self.failures.setdefault(client, deque())
        while times and times[0] <= self.clock() - self.window:
            times.popleft()
        return times


class RequestGuard:
    """Token first, then a capped body; see the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        secret: Callable[[], str | None],
        max_body_bytes: Callable[[], int],
        limiter: FailedAuthLimiter,
    ) -> None:
        self.app = app
        self.secret = secret
        self.max_body_bytes = max_body_bytes
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        expected = self.secret()
        if not expected:
            await _reply(send, 503, "WEBHOOK_SECRET is not configured")
            return
        if not _bearer_matches(headers.get("authorization", ""), expected):
            client = (scope.get("client") or ("unknown", 0))[0]
            wait = self.limiter.retry_after(client)
            if wait is not None:
                await _reply(send, 429, "too many failed authentications; try again later",
                             {"retry-after": str(wait)})
                return
            self.limiter.record_failure(client)
            await _reply(send, 401, "missing or invalid bearer token", {"www-authenticate": "Bearer"})
            return
        limit = self.max_body_bytes()
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _reply(send, 413, f"request body over MAX_REQUEST_BYTES={limit}")
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > limit:
                await _reply(send, 413, f"request body over MAX_REQUEST_BYTES={limit}")
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), receive), send)


def _bearer_matches(authorization: str, expected: str) -> bool:
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected.encode())


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: only a disconnect can come

    return replay


async def _reply(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    """A JSON error, and the connection closed: an unread body is never received."""
    payload = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
           (b"connection", b"close")]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})
