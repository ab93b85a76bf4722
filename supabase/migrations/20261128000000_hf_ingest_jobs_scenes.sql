-- hf-ingest: the jobs and scenes tables (same columns as the SQLAlchemy store creates on SQLite/PostgreSQL).
-- Apply with `supabase db push` (or psql). The service role key bypasses RLS; no other role gets access.

create table if not exists public.jobs (
    id uuid primary key,
    kind text not null default 'huggingface_import',
    status text not null default 'queued'
        constraint jobs_status_check check (status in ('queued', 'running', 'completed', 'failed', 'cancelled')),
    params jsonb not null default '{}'::jsonb,
    flow_run_id text,
    error text,
    progress jsonb not null default '{}'::jsonb,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    started_at timestamptz,
    finished_at timestamptz
);
create index if not exists jobs_status_idx on public.jobs (status);

create table if not exists public.scenes (
    id uuid primary key default gen_random_uuid(),
    job_id uuid not null references public.jobs (id) on delete cascade,
    dataset text not null,
    config text not null,
    split text not null,
    row_index bigint not null,
    object_key text not null,
    url text not null,
    sha256 text not null,
    content_type text not null,
    width integer not null,
    height integer not null,
    bytes integer not null,
    metadata jsonb not null default '{}'::jsonb,
    created_at timestamptz not null default now(),
    constraint scenes_source_row_key unique (dataset, config, split, row_index)
);
create index if not exists scenes_job_id_idx on public.scenes (job_id);

alter table public.jobs enable row level security;
alter table public.scenes enable row level security;
