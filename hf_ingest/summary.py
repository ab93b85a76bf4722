"""What an operator reads at the end of an import, in the Prefect UI's artifacts tab: the outcome,
counts by reason, bytes and rate, the commit read, what a sync read, kept, moved and removed, where the
images went, a few of them, and, for a failure, the error and how to resume."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ImportReport:
    job_id: str
    dataset: str
    config: str
    split: str
    revision: str | None
    storage: str
    seconds: float
    progress: dict[str, Any]
    sample_urls: Sequence[str] = field(default_factory=list)
    error: str | None = None
    sample_thumbnails: Sequence[str] = field(default_factory=list)  # shown as pictures where they are public URLs


def _near_duplicates(progress: dict[str, Any]) -> str:
    if progress.get("near_duplicates") is not None:
        return format(progress["near_duplicates"], ",")
    if progress.get("files_read") == 0 and not progress.get("scenes_moved") and not progress.get("scenes_removed"):
        return "as before (the split is as recorded)"  # a sync that found nothing to read, move or remove
    return "off"


def summary_markdown(report: ImportReport) -> str:
    progress = report.progress
    outcome = "failed" if report.error else "completed"
    rate = progress.get("rows_seen", 0) / report.seconds if report.seconds > 0 else 0.0
    megabytes = progress.get("bytes_stored", 0) / 2**20
    lines = [
        f"## {report.dataset} · {report.config} · {report.split}: {outcome}",
        "",
        "| | |",
        "|---|---|",
        f"| job | `{report.job_id}` |",
        f"| revision (commit read) | `{report.revision or 'local folder'}` |",
        f"| rows seen | {progress.get('rows_seen', 0):,} |",
        f"| scenes new / updated | {progress.get('scenes_recorded', 0):,} / {progress.get('scenes_updated', 0):,} |",
        f"| images stored / already present | {progress.get('stored', 0):,} / {progress.get('already_present', 0):,} |",
        f"| skipped as invalid | {progress.get('invalid_total', 0):,} |",
        f"| failed (batches out of retries) | {progress.get('failed', 0):,} |",
        f"| bytes stored | {megabytes:,.1f} MB |",
        f"| derivatives stored / backfilled | {progress.get('derivatives_stored', 0):,} / "
        f"{progress.get('derivatives_backfilled', 0):,} |",
        f"| near-duplicates (of an earlier scene of this split) | {_near_duplicates(progress)} |",
        *([f"| data files read / kept (a sync: kept files are not read) | {progress['files_read']:,} / "
           f"{progress.get('files_kept', 0):,} |",
           f"| scenes unchanged / moved | {progress.get('scenes_unchanged', 0):,} / "
           f"{progress.get('scenes_moved', 0):,} |"] if "files_read" in progress else []),
        f"| scenes marked removed (rows gone at this commit) | {progress.get('scenes_removed', 0):,} |",
        f"| time, rate | {report.seconds:,.1f} s, {rate:,.0f} rows/s |",
        f"| images are in | `{report.storage}` |",
    ]
    invalid = progress.get("invalid") or {}
    if invalid:
        lines += ["", "**Skipped, by reason**", "", "| reason | rows |", "|---|---:|"]
        lines += [f"| `{reason}` | {count:,} |" for reason, count in sorted(invalid.items())]
    if report.sample_urls:
        lines += ["", "**A few stored images**", ""] + [f"- {url}" for url in report.sample_urls]
    public = [url for url in report.sample_thumbnails if url.startswith(("https://", "http://"))]
    if public:  # PUBLIC_BASE_URL is set: the UI can show them
        lines += ["", "**Their thumbnails**", "", " ".join(f"![thumbnail]({url})" for url in public)]
    if report.error:
        lines += [
            "",
            "**Error**",
            "",
            "```",
            report.error[:2000],
            "```",
            "",
            "To resume: `POST /jobs/<job id>/retry` on the trigger, or run the same import again "
            "(`hf-ingest run`, a new POST, or this deployment with the same parameters). What was "
            "stored is found in place; only the rest is imported.",
        ]
    return "\n".join(lines) + "\n"
