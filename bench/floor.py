"""Prefect's floor: a new process that runs one empty flow against PREFECT_API_URL (import,
flow-run creation, parameter serialization, state changes, heartbeat shutdown, log flush), and
leaves the way `hf-ingest run` does. Usage: python -m bench.floor DATASET; prints JSON."""

from __future__ import annotations

from hf_ingest.fast_exit import exit_after_cleanup  # first, as in the CLI

import asyncio
import json
import sys

from prefect import flow


@flow(name="hf-ingest-floor")
async def empty(dataset: str) -> int:
    """Nothing: what any flow run with a parameter costs before it does work (async, like the flow)."""
    return 0


if __name__ == "__main__":
    print(json.dumps({"images": asyncio.run(empty(sys.argv[1])), "bytes": 0}))
    exit_after_cleanup(0)
