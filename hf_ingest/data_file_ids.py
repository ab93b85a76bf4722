"""What says a data file is the same as before without reading it: its content id.

On the Hub, the tree listing gives it for free: an LFS file's sha256, any other file's git blob id (one
listing request per folder, cached by the `hf://` filesystem). A local file has no such id; its size and
modification time (nanoseconds) change when it is rewritten in place, and stay when it is only renamed or
copied with its times (`cp -p`, rsync), as a Hub rename keeps the blob id.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hf_ingest.row_sources import Footer
from hf_ingest.sync_plan import DataFile


def hub_content_id(info: dict[str, Any]) -> str:
    lfs = info.get("lfs") or {}
    if lfs.get("sha256"):
        return f"sha256:{lfs['sha256']}"
    if info.get("blob_id"):
        return f"git:{info['blob_id']}"
    raise ValueError(f"the Hub gave no content id for {info.get('name')!r}")


def local_content_id(status: os.stat_result) -> str:
    return f"local:{status.st_size}:{status.st_mtime_ns}"


@dataclass(frozen=True)
class FileIdentity:
    """A data file's name inside the dataset, content id and size, from the listing (nothing read)."""

    path: str  # as the reader opens it
    name: str
    content_id: str
    size: int


def file_identities(paths: Sequence[str], root: str, filesystem: Any | None) -> list[FileIdentity]:
    """The split's data files as the listing describes them (`root`: the repository at the commit, or the
    local folder): one tree request per folder on the Hub, a `stat` per file locally."""
    identities = []
    for path in paths:
        if filesystem is not None:
            info = filesystem.info(path)
            name = path.removeprefix("hf://").removeprefix(root.removeprefix("hf://")).lstrip("/")
            identities.append(FileIdentity(path, name, hub_content_id(info), int(info.get("size") or 0)))
        else:
            status = os.stat(path)
            identities.append(FileIdentity(path, os.path.relpath(path, root), local_content_id(status),
                                           status.st_size))
    return identities


def data_files(identities: Sequence[FileIdentity], footers: Sequence[Footer]) -> tuple[DataFile, ...]:
    """The split's data files in order, each with its rows, the row it starts at, and its schema."""
    files: list[DataFile] = []
    first_row = 0
    for identity, footer in zip(identities, footers, strict=True):
        files.append(DataFile(identity.name, identity.content_id, footer.rows, first_row, footer.schema))
        first_row += footer.rows
    return tuple(files)
