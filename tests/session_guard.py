"""What makes the suite hermetic and stoppable: its own environment, whatever the caller's shell holds,
and no server of its own left running however it ends.

- `clean_environment()` drops every variable that changes what hf-ingest, Prefect, HuggingFace or the
  stack do (HF_*, PREFECT_*, AWS_*, SUPABASE_*, every setting's name, ...): a shell with
  HF_HUB_OFFLINE=1 or DATABASE_URL=... in it runs the same suite. The tests set what they need.
- `become_subreaper()` makes the pytest process the reaper of its orphans (Linux's
  PR_SET_CHILD_SUBREAPER): a server that daemonizes (PostgreSQL's postmaster, started by pg_ctl) or
  whose launcher exited (`make up`'s processes) stays a descendant of the suite, so the suite can
  find and stop it without knowing its name.
- `install_stop_handlers()`: SIGTERM stops the suite as Ctrl-C does (KeyboardInterrupt: pytest runs
  the fixtures' teardown, which stops the servers); a second SIGTERM or Ctrl-C during that teardown
  stops every descendant at once and exits.
- `use_scratch_dir()`: every temporary folder of the session (servers' data, Prefect homes, the stacks'
  PostgreSQL, pytest's tmp_path) is made in one folder per session, through TMPDIR, so its children's
  go there too.
- `finish()` is the last step of every session: whatever a teardown left running is stopped; the
  session that made the scratch folder removes it as it exits (an interrupted teardown left ~80 MB in
  /tmp a run).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import FrameType

import psutil

# Variables the suite never takes from the caller: they would change where data goes, which Hub is
# asked, how Prefect behaves, or what the stack starts.
FOREIGN_PREFIXES = ("HF_", "HUGGINGFACE_", "PREFECT_", "AWS_", "SUPABASE_", "S3_", "BENCH_")
KEPT = frozenset({"HF_INGEST_FORBID_SKIPS", "HF_INGEST_TEST_SESSION", "HF_INGEST_STOP_PROBE_READY"})
SCRATCH_ROOT = "/tmp"  # not the caller's TMPDIR: the embedded PostgreSQL's own user must reach its data
EXTRA_NAMES = frozenset({
    "WORKER_LIMIT", "IMPORT_CONCURRENCY", "SHARD_CONCURRENCY", "DATABASE_WRITE_CONCURRENCY",
    "OBJECT_WRITE_CONCURRENCY", "TRIGGER_PORT", "DO_NOT_TRACK", "XDG_RUNTIME_DIR",
})
PR_SET_CHILD_SUBREAPER = 36


def setting_names() -> set[str]:
    """Every environment variable the settings object reads."""
    from blocks.settings import Settings

    return {name.upper() for name in Settings.model_fields}


def clean_environment(environ: dict[str, str] | None = None) -> list[str]:
    """Remove the caller's variables that would change the suite; returns their names (values never shown)."""
    environ = os.environ if environ is None else environ  # type: ignore[assignment]
    foreign = setting_names() | EXTRA_NAMES
    dropped = [name for name in list(environ)
               if name not in KEPT and (name.startswith(FOREIGN_PREFIXES) or name in foreign)]
    for name in dropped:
        del environ[name]
    return dropped


def scratch_dir(session: str) -> Path:
    """The session's folder for everything temporary."""
    return Path(SCRATCH_ROOT) / f"hf-ingest-test-{session}"


_owned_scratch: str | None = None


def use_scratch_dir(session: str) -> str:
    """Make the session's scratch folder the temporary folder of this process and its children. Mode 0755:
    the embedded PostgreSQL runs as its own system user, which must reach its data folder inside."""
    path = str(scratch_dir(session))
    if os.environ.get("PYTEST_XDIST_WORKER") and not os.path.isdir(path):
        # an xdist worker started after its session ended and removed the folder (xdist replaces a worker
        # that a stop signal ended, while its controller exits): it would only make the folder again
        os._exit(0)
    os.makedirs(path, mode=0o755, exist_ok=True)
    os.environ["TMPDIR"] = path
    tempfile.tempdir = None  # read TMPDIR again
    return path


def own_scratch_dir() -> None:
    """This process (the session's pytest, or its xdist controller) removes the scratch folder as it exits:
    last of its exit handlers (registered first; Prefect's test harness removes its own folder in one), or
    in `finish` after a stop signal, which exits without them."""
    global _owned_scratch
    _owned_scratch = os.environ["TMPDIR"]
    atexit.register(remove_scratch_dir)


def remove_scratch_dir() -> None:
    if _owned_scratch is not None:
        shutil.rmtree(_owned_scratch, ignore_errors=True)


def become_subreaper() -> bool:
    """Orphans of our children are re-parented to this process instead of init (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def descendants() -> list[psutil.Process]:
    """Every live process below this one (orphans included, once this process is a subreaper)."""
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return []
    return [p for p in children if _alive(p)]


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def stop_processes(processes: Iterable[psutil.Process], grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL what is still there after `grace` seconds; then remove the sockets they listened
    on in /tmp itself (SeaweedFS's local gRPC sockets: a killed server leaves them)."""
    victims = [p for p in processes if _alive(p)]
    sockets = socket_files(victims)
    for process in victims:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in victims):
        _reap()
        time.sleep(0.05)
    for process in victims:
        if _alive(process):
            with contextlib.suppress(psutil.Error):
                process.kill()
    _reap()
    for path in sockets:
        path.unlink(missing_ok=True)


def socket_files(processes: Iterable[psutil.Process]) -> list[Path]:
    """The Unix sockets these processes listen on directly in the scratch root (not in a session's folder)."""
    found = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            listing = getattr(process, "net_connections", None) or process.connections  # psutil < 6: connections
            for connection in listing(kind="unix"):
                if connection.laddr and Path(connection.laddr).parent == Path(SCRATCH_ROOT):
                    found.append(Path(connection.laddr))
    return found


def stop_descendants(grace: float = 3.0) -> None:
    stop_processes(descendants(), grace)


def finish(exit_code: int) -> None:
    """The session's last step: stop what a teardown left running; after a stop signal, exit now. (At a
    normal exit Prefect's clients drain their log and event queues towards servers that are gone, with
    timeouts: 15 s and more after a signal, for nothing.)"""
    stop_descendants()
    if _stopping:
        remove_scratch_dir()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)


def _reap() -> None:
    """Collect the exit status of orphans re-parented to us (Popen objects reap their own children)."""
    for process in psutil.Process().children():
        with contextlib.suppress(psutil.Error, ChildProcessError):
            if process.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(process.pid, os.WNOHANG)


_stopping = False
_forward_to_children = False  # an xdist controller: its workers (its children) unwind their own fixtures


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    """First signal: unwind as Ctrl-C does (fixtures stop their servers; an xdist controller passes the signal
    to its workers first); second: stop everything now."""
    global _stopping
    if not _stopping:
        _stopping = True
        if _forward_to_children:
            for child in psutil.Process().children():
                with contextlib.suppress(psutil.Error):
                    child.send_signal(signum)
        raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")
    stop_descendants(grace=1.0)
    remove_scratch_dir()
    os._exit(128 + signum)


def install_stop_handlers(forward_to_children: bool = False) -> None:
    """`forward_to_children`: this process is pytest-xdist's controller, whose children are its workers."""
    global _forward_to_children
    _forward_to_children = forward_to_children
    signal.signal(signal.SIGTERM, _on_stop_signal)
    signal.signal(signal.SIGINT, _on_stop_signal)
