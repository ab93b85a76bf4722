-- hf-ingest schema v3 of scenes: what an app shows, and near-duplicates.
--   thumbnail_url, preview_url: WebP, longest side THUMBNAIL_SIZE (256) / PREVIEW_SIZE (1024), never upscaled
--     (a small plain JPEG/PNG/WebP is its own thumbnail and preview: both are its url);
--   placeholder: a ThumbHash (base64) the app turns into a blurred picture before anything loads;
--   phash: 64-bit perceptual hash (16 hex digits); duplicate_of: the id of the first scene (lowest
--     row_index) of the scene's near-duplicate group in its dataset, config, split and image column.
-- Rows recorded before keep working (the columns are null) and get them from the next import.
-- The app's signed-in users read scenes and jobs with their own key (RLS select policies for
-- `authenticated`; writes stay the service role's), and jobs are published to Supabase Realtime.
-- Same columns as hf_ingest/jobstore/schema.py adds on SQLite/PostgreSQL. Apply with `supabase db push`.

alter table public.scenes add column if not exists thumbnail_url text;
alter table public.scenes add column if not exists preview_url text;
alter table public.scenes add column if not exists placeholder text;
alter table public.scenes add column if not exists phash text;
alter table public.scenes add column if not exists duplicate_of uuid;

-- The upsert now also fills in derivatives where a scene has none (a backfill, counted), keeps them
-- where an import without them finds the same content, and drops them with content that changed.
drop function if exists public.hf_ingest_upsert_scenes(jsonb);
create function public.hf_ingest_upsert_scenes(scenes jsonb)
returns table (inserted bigint, updated bigint, backfilled bigint)
language sql
security invoker
set search_path = public
as $$
    with incoming as (
        select *
          from jsonb_to_recordset(scenes) as s(
              id uuid, job_id uuid, dataset text, config text, split text, image_column text, row_index bigint,
              object_key text, url text, sha256 text, content_type text, width integer, height integer,
              bytes integer, metadata jsonb, revision text, thumbnail_url text, preview_url text,
              placeholder text, phash text
          )
    ), lacking as (  -- read before the insert changes anything: one snapshot for the whole statement
        select t.id
          from public.scenes t
          join incoming i using (dataset, config, split, image_column, row_index)
         where t.phash is null and i.phash is not null
    ), written as (
        insert into public.scenes as t (
            id, job_id, dataset, config, split, image_column, row_index, object_key, url, sha256,
            content_type, width, height, bytes, metadata, revision, thumbnail_url, preview_url,
            placeholder, phash, created_at
        )
        select id, job_id, dataset, config, split, image_column, row_index, object_key, url, sha256,
               content_type, width, height, bytes, coalesce(metadata, '{}'::jsonb), revision, thumbnail_url,
               preview_url, placeholder, phash, now()
          from incoming
        on conflict (dataset, config, split, image_column, row_index) do update
           set job_id = excluded.job_id, object_key = excluded.object_key, url = excluded.url,
               sha256 = excluded.sha256, content_type = excluded.content_type, width = excluded.width,
               height = excluded.height, bytes = excluded.bytes, metadata = excluded.metadata,
               revision = excluded.revision,
               thumbnail_url = coalesce(excluded.thumbnail_url, case when t.sha256 = excluded.sha256 then t.thumbnail_url end),
               preview_url = coalesce(excluded.preview_url, case when t.sha256 = excluded.sha256 then t.preview_url end),
               placeholder = coalesce(excluded.placeholder, case when t.sha256 = excluded.sha256 then t.placeholder end),
               phash = coalesce(excluded.phash, case when t.sha256 = excluded.sha256 then t.phash end)
         where t.revision is distinct from excluded.revision
            or t.sha256 <> excluded.sha256
            or t.metadata is distinct from excluded.metadata
            or (t.phash is null and excluded.phash is not null)
        returning t.id, (xmax = 0) as fresh
    )
    select count(*) filter (where fresh),
           count(*) filter (where not fresh),
           count(*) filter (where not fresh and id in (select id from lacking))
      from written;
$$;

-- What near-duplicate grouping reads: one page of a split's hashed scenes (by row_index, after
-- `after_row`), as one JSON array [[id, row_index, phash, duplicate_of], ...]: one value, so PostgREST's
-- row limit does not cut it.
create or replace function public.hf_ingest_scene_hashes(
    p_dataset text, p_config text, p_split text, p_image_column text, p_after_row bigint, p_limit integer
)
returns jsonb
language sql
stable
security invoker
set search_path = public
as $$
    select coalesce(jsonb_agg(jsonb_build_array(id, row_index, phash, duplicate_of) order by row_index), '[]'::jsonb)
      from (
          select id, row_index, phash, duplicate_of
            from public.scenes
           where dataset = p_dataset and config = p_config and split = p_split and image_column = p_image_column
             and phash is not null and row_index > p_after_row
           order by row_index
           limit p_limit
      ) page;
$$;

-- What grouping writes: `duplicate_of` of the scenes whose group changed ([{id, duplicate_of}, ...]).
create or replace function public.hf_ingest_set_duplicates(changes jsonb)
returns bigint
language sql
security invoker
set search_path = public
as $$
    with updated as (
        update public.scenes t
           set duplicate_of = c.duplicate_of
          from jsonb_to_recordset(changes) as c(id uuid, duplicate_of uuid)
         where t.id = c.id
        returning 1
    )
    select count(*) from updated;
$$;

revoke all on function public.hf_ingest_upsert_scenes(jsonb) from public;
revoke all on function public.hf_ingest_scene_hashes(text, text, text, text, bigint, integer) from public;
revoke all on function public.hf_ingest_set_duplicates(jsonb) from public;

do $$
begin
    if exists (select 1 from pg_roles where rolname = 'anon') then
        revoke all on function public.hf_ingest_upsert_scenes(jsonb) from anon, authenticated;
        revoke all on function public.hf_ingest_scene_hashes(text, text, text, text, bigint, integer) from anon, authenticated;
        revoke all on function public.hf_ingest_set_duplicates(jsonb) from anon, authenticated;
    end if;
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        grant execute on function public.hf_ingest_upsert_scenes(jsonb) to service_role;
        grant execute on function public.hf_ingest_scene_hashes(text, text, text, text, bigint, integer) to service_role;
        grant execute on function public.hf_ingest_set_duplicates(jsonb) to service_role;
    end if;
    -- The app's signed-in users read (never write) scenes and jobs; anon reads nothing.
    if exists (select 1 from pg_roles where rolname = 'authenticated') then
        drop policy if exists "signed-in users read scenes" on public.scenes;
        create policy "signed-in users read scenes" on public.scenes for select to authenticated using (true);
        drop policy if exists "signed-in users read jobs" on public.jobs;
        create policy "signed-in users read jobs" on public.jobs for select to authenticated using (true);
        grant select on public.scenes, public.jobs to authenticated;
    end if;
    -- Realtime: the app subscribes to changes of its job rows instead of polling GET /jobs/{id}.
    if exists (select 1 from pg_publication where pubname = 'supabase_realtime')
       and not exists (select 1 from pg_publication_tables
                        where pubname = 'supabase_realtime' and schemaname = 'public' and tablename = 'jobs') then
        alter publication supabase_realtime add table public.jobs;
    end if;
end
$$;
