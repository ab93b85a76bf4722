"""The warm engine (flows/warm_engine.py), with real processes: a server that made the flow runs' imports and
forks a child per request, and the deployments' command (`python -m flows.engine`) that asks it. The child
is the command's run in all that the worker can see: streams, arguments, folder, environment, signals and
exit; anything it cannot be the same in, the command does itself."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from flows.warm_engine import SOCKET_ENV, differing_variables

CHECKOUT = Path(__file__).resolve().parents[1]


def test_only_variables_other_than_prefects_must_be_the_same() -> None:
    ours = {"HF_ENDPOINT": "http://hub", "PATH": "/bin", "PREFECT_API_URL": "http://a"}
    assert differing_variables(ours, {**ours, "PREFECT_API_URL": "http://b", "PREFECT__FLOW_RUN_ID": "1"}) == []
    assert differing_variables(ours, {**ours, "HF_ENDPOINT": "http://mirror", "EXTRA": "1"}) == ["EXTRA", "HF_ENDPOINT"]
    assert differing_variables(ours, {"PATH": "/bin"}) == ["HF_ENDPOINT"]


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], subprocess.Popen[bytes]]]:
    """A warm engine whose children run tests/warm_probe.py, and the environment its requests must have."""
    env, server = _start_warm_engine(tmp_path_factory.mktemp("warm"))
    yield env, server
    server.terminate()
    server.wait(10)


def _start_warm_engine(folder: Path) -> tuple[dict[str, str], subprocess.Popen[bytes]]:
    env = {**os.environ, SOCKET_ENV: str(_socket_folder(folder) / "engine.sock")}
    server = subprocess.Popen([sys.executable, "-m", "flows.warm_engine", "tests.warm_probe"], cwd=CHECKOUT, env=env,
                              stderr=subprocess.PIPE)
    assert server.stderr is not None
    ready = server.stderr.readline().decode()  # after its imports
    assert "warm engine ready" in ready, ready
    return env, server


def _socket_folder(base: Path) -> Path:
    """A new folder for a socket under `base`, or else under the session's scratch folder (or /tmp) if `base` is
    too long for a socket's path (~100 characters)."""
    short = next(p for p in (base, Path(tempfile.gettempdir()), Path("/tmp")) if len(str(p)) <= 80)
    return Path(tempfile.mkdtemp(prefix="warm-", dir=short))


def _command(env: dict[str, str], *args: str, **variables: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "flows.engine", *args], cwd=CHECKOUT, env={**env, **variables},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _report(command: subprocess.Popen[str]) -> dict[str, object]:
    assert command.stdout is not None
    line = command.stdout.readline()
    assert line, command.stderr.read() if command.stderr else ""
    report: dict[str, object] = json.loads(line)
    return report


def test_the_run_is_a_child_of_the_warm_engine_with_the_commands_streams_arguments_folder_and_exit(
        warm: tuple[dict[str, str], subprocess.Popen[bytes]]) -> None:
    env, server = warm
    runs = []
    for code in ("3", "0"):
        command = _command(env, "one", "two", PREFECT_PROBE_CODE=code, PREFECT_PROBE_VARIABLE="run's own",
                           PREFECT_PROBE_READ="1")
        out, err = command.communicate("from the command's stdin\n", timeout=60)
        report = json.loads(out.splitlines()[0])
        runs.append(report)
        assert command.returncode == int(code), err
        assert report["ppid"] == server.pid and report["pid"] != command.pid  # forked, not imported again
        assert report["sid"] == report["pid"]  # its own session: signals reach it through the command only
        assert report["imported"] is True  # the server's imports
        assert report["argv"] == ["one", "two"] and report["cwd"] == str(CHECKOUT)
        assert report["variable"] == "run's own"  # Prefect's variables are the run's, not the server's
        assert report["stdin"] == "from the command's stdin"
        assert "probe's stderr" in err and "forked from the warm engine" in err
    assert runs[0]["random"] != runs[1]["random"]  # each child seeds its own random state


def test_a_run_whose_environment_differs_is_refused_and_the_command_imports_and_runs_it_itself(
        warm: tuple[dict[str, str], subprocess.Popen[bytes]]) -> None:
    env, _ = warm
    command = _command(env, HF_ENDPOINT="http://another-hub.example")
    out, err = command.communicate(timeout=120)
    assert "warm engine not used (the environment differs in HF_ENDPOINT)" in err
    assert out == ""  # no probe ran: the command ran Prefect's engine itself, which wants a flow run id
    assert "Invalid flow run id" in err and command.returncode == 1


def test_without_a_warm_engine_the_command_runs_prefects_engine_itself(tmp_path: Path) -> None:
    command = _command({**os.environ, SOCKET_ENV: str(tmp_path / "none.sock")})
    out, err = command.communicate(timeout=120)
    assert out == "" and "Invalid flow run id" in err and command.returncode == 1


def test_a_signal_to_the_command_reaches_the_run_once_and_the_command_ends_as_the_run_does(
        warm: tuple[dict[str, str], subprocess.Popen[bytes]]) -> None:
    env, _ = warm
    command = _command(env, PREFECT_PROBE_SLEEP="60", PREFECT_PROBE_TERM_CODE="9")
    _report(command)
    command.send_signal(signal.SIGTERM)
    out, err = command.communicate(timeout=30)
    assert out.splitlines() == ["signal 15"] and command.returncode == 9, (out, command.returncode, err)


def test_a_killed_command_takes_its_run_with_it(warm: tuple[dict[str, str], subprocess.Popen[bytes]]) -> None:
    env, _ = warm
    command = _command(env, PREFECT_PROBE_SLEEP="60")
    child = int(_report(command)["pid"])  # type: ignore[call-overload]
    command.kill()
    command.wait(10)
    deadline = time.monotonic() + 10
    while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the run outlived its killed command"
        time.sleep(0.1)


def test_a_run_killed_by_a_signal_ends_its_command_by_the_same_signal(
        warm: tuple[dict[str, str], subprocess.Popen[bytes]]) -> None:
    env, _ = warm
    command = _command(env, PREFECT_PROBE_SLEEP="60")
    os.kill(int(_report(command)["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
    assert command.wait(30) == -signal.SIGKILL  # as the worker sees an OOM-killed run


def test_the_warm_engine_ends_with_the_process_that_started_it_and_leaves_no_socket(tmp_path: Path) -> None:
    """A worker killed outright runs no cleanup: its warm engine notices and goes (its folder with it)."""
    folder = _socket_folder(tmp_path)
    socket_path = folder / "engine.sock"
    starter = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        f"server = subprocess.Popen([sys.executable, '-m', 'flows.warm_engine', 'tests.warm_probe'])\n"
        "print(server.pid, flush=True)\n"
        "time.sleep(300)\n")], cwd=CHECKOUT, env={**os.environ, SOCKET_ENV: str(socket_path)}, stdout=subprocess.PIPE,
        text=True)
    assert starter.stdout is not None
    server = psutil.Process(int(starter.stdout.readline()))
    deadline = time.monotonic() + 60
    while not socket_path.exists():
        assert time.monotonic() < deadline and server.is_running()
        time.sleep(0.1)
    starter.kill()
    starter.wait(10)
    gone, _ = psutil.wait_procs([server], timeout=10)
    assert gone, "the warm engine outlived the process that started it"
    assert not socket_path.exists() and not folder.exists()


def test_a_run_outlives_its_killed_warm_engine_and_its_command_waits_for_it(tmp_path: Path) -> None:
    """The warm engine is only where the run was forked from: killed, it takes no run with it, and each command
    still ends when its run does (with 1: the run's own code went with the engine)."""
    env, server = _start_warm_engine(tmp_path)
    command = _command(env, PREFECT_PROBE_SLEEP="3")
    child = int(_report(command)["pid"])  # type: ignore[call-overload]
    server.kill()
    server.wait(10)
    shutil.rmtree(Path(env[SOCKET_ENV]).parent)  # what a killed warm engine leaves
    assert psutil.pid_exists(child) and command.poll() is None
    assert command.wait(30) == 1
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
