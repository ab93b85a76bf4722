"""What says a data file is the same as before without reading it: its content id.

On the Hub, the tree listing gives it for free: an LFS file's sha256, any other file's git blob id (one
listing request per folder, cached by the `hf://` filesystem). A local file has no such id; its size and
modification time (nanoseconds) change when it is rewritten in place, and stay when it is only renamed or
copied with its times (`cp -p`, rsync), as a Hub rename keeps the blob id.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from hf_ingest.sync_plan import DataFile


def hub_content_id(info: dict[str, Any]) -> str:
    lfs = info.get("lfs") or {}
    if lfs.get("sha256"):
        return f"sha256:{lfs['sha256']}"
    if info.get("blob_id"):
        return f"git:{info['blob_id']}"
    raise ValueError(f"the Hub gave no content id for {info.get('name')!r}")


def local_content_id(path: str) -> str:
    status = os.stat(path)
    return f"local:{status.st_size}:{status.st_mtime_ns}"


def data_files(paths: Sequence[str], row_counts: Sequence[int], root: str, filesystem: Any | None) -> tuple[DataFile, ...]:
    """The split's data files in order, each with its name inside the dataset (`root`: the repository at the
    commit, or the local folder), content id, rows and the row it starts at."""
    files: list[DataFile] = []
    first_row = 0
    for path, rows in zip(paths, row_counts, strict=True):
        if filesystem is not None:
            content_id = hub_content_id(filesystem.info(path))
            name = path.removeprefix("hf://").removeprefix(root.removeprefix("hf://")).lstrip("/")
        else:
            content_id = local_content_id(path)
            name = os.path.relpath(path, root)
        files.append(DataFile(name, content_id, rows, first_row))
        first_row += rows
    return tuple(files)
