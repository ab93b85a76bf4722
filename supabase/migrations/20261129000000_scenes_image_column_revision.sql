-- hf-ingest schema v2: a scene records the image column and the commit (revision) it was read from,
-- and its identity includes the image column, so importing two image columns of one dataset gives
-- two sets of scenes. Rows recorded before get their job's image column, or 'image' (the usual name).
-- Same change as hf_ingest/jobstore/schema.py makes on SQLite/PostgreSQL. Apply with `supabase db push`.

alter table public.scenes add column if not exists image_column text;
alter table public.scenes add column if not exists revision text;
update public.scenes s
   set image_column = coalesce((select j.params ->> 'image_column' from public.jobs j where j.id = s.job_id), 'image')
 where image_column is null;
alter table public.scenes alter column image_column set not null;
alter table public.scenes drop constraint if exists scenes_source_row_key;
alter table public.scenes drop constraint if exists scenes_source_image_key;
alter table public.scenes
    add constraint scenes_source_image_key unique (dataset, config, split, image_column, row_index);

-- Insert scenes; a row whose key exists is replaced only when its revision or content differs, so
-- re-importing the same revision writes nothing and a newer revision updates what changed.
-- Returns how many rows were new and how many were replaced. Called by the Supabase jobs store
-- through PostgREST (`POST /rest/v1/rpc/hf_ingest_upsert_scenes {"scenes": [...]}`).
create or replace function public.hf_ingest_upsert_scenes(scenes jsonb)
returns table (inserted bigint, updated bigint)
language sql
security invoker
set search_path = public
as $$
    with incoming as (
        select *
          from jsonb_to_recordset(scenes) as s(
              id uuid, job_id uuid, dataset text, config text, split text, image_column text, row_index bigint,
              object_key text, url text, sha256 text, content_type text, width integer, height integer,
              bytes integer, metadata jsonb, revision text
          )
    ), written as (
        insert into public.scenes as t (
            id, job_id, dataset, config, split, image_column, row_index, object_key, url, sha256,
            content_type, width, height, bytes, metadata, revision, created_at
        )
        select id, job_id, dataset, config, split, image_column, row_index, object_key, url, sha256,
               content_type, width, height, bytes, coalesce(metadata, '{}'::jsonb), revision, now()
          from incoming
        on conflict (dataset, config, split, image_column, row_index) do update
           set job_id = excluded.job_id, object_key = excluded.object_key, url = excluded.url,
               sha256 = excluded.sha256, content_type = excluded.content_type, width = excluded.width,
               height = excluded.height, bytes = excluded.bytes, metadata = excluded.metadata,
               revision = excluded.revision
         where t.revision is distinct from excluded.revision
            or t.sha256 <> excluded.sha256
            or t.metadata is distinct from excluded.metadata
        returning (xmax = 0) as fresh
    )
    select count(*) filter (where fresh), count(*) filter (where not fresh) from written;
$$;

-- Only the service role (the worker's key) may call it; the roles exist on Supabase, not on plain PostgreSQL.
revoke all on function public.hf_ingest_upsert_scenes(jsonb) from public;
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'anon') then
        revoke all on function public.hf_ingest_upsert_scenes(jsonb) from anon, authenticated;
    end if;
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        grant execute on function public.hf_ingest_upsert_scenes(jsonb) to service_role;
    end if;
end
$$;
