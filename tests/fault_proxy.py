"""An HTTP proxy on loopback that stands between a client and a real server and breaks things on purpose.

It forwards every request unchanged, except where the test's fault plan says to answer an error
(500 InternalError, 503 SlowDown, 429 with Retry-After), to reset the connection before answering,
or to cut a response body half way. It can also stand in for what the real service does and the
test server does not: answer HTTP `Range` requests (olah's local-repo route always sends the whole
file), and refuse a private repository to a client without the right bearer token (as the Hub does);
or for what a real service might do: answer every request `latency_seconds` late (a remote R2), or
answer a refused conditional write (`If-None-Match: *`) with 200, as a store without them would. The S3 tests put it in
front of moto or SeaweedFS, the Hub tests in front of olah.
"""

from __future__ import annotations

import fnmatch
import hashlib
import http.client
import os
import re
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal

Fault = str | None  # "403", "404", "500", "502", "503", "429", "reset", "cut" or None (pass through)
FaultPlan = Callable[[str, str], Fault]  # (method, path) -> fault
ErrorStyle = Literal["s3", "hub"]

_HOP_BY_HOP = frozenset({"transfer-encoding", "connection", "content-length", "keep-alive"})
_ERRORS = {
    "403": (403, "GatedRepo", "Access to this resource is restricted."),
    "404": (404, "EntryNotFound", "Entry not found."),
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "502": (502, "BadGateway", "Bad gateway."),
    "503": (503, "SlowDown", "Please reduce your request rate."),
    "429": (429, "TooManyRequests", "Too many requests, retry later."),
}
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_COMMIT_PATH = re.compile(r"/resolve/[0-9a-f]{40}/")


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up mid-answer (a reader that stopped early) is normal, not worth a traceback."""
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrivateRepos:
    """Repositories a client sees only with `token` (the Hub answers 401 RepositoryNotFound otherwise)."""

    patterns: list[str] = field(default_factory=list)  # "owner/name*" of datasets
    token: str = ""
    gated: list[str] = field(default_factory=list)  # these answer 403 GatedRepo to everyone

    def repo_of(self, path: str) -> str | None:
        match = re.match(r"^/(?:api/)?datasets/([^/]+)/([^/@?]+)", path)
        return f"{match.group(1)}/{match.group(2)}" if match else None

    def refusal(self, path: str, authorization: str | None) -> tuple[int, str, str] | None:
        repo = self.repo_of(path)
        if repo is None:
            return None
        if any(fnmatch.fnmatch(repo, p) for p in self.gated):
            return 403, "GatedRepo", f"Access to dataset {repo} is restricted. You must have access to it."
        if any(fnmatch.fnmatch(repo, p) for p in self.patterns) and authorization != f"Bearer {self.token}":
            return 401, "RepoNotFound", "Repository not found"
        return None


class FaultProxy:
    """Proxy to `upstream_port` on loopback; `plan` decides per request; `faults` records what was injected."""

    def __init__(
        self,
        upstream_port: int,
        *,
        error_style: ErrorStyle = "s3",
        serve_ranges: bool = False,
        private: PrivateRepos | None = None,
        latency_seconds: float = 0.0,
        listen_port: int | None = None,
        ignore_conditional_writes: bool = False,
    ) -> None:
        self.upstream_port = upstream_port
        self.error_style = error_style
        self.serve_ranges = serve_ranges
        self.private = private or PrivateRepos()
        self.latency_seconds = latency_seconds
        self.ignore_conditional_writes = ignore_conditional_writes  # answer as a store without If-None-Match would
        self.plan: FaultPlan = lambda method, path: None
        self.faults: list[tuple[str, str, str]] = []
        self.requests: list[tuple[str, str]] = []
        self.bytes_sent = 0
        self._lock = threading.Lock()
        self._cache_dir = Path(tempfile.mkdtemp(prefix="fault-proxy-cache-"))
        self._immutable_files: dict[str, Path] = {}
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _error(self, status: int, code: str, message: str, extra: dict[str, str] | None = None) -> None:
                if proxy.error_style == "s3":
                    payload = (
                        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                        f"<Message>{message}</Message><RequestId>fault</RequestId></Error>"
                    ).encode()
                    content_type = "application/xml"
                else:
                    payload = ('{"error": "%s"}' % message).encode()
                    content_type = "application/json"
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                if proxy.error_style == "hub":
                    self.send_header("X-Error-Code", code)
                    self.send_header("X-Error-Message", message)
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def _reset(self) -> None:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

            def _handle(self) -> None:
                body = self._body()
                method, path = self.command, self.path
                if proxy.latency_seconds:
                    time.sleep(proxy.latency_seconds)
                with proxy._lock:
                    proxy.requests.append((method, path))
                    fault = proxy.plan(method, path)
                    if fault:
                        proxy.faults.append((method, path, fault))
                if fault == "reset":
                    self._reset()
                    return
                if fault in _ERRORS:
                    status, code, message = _ERRORS[fault]
                    self._error(status, code, message, {"Retry-After": "1"} if status in (429, 503) else None)
                    return
                refusal = proxy.private.refusal(path, self.headers.get("Authorization"))
                if refusal is not None:
                    self._error(*refusal)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                wanted = self.headers.get("Range") if proxy.serve_ranges and method == "GET" else None
                if wanted and _RANGE.match(wanted.strip()):
                    self._serve_range(path, headers, wanted.strip(), cut=fault == "cut")
                    return
                self._forward(method, path, headers, body, cut=fault == "cut")

            def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes, cut: bool) -> None:
                headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=120)
                try:
                    upstream.request(method, path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    if (proxy.ignore_conditional_writes and response.status in (409, 412)
                            and method == "PUT" and "if-none-match" in {k.lower() for k in headers}):
                        # a store that ignores the condition overwrites and says 200 (here the bytes are
                        # the same, content-addressed: nothing is lost by not writing them again)
                        self._send(200, [("ETag", '"overwritten"')], b"", cut)
                        return
                    self._send(response.status, response.getheaders(), data, cut)
                finally:
                    upstream.close()

            def _send(self, status: int, headers: list[tuple[str, str]], data: bytes, cut: bool) -> None:
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in _HOP_BY_HOP:
                        self.send_header(key, value)
                if self.command == "HEAD":  # a HEAD answer carries the size of what a GET would send
                    length = next((v for k, v in headers if k.lower() == "content-length"), "0")
                    self.send_header("Content-Length", length)
                    self.end_headers()
                    return
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if cut:  # half the body, then the connection dies: a stream broken mid-read
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self._reset()
                    return
                self.wfile.write(data)
                with proxy._lock:
                    proxy.bytes_sent += len(data)

            def _serve_range(self, path: str, headers: dict[str, str], wanted: str, cut: bool) -> None:
                """The Hub answers ranges; olah's local repos do not: fetch the whole file once, then slice."""
                cached = proxy._whole_file(path, headers)
                if isinstance(cached, tuple):  # the upstream refused: pass its answer on
                    status, response_headers, data = cached
                    self._send(status, response_headers, data, cut)
                    return
                size = cached.stat().st_size
                match = _RANGE.match(wanted)
                assert match is not None
                first, last = match.groups()
                if first == "":  # suffix range: the last N bytes
                    start, end = max(0, size - int(last)), size - 1
                else:
                    start, end = int(first), min(int(last) if last else size - 1, size - 1)
                if start >= size or start > end:
                    self._error(416, "RangeNotSatisfiable", "range not satisfiable", {"Content-Range": f"bytes */{size}"})
                    return
                with cached.open("rb") as handle:
                    handle.seek(start)
                    data = handle.read(end - start + 1)
                self._send(
                    206,
                    [("Content-Range", f"bytes {start}-{end}/{size}"), ("Accept-Ranges", "bytes"),
                     ("Content-Type", "application/octet-stream")],
                    data,
                    cut,
                )

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self.server = _Server(("127.0.0.1", listen_port or free_port()), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _whole_file(self, path: str, headers: dict[str, str]) -> Path | tuple[int, list[tuple[str, str]], bytes]:
        """The upstream's whole answer for `path`, on disk, keyed by the file's ETag (a new commit is a new file)."""
        immutable = _COMMIT_PATH.search(path) is not None  # /resolve/<sha>/...: the file never changes
        with self._lock:
            known = self._immutable_files.get(path) if immutable else None
        if known is not None:
            return known
        upstream = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=600)
        try:
            upstream.request("HEAD", path, headers={**headers, "Content-Length": "0"})
            head = upstream.getresponse()
            head.read()
            if head.status != 200:
                return head.status, head.getheaders(), b""
            etag = head.getheader("ETag") or head.getheader("X-Linked-Etag") or ""
            target = self._cache_dir / hashlib.sha256(f"{path}\n{etag}".encode()).hexdigest()
            if etag and target.exists():
                return self._remember(path, target, immutable)
            upstream.request("GET", path, headers={**headers, "Content-Length": "0"})
            response = upstream.getresponse()
            if response.status != 200:
                return response.status, response.getheaders(), response.read()
            partial = target.with_suffix(f".{threading.get_ident()}.part")
            with partial.open("wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
            os.replace(partial, target)
            return self._remember(path, target, immutable)
        finally:
            upstream.close()

    def _remember(self, path: str, target: Path, immutable: bool) -> Path:
        if immutable:  # olah hashes a whole file to answer a HEAD (seconds for a large one): ask once
            with self._lock:
                self._immutable_files[path] = target
        return target

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        import shutil

        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self._cache_dir, ignore_errors=True)


def every_nth(n: int, faults: list[str], methods: tuple[str, ...] = ("PUT",)) -> FaultPlan:
    """Inject `faults` in turn on every n-th request of `methods` (bursts that retries must absorb)."""
    counter = {"seen": 0, "next": 0}

    def plan(method: str, path: str) -> Fault:
        if method not in methods:
            return None
        counter["seen"] += 1
        if counter["seen"] % n:
            return None
        fault = faults[counter["next"] % len(faults)]
        counter["next"] += 1
        return fault

    return plan
