"""Structured log lines (logfmt) that carry job id, flow run id and stage, with secrets scrubbed.

Every line reads `stage=store job_id=… flow_run_id=… event="batch stored" rows=256 …`, and the
same fields travel as `extra` on the record for handlers that emit JSON.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

REDACTED = "***"


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret value replaced; secrets shorter than 4 characters are too ambiguous to scrub."""
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


class SecretFilter(logging.Filter):
    """Scrubs configured secrets from every record that passes through a handler."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            cleaned = redact(message, self.secrets)
            if cleaned != message:
                record.msg, record.args = cleaned, None
            if record.exc_info and record.exc_info[1] is not None:
                text = logging.Formatter().formatException(record.exc_info)
                record.exc_info, record.exc_text = None, redact(text, self.secrets)
        return True


def install_secret_filter(secrets: Iterable[str]) -> None:
    """Attach one `SecretFilter` to every handler configured now (root, Prefect's console and API handlers)."""
    values = [s for s in secrets if s]
    if not values:
        return
    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            existing = [f for f in handler.filters if isinstance(f, SecretFilter)]
            if existing:
                existing[0].secrets = sorted(set(existing[0].secrets) | set(values))
            else:
                handler.addFilter(SecretFilter(values))


def _fmt(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), default=str) if isinstance(value, (dict, list)) else str(value)
    if text == "" or any(c in text for c in ' "='):
        return '"' + text.replace('"', '\\"') + '"'
    return text


class StageLogger:
    """Logs one job's events: `log.info("store", "batch stored", rows=256, bytes=...)`."""

    def __init__(
        self,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        *,
        job_id: object,
        flow_run_id: object,
        secrets: Iterable[str] = (),
    ) -> None:
        self.logger = logger
        self.context = {"job_id": str(job_id), "flow_run_id": str(flow_run_id)}
        self.secrets = [s for s in secrets if s]

    def log(self, level: int, stage: str, event: str, **fields: Any) -> None:
        parts = [f"stage={stage}"] + [f"{k}={v}" for k, v in self.context.items()]
        parts.append(f"event={_fmt(event)}")
        parts += [f"{k}={_fmt(v)}" for k, v in fields.items()]
        line = redact(" ".join(parts), self.secrets)
        self.logger.log(level, line, extra={**self.context, "stage": stage, "event": event})

    def info(self, stage: str, event: str, **fields: Any) -> None:
        self.log(logging.INFO, stage, event, **fields)

    def warning(self, stage: str, event: str, **fields: Any) -> None:
        self.log(logging.WARNING, stage, event, **fields)

    def error(self, stage: str, event: str, **fields: Any) -> None:
        self.log(logging.ERROR, stage, event, **fields)


class ScrubbedError(Exception):
    """An error whose message carried a configured secret, raised again with the secret replaced."""


class ScrubbedTransientError(ScrubbedError, ConnectionError):
    """As `ScrubbedError`, for a failure that is still worth retrying."""


class scrub_secrets(contextlib.ContextDecorator):  # noqa: N801 - reads as a decorator / context manager
    """An exception whose text contains a configured secret leaves as a scrubbed copy.

    Prefect stores an exception's text as the run's state message (shown in the UI, mirrored
    into `jobs.error`), so the secret must be gone before the exception reaches Prefect.
    Use as `@scrub_secrets(...)` on tasks, or `with scrub_secrets(...):` in a flow body (a
    wrapped flow function would hide its signature from Prefect's parameter validation).
    """

    def __init__(self, secrets: Callable[[], Iterable[str]]) -> None:
        self.secrets = secrets

    def __enter__(self) -> scrub_secrets:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if not isinstance(exc, Exception):
            return False
        text = f"{type(exc).__name__}: {exc}"
        cleaned = redact(text, list(self.secrets()))
        if cleaned == text:
            return False
        from hf_ingest.transient import is_transient

        kind = ScrubbedTransientError if is_transient(exc) else ScrubbedError
        raise kind(cleaned) from None
