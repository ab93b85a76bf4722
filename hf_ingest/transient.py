"""Which failures are worth retrying.

Retries only help when the failure is in the network or a remote service that may
recover: connection errors, timeouts, HTTP 429/5xx, S3 500/503/SlowDown. Everything
else (no such dataset, bad credentials, a missing column) fails fast so that the job
says what to fix instead of spinning through backoff.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator

TRANSIENT_HTTP_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
TRANSIENT_S3_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "Throttling",
        "ThrottlingException",
        "500",
        "502",
        "503",
        "504",
    }
)
TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNRESET,
        errno.ECONNREFUSED,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.EPIPE,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EAGAIN,
        errno.EBUSY,  # s3fs maps ServiceUnavailable and SlowDown here
        errno.EREMOTEIO,  # s3fs maps InternalError here
    }
)
# Exception class names (matched on the MRO, so no optional import is needed).
TRANSIENT_CLASS_NAMES = frozenset(
    {
        # botocore: a reset surfaces as EndpointConnectionError, not OSError
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ReadTimeoutError",
        "ConnectTimeoutError",
        "ProxyConnectionError",
        "ResponseStreamingError",
        "IncompleteReadError",
        # aiohttp / fsspec / httpx / requests
        "ClientConnectionError",
        "ServerDisconnectedError",
        "ClientPayloadError",
        "FSTimeoutError",
        "TransportError",
        "TimeoutException",
        "ConnectError",
        "RemoteProtocolError",
        "ChunkedEncodingError",
        # SQLAlchemy / DB-API: the database went away or is restarting
        "OperationalError",
        "InterfaceError",
        "DisconnectionError",
    }
)
PERMANENT_CLASS_NAMES = frozenset(
    {
        "DatasetNotFoundError",
        "RepositoryNotFoundError",
        "GatedRepoError",
        "RevisionNotFoundError",
        "EntryNotFoundError",
        "DataFilesNotFoundError",
        "NoCredentialsError",
        "PermanentIngestError",
    }
)


# SQLSTATE classes no retry fixes: 28 bad credentials, 3D no such database, 42 no such table or column
# (a schema that was never migrated), 22 a value the column cannot hold.
PERMANENT_SQLSTATE_CLASSES = ("28", "3D", "42", "22")
PERMANENT_DATABASE_MESSAGES = re.compile(
    r"password authentication failed|no password supplied|(role|database) \"[^\"]*\" does not exist"
    r"|no such table|no such column|unable to open database file|file is not a database|readonly database"
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it was raised from, each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def http_status(exc: BaseException) -> int | None:
    """An HTTP status carried by the exception (httpx, requests, huggingface_hub, botocore, postgrest)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status else None
    status = getattr(response, "status_code", None) or getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status
    code = getattr(exc, "code", None)  # postgrest's APIError carries the HTTP status as a string sometimes
    return int(code) if isinstance(code, str) and code.isdigit() and len(code) == 3 else None


_REPORTED_STATUS = re.compile(r"status code: (\d{3})")
_REPORTED_S3_CODE = re.compile(r"<Code>([A-Za-z]+)</Code>")
_CONNECTION_TROUBLE = re.compile(r"error sending request|connection (reset|refused|closed)|timed out|broken pipe", re.I)


def _reported_failure(exc: BaseException) -> bool | None:
    """obstore (Rust) reports HTTP failures in the message only: transient or not, or None if it says nothing."""
    if not type(exc).__module__.startswith("obstore"):
        return None
    text = str(exc)
    code = _REPORTED_S3_CODE.search(text)
    if code:
        return code.group(1) in TRANSIENT_S3_CODES
    status = _REPORTED_STATUS.search(text)
    if status:
        return int(status.group(1)) in TRANSIENT_HTTP_STATUSES
    return True if _CONNECTION_TROUBLE.search(text) else None


def retry_after_seconds(exc: BaseException) -> float | None:
    """The server's `Retry-After` (in seconds) on a 429/503 anywhere in the chain, if it sent one."""
    for e in _chain(exc):
        response = getattr(e, "response", None)
        headers = getattr(response, "headers", None)
        value = headers.get("Retry-After") if headers is not None else None
        if value is not None:
            try:
                return max(0.0, float(value))
            except ValueError:
                return None  # an HTTP date: rare enough to fall back to our own backoff
    return None


def _s3_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code")
    return None


def is_permanent_database_error(exc: BaseException) -> bool:
    """Wrong credentials, a missing database or table: the database answered, and will answer the same."""
    for e in _chain(exc):
        for candidate in (e, getattr(e, "orig", None)):
            sqlstate = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
            if isinstance(sqlstate, str) and sqlstate[:2] in PERMANENT_SQLSTATE_CLASSES:
                return True
        if {"OperationalError", "ProgrammingError", "DatabaseError"} & _class_names(e):
            if PERMANENT_DATABASE_MESSAGES.search(str(e).lower()):
                return True
    return False


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same operation later may succeed."""
    chain = list(_chain(exc))
    if any(_class_names(e) & PERMANENT_CLASS_NAMES for e in chain) or is_permanent_database_error(exc):
        return False
    for e in chain:
        names = _class_names(e)
        if names & TRANSIENT_CLASS_NAMES:
            return True
        reported = _reported_failure(e)
        if reported is not None:
            return reported
        code = _s3_code(e)
        if code is not None:
            return code in TRANSIENT_S3_CODES
        status = http_status(e)
        if status is not None:
            return status in TRANSIENT_HTTP_STATUSES
        if isinstance(e, (ConnectionError, TimeoutError)):
            return True
        if isinstance(e, OSError) and e.errno in TRANSIENT_ERRNOS:
            return True
    return False


class PermanentIngestError(Exception):
    """A failure that retrying cannot fix; its message tells the user what to change."""
