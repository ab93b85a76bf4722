"""A real Hub-API server for the tests and the benchmark: olah serving local git repositories as Hub datasets.

`olah` (a self-hosted HuggingFace mirror) answers the Hub's HTTP API from git repositories under
`mirrors-path/datasets/<owner>/<name>`, offline. In front of it sits `FaultProxy`, which adds what the
real Hub does and olah's local-repo route does not (HTTP ranges, private and gated repositories that
need a token) and can inject network faults. Clients are pointed at the proxy with `HF_ENDPOINT`.

Known olah quirks this harness works around or guards against:
- its local-repo file route ignores `Range` (always the whole file): the proxy slices;
- a binary file of 121-149 bytes breaks its tree listing (it parses such files as LFS pointers),
  so `publish` refuses one with a clear message instead of letting a test fail obscurely;
- offline, it resolves a revision without README.md only from its cache: `publish` adds a README.

Run it by hand to try a Hub id without the internet: `python -m tests.hub_server FOLDER...` serves each
folder as the dataset `local/<folder name>` and prints the HF_ENDPOINT to use.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.fault_proxy import FaultProxy, PrivateRepos, free_port

HUB_TOKEN = "hf_test_token_for_private_repos_0123456789"
_OLAH_LFS_POINTER_SIZES = range(121, 150)


class HubServer:
    """olah on loopback plus a `FaultProxy` in front; `endpoint` is what HF_ENDPOINT should be."""

    def __init__(
        self,
        root: Path | None = None,
        *,
        port: int | None = None,
        private: list[str] | None = None,
        gated: list[str] | None = None,
    ) -> None:
        self.root = Path(root or tempfile.mkdtemp(prefix="hf-ingest-hub-"))
        self.mirrors = self.root / "mirrors"
        (self.mirrors / "datasets").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.proxy = FaultProxy(
            self.port,
            error_style="hub",
            serve_ranges=True,
            private=PrivateRepos(patterns=private or ["*/private-*"], token=HUB_TOKEN, gated=gated or ["*/gated-*"]),
            listen_port=port,
        )

    @property
    def endpoint(self) -> str:
        return self.proxy.url

    def start(self, timeout: float = 60) -> HubServer:
        config = self.root / "olah.toml"
        config.write_text(
            "[basic]\n"
            'host = "127.0.0.1"\n'
            f"port = {self.port}\n"
            f'repos-path = "{self.root / "cache"}"\n'
            f'mirrors-path = ["{self.mirrors}"]\n'
            "metadata-cache-ttl = 0\n"
            "[accessibility]\n"
            "offline = true\n"
        )
        olah = Path(sys.executable).parent / "olah-cli"
        log = (self.root / "olah.log").open("ab")
        self.process = subprocess.Popen(
            [str(olah), "-c", str(config)], cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"olah exited at start-up; see {self.root / 'olah.log'}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/whoami-v2", timeout=2):  # noqa: S310
                    break
            except urllib.error.HTTPError:  # any answer means it is serving
                break
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        else:
            raise RuntimeError(f"olah did not answer within {timeout:.0f} s; see {self.root / 'olah.log'}")
        self.proxy.start()
        return self

    def stop(self) -> None:
        self.proxy.stop()
        if self.process is not None:  # olah runs uvicorn in a child process: stop the whole group
            # at once: its data is thrown away, and on SIGTERM uvicorn waits out the proxy's open connections
            # (15 s at the end of every session)
            for sig, grace in ((signal.SIGKILL, 5.0),):
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + grace
                while time.monotonic() < deadline and _group_alive(self.process.pid):
                    self.process.poll()
                    time.sleep(0.1)
                if not _group_alive(self.process.pid):
                    break
        shutil.rmtree(self.root, ignore_errors=True)

    def publish(self, repo_id: str, folder: Path, message: str = "upload") -> str:
        """Commit `folder`'s files as the new state of dataset repo `repo_id` (branch main); returns the commit sha."""
        _refuse_olah_lfs_lookalikes(folder)
        repo = self.mirrors / "datasets" / repo_id
        if not (repo / ".git").exists():
            repo.mkdir(parents=True, exist_ok=True)
            _git(repo, "init", "-q", "-b", "main")
        for entry in repo.iterdir():
            if entry.name != ".git":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        shutil.copytree(folder, repo, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git"))
        if not (repo / "README.md").exists():
            (repo / "README.md").write_text(f"# {repo_id}\n")
        _git(repo, "add", "-A")
        _git(repo, "-c", "user.name=hf-ingest-tests", "-c", "user.email=tests@hf-ingest.invalid",
             "commit", "-q", "--allow-empty", "-m", message)
        return _git(repo, "rev-parse", "HEAD").strip()

    def env(self) -> dict[str, str]:
        """What a client process needs to use this Hub (set before huggingface_hub is imported): online, whatever
        the caller's shell says (HF_HUB_OFFLINE=1 there would refuse every request to it)."""
        return {
            "HF_ENDPOINT": self.endpoint,
            "HF_HUB_OFFLINE": "0",
            "HF_DATASETS_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_ETAG_TIMEOUT": "30",
            "HF_HUB_DOWNLOAD_TIMEOUT": "30",
        }


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True)
    return result.stdout


def _refuse_olah_lfs_lookalikes(folder: Path) -> None:
    for path in folder.rglob("*"):
        if ".git" not in path.relative_to(folder).parts and path.is_file() and path.stat().st_size in _OLAH_LFS_POINTER_SIZES:
            try:
                path.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(
                    f"{path} is a binary file of {path.stat().st_size} bytes: olah's tree listing fails on binary "
                    "files of 121-149 bytes (it reads them as LFS pointers). Use another size in the test data."
                ) from None


def main(argv: list[str]) -> int:
    """Serve each folder given as the Hub dataset `local/<folder name>` until interrupted (Ctrl-C or SIGTERM:
    both stop the olah servers too; SIGTERM would otherwise end Python without its `finally` and leave them)."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    server = HubServer().start()
    try:
        for folder in map(Path, argv):
            commit = server.publish(f"local/{folder.name}", folder)
            print(f"local/{folder.name} at {commit}", flush=True)
        print(f"HF_ENDPOINT={server.endpoint}  (Ctrl-C stops the server)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    raise SystemExit(main(sys.argv[1:]))
