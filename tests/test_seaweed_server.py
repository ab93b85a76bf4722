"""The tests' SeaweedFS helper cleans up after itself: every run of the suite and the bench starts
several, and SeaweedFS writes its local gRPC sockets to /tmp whatever its folders are."""

from __future__ import annotations

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
