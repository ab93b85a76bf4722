"""How an import is labelled in the Prefect UI: a run name an operator can read, tags to filter by.

`owner/name:train@1a2b3c4` says which dataset, split and commit a run imports (the requested revision
until the run has resolved it); tags `dataset:owner/name` and `source:api|webhook|ui|cli|reconciler`
say where it came from. A local folder is named by its last path component.
"""

from __future__ import annotations

import re
from pathlib import PurePath

IMPORT_TAG = "hf-ingest"
SOURCES = ("api", "webhook", "ui", "cli", "reconciler")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def dataset_label(dataset: str) -> str:
    return PurePath(dataset).name if dataset.startswith("/") else dataset


def run_name(dataset: str, split: str, revision: str | None) -> str:
    """`owner/name:split@rev` (a commit sha shortened to 7 characters; no revision for a local folder)."""
    name = f"{dataset_label(dataset)}:{split}"
    if revision:
        name += "@" + (revision[:7] if _COMMIT.match(revision) else revision)
    return name[:200]


def run_tags(dataset: str, source: str) -> list[str]:
    return [IMPORT_TAG, f"dataset:{dataset_label(dataset)}"[:100], f"source:{source}"]


def source_of(tags: list[str] | None) -> str | None:
    """The `source:` a run was tagged with when it was created, if any."""
    for tag in tags or []:
        if tag.startswith("source:"):
            return tag.removeprefix("source:")
    return None
