"""Reading the files that path-only rows name, strictly inside the dataset being imported.

Dataset content is untrusted input. A row of an `imagefolder` dataset (or a parquet row with only a
`path`) names a file; read blindly, `/dev/zero` exhausts the worker's memory and `/etc/...`, another
bucket or an internal URL would be published as an image. So a path is read only when it lies inside
the dataset: its Hub repository at the commit being imported, or its local folder (after `..` and
symlinks are resolved). Anything else is `outside_dataset`, never opened. Every read is capped at
`max_bytes`: a larger file is `too_large`, and not read at all.
"""

from __future__ import annotations

import os
import posixpath
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hf_ingest.data_file_ids import hub_content_id, local_content_id
from hf_ingest.images import InvalidImage, InvalidReason


@dataclass(frozen=True)
class FileRef:
    """A file inside the dataset, with its real size (what the reader counts towards a batch's bytes) and its
    content id from the listing (what a sync compares, `hf_ingest.data_file_ids`)."""

    location: str
    size: int
    content_id: str = ""


class DatasetFiles(Protocol):
    root: str  # the local folder (resolved), or `hf://datasets/<repo>@<commit>`

    def locate(self, path: str) -> FileRef:
        """The file `path` names, if it lies inside the dataset; `InvalidImage` (outside_dataset, missing_file) if not."""
        ...

    def read(self, ref: FileRef, max_bytes: int) -> bytes:
        """The file's bytes; `InvalidImage` (too_large, missing_file) instead of reading more than `max_bytes`."""
        ...


def _too_large(ref: FileRef, max_bytes: int) -> InvalidImage:
    return InvalidImage(InvalidReason.TOO_LARGE, f"{ref.size} bytes exceeds MAX_IMAGE_BYTES={max_bytes}")


def _outside(path: str) -> InvalidImage:
    return InvalidImage(InvalidReason.OUTSIDE_DATASET, f"{path[:200]!r} is not inside the dataset")


class LocalDatasetFiles:
    """Files of a dataset folder on this machine."""

    def __init__(self, root: Path) -> None:
        self.root = os.path.realpath(root)

    def locate(self, path: str) -> FileRef:
        if "://" in path or "::" in path or "\x00" in path:
            raise _outside(path)
        candidate = path if os.path.isabs(path) else os.path.join(self.root, path)
        resolved = os.path.realpath(candidate)  # follows symlinks, collapses '..'
        if os.path.commonpath([self.root, resolved]) != self.root or resolved == self.root:
            raise _outside(path)
        try:
            info = os.stat(resolved)
        except (FileNotFoundError, NotADirectoryError):
            raise InvalidImage(InvalidReason.MISSING_FILE, f"{path[:200]!r} does not exist") from None
        if not stat.S_ISREG(info.st_mode):  # a FIFO or device inside the folder: never opened
            raise InvalidImage(InvalidReason.NOT_AN_IMAGE, f"{path[:200]!r} is not a regular file")
        return FileRef(resolved, info.st_size, local_content_id(info))

    def read(self, ref: FileRef, max_bytes: int) -> bytes:
        if ref.size > max_bytes:
            raise _too_large(ref, max_bytes)
        try:
            descriptor = os.open(ref.location, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            raise InvalidImage(InvalidReason.MISSING_FILE, "removed while the import ran") from None
        try:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                raise InvalidImage(InvalidReason.NOT_AN_IMAGE, "not a regular file")
            chunks: list[bytes] = []
            remaining = max_bytes + 1  # one byte more tells a file that grew past the cap
            while remaining > 0 and (chunk := os.read(descriptor, min(remaining, 1 << 20))):
                chunks.append(chunk)
                remaining -= len(chunk)
        finally:
            os.close(descriptor)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise _too_large(FileRef(ref.location, len(data)), max_bytes)
        return data


class HubDatasetFiles:
    """Files of a Hub dataset repository at one commit, read with the import's token."""

    def __init__(self, repo_id: str, commit: str, filesystem: Any) -> None:
        self.root = f"hf://datasets/{repo_id}@{commit}"
        self.fs = filesystem

    def locate(self, path: str) -> FileRef:
        if "\x00" in path or "\\" in path:
            raise _outside(path)
        if path.startswith("hf://"):
            if not path.startswith(self.root + "/"):
                raise _outside(path)
            relative = path[len(self.root) + 1 :]
        elif "://" in path or "::" in path or path.startswith("/"):
            raise _outside(path)
        else:
            relative = path
        normal = posixpath.normpath(relative)
        if normal.startswith("../") or normal in ("..", ".", ""):
            raise _outside(path)
        location = f"{self.root}/{normal}"
        try:
            info = self.fs.info(location)  # from the parent folder's listing: one request per folder
        except FileNotFoundError:
            raise InvalidImage(InvalidReason.MISSING_FILE, f"{normal[:200]!r} is not in the repository") from None
        if info.get("type") != "file":
            raise InvalidImage(InvalidReason.NOT_AN_IMAGE, f"{normal[:200]!r} is not a file")
        try:
            content_id = hub_content_id(info)
        except ValueError:  # a listing without ids: the file is read as new whenever it is seen
            content_id = ""
        return FileRef(location, int(info.get("size") or 0), content_id)

    def read(self, ref: FileRef, max_bytes: int) -> bytes:
        if ref.size > max_bytes:
            raise _too_large(ref, max_bytes)
        try:
            with self.fs.open(ref.location, "rb", block_size=0) as handle:  # streamed, no read-ahead cache
                data = handle.read(max_bytes + 1)
        except FileNotFoundError:
            raise InvalidImage(InvalidReason.MISSING_FILE, "not in the repository") from None
        if len(data) > max_bytes:
            raise _too_large(FileRef(ref.location, len(data)), max_bytes)
        return bytes(data)

