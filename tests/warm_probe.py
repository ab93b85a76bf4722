"""What a warm engine's child runs in tests/test_warm_engine.py in place of Prefect's engine: it reports the
process it finds itself in, then does what its PREFECT_PROBE_* variables say (Prefect's variables are the
only ones a run's environment may change)."""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from types import FrameType


def _stopped(number: int, _frame: FrameType | None) -> None:
    os.write(1, f"signal {number}\n".encode())  # not print: the signal may come while stdout is mid-write
    sys.exit(int(os.environ.get("PREFECT_PROBE_TERM_CODE", "7")))


signal.signal(signal.SIGTERM, _stopped)
print(json.dumps({
    "argv": sys.argv[1:], "cwd": os.getcwd(), "pid": os.getpid(), "ppid": os.getppid(), "sid": os.getsid(0),
    "variable": os.environ.get("PREFECT_PROBE_VARIABLE"), "random": random.random(),
    "imported": "datasets" in sys.modules and "prefect.flow_engine" in sys.modules,
    "stdin": sys.stdin.readline().strip() if os.environ.get("PREFECT_PROBE_READ") else None,
}), flush=True)
print("probe's stderr", file=sys.stderr, flush=True)
time.sleep(float(os.environ.get("PREFECT_PROBE_SLEEP", "0")))
sys.exit(int(os.environ.get("PREFECT_PROBE_CODE", "0")))
