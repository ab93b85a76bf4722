-- hf-ingest schema v5: a run that has finished its shard takes part of another's (work stealing).
--   job_shards.reserved_row: the run importing a shard may read up to there (it reserves a step ahead of
--     reading); the rows after it may be split off to another run. Null: nothing reserved yet.
--   hf_ingest_reserve_shard_rows: the importing run's reservation, never past the shard's (current) end.
--   hf_ingest_split_shard: the cut, and the new shard that gets the rest, in one transaction.
-- Same column and statements as hf_ingest/jobstore/sql.py on SQLite/PostgreSQL. Apply with `supabase db push`.

alter table public.job_shards add column if not exists reserved_row bigint;

create or replace function public.hf_ingest_reserve_shard_rows(p_job_id uuid, p_shard integer, p_upto bigint)
returns bigint
language sql
security invoker
set search_path = public
as $$
    update public.job_shards
       set reserved_row = greatest(coalesce(reserved_row, first_row), least(p_upto, end_row))
     where job_id = p_job_id and shard = p_shard
    returning reserved_row;
$$;

create or replace function public.hf_ingest_split_shard(p_job_id uuid, p_shard integer, p_at bigint, p_end_row bigint)
returns setof public.job_shards
language plpgsql
security invoker
set search_path = public
as $$
begin
    update public.job_shards
       set end_row = p_at, updated_at = now()
     where job_id = p_job_id and shard = p_shard and status = 'running' and end_row = p_end_row
       and coalesce(reserved_row, first_row) <= p_at and first_row < p_at and p_at < p_end_row;
    if not found then
        return;
    end if;
    return query
    insert into public.job_shards (job_id, shard, first_row, end_row, status, checkpoint, counts, attempts, updated_at)
    select p_job_id, max(shard) + 1, p_at, p_end_row, 'pending', 0, '{}'::jsonb, 0, now()
      from public.job_shards
     where job_id = p_job_id
    returning *;
end;
$$;

revoke all on function public.hf_ingest_reserve_shard_rows(uuid, integer, bigint) from public;
revoke all on function public.hf_ingest_split_shard(uuid, integer, bigint, bigint) from public;

do $$
begin
    if exists (select 1 from pg_roles where rolname = 'anon') then
        revoke all on function public.hf_ingest_reserve_shard_rows(uuid, integer, bigint) from anon, authenticated;
        revoke all on function public.hf_ingest_split_shard(uuid, integer, bigint, bigint) from anon, authenticated;
    end if;
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        grant execute on function public.hf_ingest_reserve_shard_rows(uuid, integer, bigint) to service_role;
        grant execute on function public.hf_ingest_split_shard(uuid, integer, bigint, bigint) to service_role;
    end if;
end
$$;
