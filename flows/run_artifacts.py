"""What an operator sees of an import in the Prefect UI: the run's name and tags, a progress artifact
that moves while it runs, and a summary artifact when it ends.

Thin Prefect calls over `hf_ingest.run_labels` and `hf_ingest.summary`. None of them may fail an
import: the UI is for people; the job row stays the record the app trusts. The artifact calls run in
worker threads of the async flow, where Prefect would hand back an un-awaited coroutine: `_sync=True`.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from prefect.artifacts import create_markdown_artifact, create_progress_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactUpdate
from prefect.runtime import flow_run as current_flow_run

from flows.run_context import is_deployment_run
from hf_ingest.run_labels import dataset_label, run_name, run_tags, source_of
from hf_ingest.source import DatasetRequest, DatasetStream
from hf_ingest.summary import ImportReport, summary_markdown

logger = logging.getLogger("hf_ingest.artifacts")
UPDATE_INTERVAL_SECONDS = 1.0


def artifact_key(kind: str, dataset: str) -> str:
    """`summary-owner-name`: the Artifacts page keeps the latest one per dataset (keys: a-z, 0-9, dashes)."""
    slug = re.sub(r"[^a-z0-9]+", "-", dataset_label(dataset).lower()).strip("-")
    return f"{kind}-{slug}"[:100] or kind


async def label_run(request: DatasetRequest, commit: str | None) -> None:
    """Name the run after its dataset, split and the commit it reads; tag it with the dataset and its source
    (runs the trigger starts come tagged; a run from the UI or `prefect deployment run` is `ui`, one
    started in-process by `hf-ingest run` is `cli`)."""
    tags = list(current_flow_run.tags or [])
    source = source_of(tags) or ("ui" if is_deployment_run() else "cli")
    wanted = tags + [tag for tag in run_tags(request.dataset, source) if tag not in tags]
    try:
        async with get_client() as client:
            await client.update_flow_run(
                uuid.UUID(str(current_flow_run.id)),
                name=run_name(request.dataset, request.split, commit or None),
                tags=wanted,
            )
    except Exception as exc:  # noqa: BLE001 - a label is for people; never fail the import for it
        logger.warning("run not renamed: %s", type(exc).__name__)


class ProgressArtifact:
    """The run's progress artifact: rows read out of the rows to read (or 0 until the end, when the format
    does not say how many rows there are)."""

    def __init__(self, stream: DatasetStream, rows_to_read: int | None) -> None:
        self.total = rows_to_read
        self.last = 0.0
        self.id: uuid.UUID | None = None
        # one client for every update: `update_progress_artifact` builds a new one (with its TLS context, tens of
        # milliseconds of CPU) at each call, and the updates come from worker threads with no client of their own
        self.client = get_client(sync_client=True)
        try:
            self.id = create_progress_artifact(  # type: ignore[call-arg]
                _sync=True,
                progress=0.0,
                key=artifact_key("progress", stream.request.dataset),
                description=f"{dataset_label(stream.request.dataset)}: rows read"
                + (f" of {self.total:,}" if self.total is not None else ""),
            )
        except Exception as exc:  # noqa: BLE001
            logger.warning("progress artifact not created: %s", type(exc).__name__)

    def update(self, rows: int) -> None:
        if self.total and time.monotonic() - self.last >= UPDATE_INTERVAL_SECONDS:
            self._set(min(99.9, 100.0 * rows / self.total))

    def finish(self, rows: int) -> None:
        self._set(100.0)

    def _set(self, percent: float) -> None:
        if self.id is None:
            return
        self.last = time.monotonic()
        try:
            self.client.update_artifact(artifact_id=self.id, artifact=ArtifactUpdate(data=round(percent, 1)))
        except Exception as exc:  # noqa: BLE001
            logger.warning("progress artifact not updated: %s", type(exc).__name__)


def publish_summary(report: ImportReport) -> None:
    """The summary artifact of the run: counts, bytes, rate, commit, where the images are, a few of them."""
    try:
        create_markdown_artifact(  # type: ignore[call-arg]
            summary_markdown(report),
            _sync=True,
            key=artifact_key("summary", report.dataset),
            description=f"{dataset_label(report.dataset)}: {'failed' if report.error else 'completed'}",
        )
    except Exception as exc:  # noqa: BLE001
        logger.warning("summary artifact not created: %s", type(exc).__name__)
