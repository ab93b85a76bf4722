"""Leave a finished command without Python's interpreter teardown.

Tearing down the modules of Prefect, datasets and pyarrow takes ~0.5 s after the work is done and
saves nothing. `exit_after_cleanup(code)` still lets every cleanup that matters run first (Prefect
drains its log and event queues when threads shut down, atexit handlers stop an ephemeral server,
logging flushes), then ends the process with `os._exit`. Import this module before the heavy ones:
its atexit handler must be registered first so that it runs last.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from typing import NoReturn

_exit_code: int | None = None


def _exit_now() -> None:
    if _exit_code is None:  # an exception or a plain sys.exit: leave as Python normally does
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(_exit_code)


atexit.register(_exit_now)


def exit_after_cleanup(code: int) -> NoReturn:
    """Exit with `code` once threads and atexit handlers are done, skipping module teardown."""
    global _exit_code
    _exit_code = code
    sys.exit(code)
