-- hf-ingest schema v3: the shards of a sharded import (one row per piece of the split, one child flow
-- run each). `checkpoint` counts the rows of the shard that are done, so a resumed shard starts there;
-- `counts` are the shard's progress counts, which the parent run sums into jobs.progress.
-- Same table as hf_ingest/jobstore/sql.py creates on SQLite/PostgreSQL. Apply with `supabase db push`.

create table if not exists public.job_shards (
    job_id uuid not null references public.jobs (id) on delete cascade,
    shard integer not null,
    first_row bigint not null,
    end_row bigint not null,
    status text not null default 'pending'
        constraint job_shards_status_check check (status in ('pending', 'running', 'completed', 'failed')),
    checkpoint bigint not null default 0,
    counts jsonb not null default '{}'::jsonb,
    attempts integer not null default 0,
    flow_run_id text,
    error text,
    updated_at timestamptz not null default now(),
    primary key (job_id, shard)
);

alter table public.job_shards enable row level security;
