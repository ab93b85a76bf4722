"""The tests' SeaweedFS helper cleans up after itself: every run of the suite and the bench starts
several, and SeaweedFS writes its local gRPC sockets to /tmp whatever its folders are."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.seaweed_server import SeaweedServer


def test_a_stopped_server_leaves_neither_its_folder_nor_its_sockets_in_tmp() -> None:
    server = SeaweedServer().start()
    try:
        server.create_bucket("cleanup")  # serving: its filer and S3 gateway have opened their sockets
        assert server.socket_files(), "SeaweedFS no longer writes sockets to /tmp: drop the cleanup in stop()"
    finally:
        server.stop()
    assert not server.root.exists()
    assert server.socket_files() == []


def test_a_port_taken_before_the_server_binds_it_is_retried_on_fresh_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen in a full run: the filer's port, picked free, was taken by another socket before SeaweedFS bound
    it; the server exited and every S3 test of the session errored. Now it starts again on fresh ports."""
    import socket

    from tests import seaweed_server

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    real = seaweed_server.free_port
    picks = iter([taken.getsockname()[1]])
    handed_out: list[int] = []

    def free_port() -> int:
        handed_out.append(next(picks, None) or real())
        return handed_out[-1]

    monkeypatch.setattr(seaweed_server, "free_port", free_port)
    server = SeaweedServer()
    try:
        server.start()
        server.create_bucket("retried")
        assert "address already in use" in (server.root / "weed.log").read_text(errors="replace")
        assert taken.getsockname()[1] not in server.ports.values()
    finally:
        server.stop()
        taken.close()
    # the failed attempt's sockets too (it had bound some ports before it found one taken)
    left = [path.name for port in handed_out for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock")]
    assert left == []
