"""`hf-ingest`: run one import in-process and print the job (`hf-ingest run DATASET ...`)."""

from __future__ import annotations

from hf_ingest.fast_exit import exit_after_cleanup  # first: its exit handler must run last

import argparse
import asyncio
import json
import os
import sys
import uuid
from collections.abc import Sequence

# `run`'s temporary Prefect server sends usage telemetry unless told not to: offline, an ERROR line in the
# user's terminal (the Makefile and the stack set this too; a value the user set is kept)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from blocks.settings import get_settings  # noqa: E402
from hf_ingest import runtime
from hf_ingest.jobstore import Job


def _positive(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-ingest", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="import a dataset now, in this process")
    run.add_argument("dataset", help="Hub id (owner/name) or a local folder in the Hub's formats")
    run.add_argument("--config", default=None, help="dataset configuration (subset)")
    run.add_argument("--split", default="train")
    run.add_argument("--revision", default="main", help="branch, tag or commit of a Hub dataset (default: main)")
    run.add_argument("--image-column", default=None, help="default: the first Image column")
    run.add_argument("--limit", type=_positive, default=None, help="import at most this many rows")
    show = commands.add_parser("show", help="print a job")
    show.add_argument("job_id", type=uuid.UUID)
    worker = commands.add_parser(
        "worker",
        help="run a Prefect worker for the hf-ingest pool, at most --limit flow runs at once "
        "(default: WORKER_LIMIT, else this machine's cores)",
    )
    worker.add_argument("--limit", type=_at_least_one, default=None, help="flow runs at once")
    worker.add_argument("--name", default=None, help="the worker's name in the Prefect UI")
    schedule = commands.add_parser(
        "schedule",
        help="keep a dataset current on a schedule (a Prefect schedule of hf-ingest/default, seen and paused in the "
        "UI); without a dataset, or with --list, list them",
    )
    schedule.add_argument("dataset", nargs="?", help="Hub id (owner/name), a folder inside LOCAL_DATASET_ROOT, "
                          "or (with --remove/--pause/--resume) a schedule's slug as --list shows it")
    schedule.add_argument("--cron", help="when to sync, e.g. '0 3 * * *' (every day at 03:00)")
    schedule.add_argument("--timezone", default="UTC", help="of the cron (default UTC)")
    schedule.add_argument("--config", default=None)
    schedule.add_argument("--split", default="train")
    schedule.add_argument("--image-column", default=None)
    schedule.add_argument("--revision", default="main", help="branch or tag to follow (default: main)")
    action = schedule.add_mutually_exclusive_group()
    action.add_argument("--list", action="store_true", help="list the schedules")
    action.add_argument("--remove", action="store_true", help="remove the dataset's schedule")
    action.add_argument("--pause", action="store_true", help="pause it (as the UI's toggle does)")
    action.add_argument("--resume", action="store_true", help="resume it")
    commands.add_parser("reconcile", help="bring unfinished jobs in line with their Prefect flow runs (one pass)")
    commands.add_parser(
        "setup-prefect",
        help="create or update the work pool, deployments, queue limit, blocks and zombie automation (idempotent)",
    )
    sample = commands.add_parser("make-sample", help="write the bundled sample dataset (Hub parquet layout)")
    sample.add_argument("folder")
    copy = commands.add_parser(
        "copy-db", help="copy the jobs, shards and scenes of one SQL database into another (rows it has are kept)"
    )
    copy.add_argument("source", help="SQLAlchemy URL to copy from, e.g. sqlite:///.data/hf_ingest.db")
    copy.add_argument("target", help="SQLAlchemy URL to copy into, e.g. the stack's DATABASE_URL")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "make-sample":
        from pathlib import Path

        from hf_ingest.sample import write_sample_dataset

        print(write_sample_dataset(Path(args.folder)))
        return 0
    if args.command == "copy-db":
        from hf_ingest.jobstore.copy import copy_database

        for copied in copy_database(args.source, args.target):
            print(f"{copied.table:<11} {copied.read:>10,} read, {copied.written:>10,} new in the target")
        return 0
    if args.command == "setup-prefect":
        from deployments.prefect_setup import main as setup_prefect

        return setup_prefect()
    if args.command == "worker":
        from deployments.worker import start

        start(args.limit, args.name)
        return 0
    if args.command == "schedule":
        return schedule_command(args)
    if args.command == "reconcile":
        from deployments.reconciler import run_cli

        return run_cli()
    if args.command == "show":
        job = runtime.job_store().get_job(args.job_id)
        if job is None:
            print(f"no job {args.job_id}", file=sys.stderr)
            return 1
        print(json.dumps(job.as_dict(), indent=2))
        return 0

    from prefect.states import State

    from flows.import_dataset import hf_ingest

    job_id = uuid.uuid4()
    state: State = asyncio.run(
        hf_ingest(
            dataset=args.dataset,
            config=args.config,
            split=args.split,
            revision=args.revision,
            image_column=args.image_column,
            limit=args.limit,
            job_id=job_id,
            return_state=True,
        )
    )
    job = runtime.job_store().get_job(job_id)
    print(json.dumps(job.as_dict() if job else {"job_id": str(job_id), "state": state.type.value}, indent=2))
    if job is not None:
        print(describe_outcome(job), file=sys.stderr)
    return 0 if state.is_completed() else 1


def schedule_command(args: argparse.Namespace) -> int:
    """`hf-ingest schedule`: set, list, pause, resume or remove a dataset's sync schedule."""
    from deployments.schedules import change_schedule, checked_parameters, list_schedules, schedule_slug, set_schedule
    from hf_ingest.import_request import InvalidImport

    if args.list or args.dataset is None:
        schedules = asyncio.run(list_schedules())
        for schedule in schedules:
            print(schedule.describe())
        if not schedules:
            print("no schedules (hf-ingest schedule OWNER/NAME --cron '0 3 * * *' makes one)", file=sys.stderr)
        return 0
    changing = args.remove or args.pause or args.resume
    try:
        params = checked_parameters(args.dataset, args.config, args.split, args.image_column, args.revision)
        slug = schedule_slug(params)
    except InvalidImport as exc:
        if not changing:
            print(f"not scheduled: {exc}", file=sys.stderr)
            return 2
        slug = args.dataset  # a schedule's slug, or a dataset that is gone
    if changing:
        active = None if args.remove else bool(args.resume)
        if not asyncio.run(change_schedule(slug, active=active, remove=args.remove)):
            print(f"no schedule {slug!r} (hf-ingest schedule --list shows them)", file=sys.stderr)
            return 1
        print(f"{slug}: {'removed' if args.remove else 'resumed' if args.resume else 'paused'}")
        return 0
    if not args.cron:
        print("--cron is required to schedule a dataset, e.g. --cron '0 3 * * *'", file=sys.stderr)
        return 2
    try:
        made = asyncio.run(set_schedule(params, args.cron, args.timezone))
    except ValueError as exc:  # a cron or time zone Prefect does not accept
        print(f"not scheduled: {' '.join(str(exc).split())[:300]}", file=sys.stderr)
        return 2
    print(made.describe())
    return 0


def describe_outcome(job: Job) -> str:
    """A few lines for people: the status, the counts, and where the images and rows went."""
    from sqlalchemy.engine import make_url

    settings = get_settings()
    progress = job.progress
    lines = [f"job {job.id}: {job.status.value}" + (f" ({job.error})" if job.error else "")]
    if progress:
        invalid = ", ".join(f"{k}={v}" for k, v in progress.get("invalid", {}).items()) or "none"
        lines.append(
            f"  rows seen {progress.get('rows_seen', 0)}; images stored {progress.get('stored', 0)}, "
            f"already present {progress.get('already_present', 0)}; skipped as invalid: {invalid}"
        )
        if "files_read" in progress:
            lines.append(
                f"  sync: {progress['files_read']} data files read, {progress.get('files_kept', 0)} kept "
                f"({progress.get('scenes_unchanged', 0)} rows unchanged, {progress.get('scenes_moved', 0)} scenes "
                f"moved); {progress.get('scenes_removed', 0)} scenes marked removed"
            )
        if progress.get("near_duplicates") is not None:
            lines.append(
                f"  derivatives: {progress.get('derivatives_stored', 0)} thumbnails and previews stored, "
                f"{progress.get('derivatives_backfilled', 0)} scenes backfilled; "
                f"near-duplicates: {progress['near_duplicates']} (scenes.duplicate_of)"
            )
    lines.append(f"  images: {runtime.object_store().url('images/', None)}")
    if settings.uses_supabase:
        where = f"Supabase {settings.supabase_url}"
    else:
        where = make_url(settings.database_url.get_secret_value()).render_as_string(hide_password=True)
    scenes = runtime.job_store().count_scenes(job_id=job.id)
    lines.append(f"  rows: {scenes} scenes of this job in {where} (tables jobs, scenes)")
    return "\n".join(lines)


def entrypoint() -> None:
    """The `hf-ingest` console script."""
    exit_after_cleanup(main())


if __name__ == "__main__":
    entrypoint()
