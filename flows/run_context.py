"""What the running flow run is, read from Prefect's run context instead of asked of the API.

`prefect.runtime.deployment.id` outside a deployment run builds a new client (TLS context included)
and reads the flow run from the API on every access: ~60 ms each, four times per import, measured in
a warm process. The flow run in the context already says which deployment, if any, started it.
"""

from __future__ import annotations

from prefect.context import FlowRunContext


def is_deployment_run() -> bool:
    """True for a run started from a deployment (the trigger, the UI, `prefect deployment run`, a shard's
    child run); False for `hf-ingest run` and other in-process calls, and outside any flow run."""
    context = FlowRunContext.get()
    return context is not None and context.flow_run is not None and context.flow_run.deployment_id is not None
