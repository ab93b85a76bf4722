"""Which failures are retried: real exception objects from the libraries we call."""

from __future__ import annotations

import errno
import time
from pathlib import Path

import httpx
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from s3fs.errors import translate_boto_error
from sqlalchemy.exc import IntegrityError, OperationalError

from hf_ingest.backoff import call_with_backoff
from hf_ingest.transient import PermanentIngestError, is_transient


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": f"{code} happened"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


def _http_status_error(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "https://example.invalid/x")
    return httpx.HTTPStatusError("boom", request=request, response=httpx.Response(status, request=request))


@pytest.mark.parametrize(
    "exc",
    [
        _client_error("InternalError", 500),
        _client_error("ServiceUnavailable", 503),
        _client_error("SlowDown", 503),
        translate_boto_error(_client_error("InternalError", 500)),  # what s3fs raises: an OSError(EREMOTEIO)
        translate_boto_error(_client_error("SlowDown", 503)),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),  # a reset, as botocore reports it
        ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
        ConnectionResetError(errno.ECONNRESET, "reset"),
        TimeoutError("timed out"),
        httpx.ConnectError("refused"),
        _http_status_error(429),
        _http_status_error(502),
        OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly")),
        ConnectionError("Couldn't reach 'x/y' on the Hub (LocalEntryNotFoundError)"),
    ],
    ids=lambda e: type(e).__name__ + ":" + str(e)[:30],
)
def test_transient_failures_are_retried(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        _client_error("AccessDenied", 403),
        _client_error("NoSuchBucket", 404),
        translate_boto_error(_client_error("AccessDenied", 403)),
        _http_status_error(401),
        _http_status_error(404),
        FileNotFoundError("Couldn't find any data file at /nope"),
        PermissionError("denied"),
        ValueError('Bad split: nope. Available splits: ["train"]'),
        PermanentIngestError("no image column"),
        IntegrityError("INSERT", {}, Exception("duplicate key")),
    ],
    ids=lambda e: type(e).__name__ + ":" + str(e)[:30],
)
def test_permanent_failures_fail_fast(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_permanent_cause_wins_over_a_transient_wrapper() -> None:
    from datasets.exceptions import DatasetNotFoundError

    try:
        try:
            raise DatasetNotFoundError("Dataset 'nobody/nothing' doesn't exist on the Hub")
        except DatasetNotFoundError as inner:
            raise ConnectionError("while resolving") from inner
    except ConnectionError as outer:
        assert not is_transient(outer)


def test_backoff_retries_transient_then_succeeds_and_grows_delays() -> None:
    delays: list[float] = []
    calls = iter([ConnectionResetError(), TimeoutError(), "ok"])

    def flaky() -> str:
        result = next(calls)
        if isinstance(result, BaseException):
            raise result
        return result

    assert call_with_backoff(flaky, base_delay=1.0, jitter=0.0, sleep=delays.append) == "ok"
    assert delays == [1.0, 2.0]


def test_backoff_gives_up_on_permanent_errors_at_once() -> None:
    attempts: list[int] = []

    def denied() -> None:
        attempts.append(1)
        raise PermissionError("bad key")

    with pytest.raises(PermissionError):
        call_with_backoff(denied, sleep=lambda _: None)
    assert len(attempts) == 1


def test_backoff_is_bounded_and_jittered() -> None:
    delays: list[float] = []
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        call_with_backoff(
            lambda: (_ for _ in ()).throw(TimeoutError()), attempts=4, base_delay=1.0, jitter=0.5, sleep=delays.append
        )
    assert len(delays) == 3
    for delay, nominal in zip(delays, [1.0, 2.0, 4.0], strict=True):
        assert 0.5 * nominal <= delay <= 1.5 * nominal
    assert time.monotonic() - started < 1.0


def test_database_answers_that_will_not_change_are_permanent(postgres_url: str, tmp_path: Path) -> None:
    """A missing database or role, bad credentials, a table that was never created: the database answered,
    and retrying would only delay the failure (an OperationalError is otherwise worth a retry)."""
    import sqlalchemy as sa

    from hf_ingest.jobstore.sql import make_engine

    url = sa.engine.make_url(make_engine(postgres_url).url)
    refusals = []
    for wrong in (url.set(database="no_such_database"), url.set(username="no_such_role")):
        with pytest.raises(sa.exc.OperationalError) as raised:
            make_engine(wrong.render_as_string(hide_password=False)).connect()
        refusals.append(raised.value)
    with pytest.raises(sa.exc.DatabaseError) as raised, make_engine(postgres_url).connect() as conn:
        conn.execute(sa.text("select * from table_never_created"))
    refusals.append(raised.value)
    with pytest.raises(sa.exc.OperationalError) as raised, sa.create_engine(f"sqlite:///{tmp_path}/x.db").connect() as conn:
        conn.execute(sa.text("select * from jobs"))
    refusals.append(raised.value)
    for refusal in refusals:
        assert not is_transient(refusal), refusal
    with pytest.raises(sa.exc.OperationalError) as raised:  # nobody listening: worth a retry
        make_engine("postgresql://u:p@127.0.0.1:1/db").connect()
    assert is_transient(raised.value)
