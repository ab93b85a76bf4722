"""A warm engine: one process per worker that has already imported what every flow run needs, and forks a
child for each run, so a run's process starts in milliseconds instead of ~2 s of imports.

A new flow-run process spends ~2 s of CPU importing Prefect, `datasets`, pyarrow and pandas before it does
anything (`flows.engine`). A sharded import pays that twice on the cores its shards are already using, and
every import waits for it before it is Running. `hf-ingest worker` starts this server beside Prefect's
process worker; the deployments' command (`python -m flows.engine`) asks it for a forked child and only
relays: its standard streams, working directory and environment go to the child, the signals it gets go to
the child, and it exits as the child does. So the worker sees the same process it always did.

What keeps a fork the same as a fresh process:
  - the imports are made with nothing running (no thread of Python's, no event loop, no client, no
    settings read): only library code's module state is shared;
  - a child takes the run's environment whole; one that differs from the server's in anything but Prefect's
    own variables (`PREFECT_*`, read again in the child) is refused, and the command imports for itself
    (a library may have read, say, `HF_ENDPOINT` when it was imported);
  - the child has a session of its own: signals reach it only through its command (once), and it ends itself
    if its command is killed (SIGKILL cannot be relayed);
  - it exits as Python does (threads joined, atexit handlers run, streams flushed), without the teardown.
Only the user who started the worker can ask (the socket's folder is private; the peer's uid is checked).
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

SOCKET_ENV = "HF_INGEST_WARM_ENGINE"  # where a worker's warm engine listens, for the runs it starts
RUN_SPECIFIC = "PREFECT_"  # Prefect's settings and per-run variables: re-read in the child
RELAYED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
MAX_REQUEST = 4 << 20


def differing_variables(ours: Mapping[str, str], theirs: Mapping[str, str]) -> list[str]:
    """The variables, other than Prefect's, whose values differ: a child must not run with imports made
    under another environment."""
    names = {n for n in (*ours, *theirs) if not n.startswith(RUN_SPECIFIC)}
    return sorted(n for n in names if ours.get(n) != theirs.get(n))


# ---- the command's side (`python -m flows.engine`): import nothing heavy ---------------------------------


def run_forked(path: str) -> int | None:
    """Run this command's flow run in a child of the warm engine at `path`; its exit code (negative: the
    signal that ended it), or None if there is no warm engine to ask or it refused (the caller runs it)."""
    child: int | None = None
    early: list[int] = []  # signals that came before the child's pid: relayed once it is known

    def relay(received: int, _frame: object) -> None:
        if child is None:
            early.append(received)
        else:
            _relay(child, received)

    previous = {number: signal.signal(number, relay) for number in RELAYED}
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        request = json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ),
                              "python": [sys.prefix, sys.version]}).encode()
        payload = struct.pack("!I", len(request)) + request
        sent = socket.send_fds(conn, [payload], _standard_streams())
        conn.sendall(payload[sent:])
        answer = _read_line(conn)
    except OSError:
        answer = None
    if answer is None or "pid" not in answer:
        if answer is not None:
            print(f"hf-ingest: warm engine not used ({answer.get('refused', 'no answer')})", file=sys.stderr,
                  flush=True)
        conn.close()
        for number, handler in previous.items():
            signal.signal(number, handler)
        for number in early:  # as if they had come to this process alone
            os.kill(os.getpid(), number)
        return None
    child = int(answer["pid"])
    for number in early:
        _relay(child, number)
    status = _read_line(conn)
    if status is not None:
        return int(status["exit"])
    # the warm engine went away (its child holds the connection until it ends, so that is now, or soon)
    while _running(child):
        time.sleep(0.5)
    return 1


def exit_like(code: int) -> NoReturn:
    """Leave with `code`, or killed by signal -`code`, without Python's teardown (streams flushed first)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if code < 0:
        _die_by(-code)
    os._exit(code if code >= 0 else 128 - code)


def _die_by(number: int) -> None:
    """End this process with signal `number`, its default action (as the child ended)."""
    if number not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(number, signal.SIG_DFL)
    os.kill(os.getpid(), number)
    time.sleep(1)


def _standard_streams() -> list[int]:
    """This process's stdin, stdout and stderr (/dev/null for any it was started without)."""
    streams = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            streams.append(fd)
        except OSError:
            streams.append(os.open(os.devnull, os.O_RDWR))
    return streams


def _running(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _relay(child: int, received: int) -> None:
    try:
        os.kill(child, received)
    except ProcessLookupError:
        pass


def _send_line(conn: socket.socket, message: dict[str, Any]) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def _read_line(conn: socket.socket) -> dict[str, Any] | None:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            return None
        data += chunk
    answer: dict[str, Any] = json.loads(data)
    return answer


# ---- the server's side (started by `hf-ingest worker`) ----------------------------------------------------


def serve(path: str, prepare: Callable[[], None], module: str = "prefect.engine") -> None:
    """Import what runs need (`prepare`), then fork a child that runs `module` as `__main__` for each request
    on the socket `path`, and tell each requester how its child ended. Stops taking requests on SIGTERM or
    SIGINT, or when the process that started it (the worker) is gone, and ends once its children have."""
    prepare()
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    previous = {n: signal.signal(n, lambda *_: None) for n in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT)}
    signal.set_wakeup_fd(wake_write)
    children: dict[int, socket.socket] = {}
    stopping = False
    try:
        Path(path).unlink(missing_ok=True)
        listener.bind(path)
        listener.listen(64)
        selector = selectors.DefaultSelector()
        selector.register(listener, selectors.EVENT_READ, "request")
        selector.register(wake_read, selectors.EVENT_READ, "signal")
        print(f"hf-ingest: warm engine ready at {path} (pid {os.getpid()})", file=sys.stderr, flush=True)
        while not stopping or children:
            for key, _ in selector.select(timeout=1.0):
                if key.data == "request":
                    conn, _ = listener.accept()
                    if _same_user(conn):
                        pid = os.fork()
                        if pid == 0:
                            _child(conn, module, [listener, wake_read, wake_write, selector, *children.values()])
                        children[pid] = conn
                    else:
                        conn.close()
                else:
                    stopping |= _drain(wake_read)
            _reap(children)
            if not stopping and os.getppid() != parent:  # the worker is gone: no more runs will come
                stopping = True
            if stopping and listener.fileno() != -1:
                selector.unregister(listener)
                listener.close()
                Path(path).unlink(missing_ok=True)
    finally:
        signal.set_wakeup_fd(-1)
        for number, handler in previous.items():
            signal.signal(number, handler)
        listener.close()
        Path(path).unlink(missing_ok=True)
        try:
            Path(path).parent.rmdir()  # its private folder, if nothing else is in it
        except OSError:
            pass


def _same_user(conn: socket.socket) -> bool:
    if not hasattr(socket, "SO_PEERCRED"):  # not Linux: the socket's private folder is the check
        return True
    _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid == os.getuid()


def _drain(wake_read: int) -> bool:
    """Whether a stop signal came (the pipe holds one byte per signal's number)."""
    try:
        received = os.read(wake_read, 4096)
    except BlockingIOError:
        return False
    return any(n in (signal.SIGTERM, signal.SIGINT) for n in received)


def _reap(children: dict[int, socket.socket]) -> None:
    """Tell each requester whose child ended how it ended."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is not None:
            try:
                _send_line(conn, {"exit": os.waitstatus_to_exitcode(status)})
            except OSError:
                pass  # its command is gone
            conn.close()


def _child(conn: socket.socket, module: str, inherited: list[Any]) -> NoReturn:
    """In the forked child: become the requester's run, or say why not; never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for number in (signal.SIGCHLD, *RELAYED):
            signal.signal(number, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a fresh interpreter
        for thing in inherited:  # the server's: its socket, signal pipe and the other runs' connections
            thing.close() if hasattr(thing, "close") else os.close(thing)
        request, fds = _read_request(conn)
        refused = _refusal(request)
        if refused:
            _send_line(conn, {"refused": refused})
            os._exit(0)
        os.setsid()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = list(request["argv"])
        _fresh_process_state()
        _send_line(conn, {"pid": os.getpid()})
        print(f"hf-ingest: flow run {os.environ.get('PREFECT__FLOW_RUN_ID', '-')} forked from the warm engine "
              f"(pid {os.getpid()})", file=sys.stderr, flush=True)
        threading.Thread(target=_end_with_requester, args=(conn,), name="warm-engine-requester", daemon=True).start()
        code = _run_main(module)
    except BaseException:  # noqa: BLE001 - a child never returns into the server's loop
        import traceback

        traceback.print_exc()
    _exit_as_python_does(code)


def _refusal(request: dict[str, Any]) -> str | None:
    """Why this process cannot become the requester's run: another interpreter, folder or environment."""
    if request["python"] != [sys.prefix, sys.version]:
        return f"another Python ({request['python'][0]}, not {sys.prefix})"
    if Path(request["cwd"]).resolve() != Path.cwd().resolve():
        return f"another folder ({request['cwd']}, not {Path.cwd()})"
    differing = differing_variables(os.environ, request["env"])
    if differing:
        return f"the environment differs in {', '.join(differing[:5])}"
    return None


def _read_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    message, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST, 3)
    while len(message) < 4:
        chunk = conn.recv(4)
        if not chunk:
            raise ConnectionError("request cut short")
        message += chunk
    size = struct.unpack("!I", message[:4])[0]
    data = message[4:]
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("request cut short")
        data += chunk
    if len(fds) != 3:
        raise ConnectionError("the request did not pass its standard streams")
    return json.loads(data), fds


def _fresh_process_state() -> None:
    """What a fresh interpreter would have: its own random state, Prefect's settings and logging read from
    the run's environment."""
    import random

    random.seed()
    import logging

    import prefect.context
    import prefect.logging.configuration
    from prefect.settings import PREFECT_LOGGING_EXTRA_LOGGERS

    for name in PREFECT_LOGGING_EXTRA_LOGGERS.value():  # set up again below, from the run's environment
        logging.getLogger(name).handlers.clear()
    prefect.context.refresh_global_settings_context()
    prefect.logging.configuration.setup_logging(incremental=False)


def _run_main(module: str) -> int:
    import runpy

    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        print(exit_.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return -signal.SIGINT
    return 0


def _end_with_requester(conn: socket.socket) -> None:
    """The requester (the worker's process for this run) is gone, killed: so is this run, as it would be."""
    signal.pthread_sigmask(signal.SIG_BLOCK, RELAYED)  # the run's signals are for its own threads
    try:
        while conn.recv(1):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGKILL)


def _exit_as_python_does(code: int) -> NoReturn:
    """Join threads, run atexit handlers, then exit as `exit_like` does."""
    import atexit

    try:
        threading._shutdown()  # type: ignore[attr-defined]  # what the interpreter does first at exit
    except BaseException:  # noqa: BLE001
        pass
    atexit._run_exitfuncs()
    exit_like(code)


def main() -> None:
    """`python -m flows.warm_engine [MODULE]`: serve at $HF_INGEST_WARM_ENGINE; children run MODULE (default
    Prefect's engine; the tests give a probe)."""
    from flows.engine import DATABASE_DRIVERS, import_quietly

    serve(os.environ[SOCKET_ENV], lambda: import_quietly(DATABASE_DRIVERS),
          sys.argv[1] if len(sys.argv) > 1 else "prefect.engine")


if __name__ == "__main__":
    main()
