"""A flow run's process, as the worker starts it: Prefect's own engine (`python -m prefect.engine`), with the
garbage collector held off while the process imports what every run needs.

A new run's process imports Prefect, the flows and the libraries that read a dataset (`datasets`, pyarrow,
pandas) before its first batch: ~340,000 objects that all live as long as the process. Python's collector
walks that growing heap again and again meanwhile, and finds ~8,000 dead objects: ~17 % of the imports'
CPU (measured: 2.0-2.3 s -> 1.7-1.9 s). A child run of a sharded import pays its start-up while the other
shards already run on the same cores, so the collector's share is left out: it is off while these are
imported, what they made is frozen out of later collections (`gc.freeze`; the few dead objects stay), and
it is on again before the engine runs, exactly as `python -m prefect.engine` would.

Under `hf-ingest worker` none of that is paid per run: the worker's warm engine (`flows/warm_engine.py`) has
made these imports once, and this command only asks it for a forked child that runs the flow run; it does the
imports itself only when there is no warm engine, or the run's environment is not the one it imported under.
"""

from __future__ import annotations

import gc
import importlib
import os
import runpy

# What every run imports later, on its way (measured: ~440 modules, 0.4 s of CPU per run): Prefect's task engine,
# runner, pull steps and flow visualization, the jobs database's SQL, the modules `datasets` patches for streaming
# (scipy's), and the image formats a batch decodes.
RUN_TIME_IMPORTS = (
    "prefect.task_engine", "prefect.runner", "prefect.deployments.steps.pull", "prefect.utilities.visualization",
    "prefect.concurrency.sync", "hf_ingest.jobstore.sql", "scipy.io", "scipy.sparse", "numpy.fft",
    "PIL.JpegImagePlugin", "PIL.PngImagePlugin", "PIL.GifImagePlugin", "PIL.BmpImagePlugin", "PIL.PpmImagePlugin",
)
# Each jobs database's driver: a run imports only its own (PostgreSQL's costs ~0.2 s of CPU); the warm engine,
# which serves runs of either, makes both once.
DATABASE_DRIVERS = ("sqlalchemy.dialects.postgresql.psycopg", "psycopg", "sqlalchemy.dialects.sqlite")


def import_quietly(also: tuple[str, ...] = ()) -> None:
    """What every run imports (and the modules `also`), with the collector off; frozen, then the collector back
    on."""
    gc.disable()
    try:
        import datasets  # noqa: F401 - opening any dataset imports it (and pandas, pyarrow)
        import prefect.engine  # noqa: F401
        import prefect.flow_engine  # noqa: F401

        import flows.import_dataset  # noqa: F401 - both entrypoints' imports (it imports the shard flow's module)

        for module in (*RUN_TIME_IMPORTS, *also):
            importlib.import_module(module)
    finally:
        gc.freeze()
        gc.enable()


def main() -> None:
    warm = os.environ.get("HF_INGEST_WARM_ENGINE")  # flows.warm_engine.SOCKET_ENV, without importing it first
    if warm:
        from flows.warm_engine import exit_like, run_forked

        code = run_forked(warm)
        if code is not None:
            exit_like(code)
    import_quietly()
    runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
