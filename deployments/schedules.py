"""`hf-ingest schedule`: keep a dataset current on a schedule, with Prefect's own deployment schedules.

Each schedule belongs to the `hf-ingest/default` deployment and carries its import's parameters, so the
Prefect UI shows it on the deployment's page, where it can be paused, resumed or deleted like any other;
every run it starts is a normal import (its job row, its sync: a commit already imported reads nothing and
ends within seconds). The parameters are checked as the trigger checks a request, before anything is
created. One schedule per dataset, config, split and image column: scheduling it again replaces the cron.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from blocks.settings import get_settings
from deployments.flow_runs import DEPLOYMENT
from hf_ingest.import_request import validate_import
from hf_ingest.run_labels import dataset_label

SLUG_PREFIX = "sync-"


@dataclass(frozen=True)
class SyncSchedule:
    """One schedule of the deployment that keeps a dataset current, as the CLI lists it."""

    slug: str
    cron: str
    timezone: str
    active: bool
    parameters: dict[str, Any]

    def describe(self) -> str:
        params = self.parameters
        what = f"{dataset_label(str(params.get('dataset')))} ({params.get('config') or 'default'}/{params.get('split')})"
        return f"{self.slug:<48} {self.cron:<16} {self.timezone:<10} {'active' if self.active else 'paused':<7} {what}"


def schedule_slug(params: dict[str, Any]) -> str:
    """`sync-owner-name-default-train`: one per dataset, config, split and image column (Prefect allows 100
    characters; a longer name keeps its start and a digest of the whole)."""
    parts = [params["dataset"], params.get("config") or "default", params.get("split") or "train"]
    if params.get("image_column"):
        parts.append(params["image_column"])
    text = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")
    slug = SLUG_PREFIX + text
    if len(slug) > 90:
        slug = slug[:80] + "-" + hashlib.sha256(slug.encode()).hexdigest()[:9]
    return slug


def checked_parameters(dataset: str, config: str | None, split: str, image_column: str | None,
                       revision: str = "main") -> dict[str, Any]:
    """The schedule's parameters, validated as the trigger validates a request (`InvalidImport` says why)."""
    params = validate_import({"dataset": dataset, "config": config, "split": split, "image_column": image_column,
                              "revision": revision}, get_settings().local_dataset_root)
    return {name: value for name, value in params.items() if value is not None and name != "limit"}


async def _deployment_schedules(client: Any) -> tuple[Any, dict[str, Any]]:
    """The deployment's id and its schedules by slug."""
    deployment = await client.read_deployment_by_name(DEPLOYMENT)
    return deployment.id, {s.slug: s for s in await client.read_deployment_schedules(deployment.id) if s.slug}


async def set_schedule(params: dict[str, Any], cron: str, timezone: str = "UTC") -> SyncSchedule:
    """Create the dataset's schedule, or replace its cron (its paused or active state is kept)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule

    schedule = CronSchedule(cron=cron, timezone=timezone)  # a bad cron or zone fails here, before any change
    slug = schedule_slug(params)
    async with get_client() as client:
        deployment_id, existing = await _deployment_schedules(client)
        if slug in existing:
            await client.update_deployment_schedule(deployment_id, existing[slug].id, schedule=schedule,
                                                    parameters=params)
        else:
            await client.create_deployment_schedules(deployment_id, [
                DeploymentScheduleCreate(schedule=schedule, active=True, parameters=params, slug=slug)])
    return next(s for s in await list_schedules() if s.slug == slug)


async def list_schedules() -> list[SyncSchedule]:
    """The deployment's schedules that keep a dataset current."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        _, schedules = await _deployment_schedules(client)
    return [SyncSchedule(slug, getattr(s.schedule, "cron", str(s.schedule)),
                         getattr(s.schedule, "timezone", None) or "UTC", s.active, dict(s.parameters or {}))
            for slug, s in schedules.items() if slug.startswith(SLUG_PREFIX)]


async def change_schedule(slug: str, *, active: bool | None = None, remove: bool = False) -> bool:
    """Pause, resume or remove a schedule by its slug; False if there is no such schedule."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        deployment_id, schedules = await _deployment_schedules(client)
        found = schedules.get(slug)
        if found is None:
            return False
        if remove:
            await client.delete_deployment_schedule(deployment_id, found.id)
        else:
            await client.update_deployment_schedule(deployment_id, found.id, active=active)
    return True
