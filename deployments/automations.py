"""The zombie-run automation: a flow run whose heartbeats stop is marked Crashed by the server.

Runs emit `prefect.flow-run.heartbeat` every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds (the
deployments set 30). If, after a worker takes a run (Pending), the run starts or it beats, neither
Running, a heartbeat nor a final state follows within HF_INGEST_ZOMBIE_SECONDS (six intervals by
default), the process or its worker is gone (SIGKILL, OOM, a lost machine): the server sets the run
Crashed, and the reconciler then fails its job with "crashed: ..." (or the parent run starts a crashed
shard again). It matches only runs of this project's
deployments (their ids, as related resources of the events), never other flows of the workspace:
on a shared server or Prefect Cloud, other teams' runs are left alone. Registered by
`hf-ingest setup-prefect` (which `make up` runs); idempotent.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from prefect.automations import Automation
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

NAME = "hf-ingest: crash zombie flow runs"


def zombie_automation(silence_seconds: int, deployment_ids: Sequence[str]) -> Automation:
    """Crash a run of these deployments that stays Pending, or sends no heartbeat (nor a final state), for
    `silence_seconds`."""
    if not deployment_ids:
        raise ValueError("the zombie automation needs the ids of the deployments it watches")
    return Automation(
        name=NAME,
        description="Marks hf-ingest flow runs Crashed when their heartbeats stop or they never start (the process "
        "or its worker died).",
        trigger=EventTrigger(
            # armed by a heartbeat, by the run starting (a process killed before its first heartbeat would
            # otherwise stay Running for ever) and by a worker taking the run (Pending): a worker killed while
            # its runs' processes start leaves them Pending for ever, holding the queue's concurrency slots
            after={"prefect.flow-run.heartbeat", "prefect.flow-run.Running", "prefect.flow-run.Pending"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Running",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=ResourceSpecification(
                {
                    "prefect.resource.role": "deployment",
                    "prefect.resource.id": [f"prefect.deployment.{deployment_id}" for deployment_id in deployment_ids],
                }
            ),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=silence_seconds),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {silence_seconds} s (or taken by a worker and never started): "
                "the flow run process or its worker died",
            )
        ],
    )


def register(silence_seconds: int, deployment_ids: Sequence[str]) -> Automation:
    """Create the automation, replacing an older copy with the same name."""
    try:
        existing = Automation.read(name=NAME)
    except ValueError:
        existing = None
    if existing is not None:
        existing.delete()
    return zombie_automation(silence_seconds, deployment_ids).create()
