-- hf-ingest schema v4: keeping datasets current (a newer revision costs what changed).
--   scenes.removed_at, removed_in: set when a newer revision no longer has the scene's row (or its image is
--     no longer valid); a sync never deletes a scene (the app may still point at it), and clears both when a
--     later revision has the row again. The app lists current scenes with `removed_at is null`.
--   split_files: the data files each split's scenes were recorded from (content id, rows, first row), what
--     the next import compares with to read only what changed; written by the service role only.
-- Same columns as hf_ingest/jobstore/schema.py adds on SQLite/PostgreSQL. Apply with `supabase db push`.

alter table public.scenes add column if not exists removed_at timestamptz;
alter table public.scenes add column if not exists removed_in text;

create table if not exists public.split_files (
    dataset text not null,
    config text not null,
    split text not null,
    image_column text not null,
    position integer not null,
    name text not null,
    content_id text not null,
    rows bigint not null,
    first_row bigint not null,
    done boolean not null,
    revision text,
    fingerprint text not null,
    job_id uuid,
    updated_at timestamptz not null,
    arrow_schema text,  -- the file's Arrow schema (base64): a sync needs no footer read for it
    primary key (dataset, config, split, image_column, position)
);
alter table public.split_files enable row level security;  -- no policy: only the service role reads it

-- The upsert also brings a removed scene back (its row is in the split again).
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
               phash = coalesce(excluded.phash, case when t.sha256 = excluded.sha256 then t.phash end),
               removed_at = null, removed_in = null
         where t.revision is distinct from excluded.revision
            or t.sha256 <> excluded.sha256
            or t.metadata is distinct from excluded.metadata
            or (t.phash is null and excluded.phash is not null)
            or t.removed_at is not null
        returning t.id, (xmax = 0) as fresh
    )
    select count(*) filter (where fresh),
           count(*) filter (where not fresh),
           count(*) filter (where not fresh and id in (select id from lacking))
      from written;
$$;

-- Grouping reads only current scenes.
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
             and phash is not null and row_index > p_after_row and removed_at is null
           order by row_index
           limit p_limit
      ) page;
$$;

-- A sync, before it reads anything, in one transaction: move the scenes of rows that only moved
-- (p_moves: [{first_row, end_row, shift}]; a row keeps its id, the content moves), mark removed a row a move
-- lands on whose source had no scene and the rows at or after p_end_row, and make p_files the split's
-- recorded files (null: forget them). With p_check, only if the recorded files are still p_expected
-- ({fingerprint, files}), else the error 'hf_ingest: layout changed'. Returns {moved, removed}.
create or replace function public.hf_ingest_record_layout(
    p_dataset text, p_config text, p_split text, p_image_column text, p_fingerprint text, p_files jsonb,
    p_moves jsonb, p_end_row bigint, p_revision text, p_job uuid, p_check boolean, p_expected jsonb
)
returns jsonb
language plpgsql
security invoker
set search_path = public
as $$
declare
    v_now timestamptz := now();
    v_moved bigint := 0;
    v_removed bigint := 0;
    v_count bigint;
    v_orphans uuid[];
    v_current jsonb;
    v_fingerprint text;
begin
    if p_check then  -- only if the split's files are still those the sync planned from; one sync at a time
        perform pg_advisory_xact_lock(hashtextextended(p_dataset || '|' || p_config || '|' || p_split || '|' || p_image_column, 0));
        select coalesce(jsonb_agg(jsonb_build_object('name', name, 'content_id', content_id, 'rows', rows,
                                                     'first_row', first_row, 'done', done, 'revision', revision)
                                  order by position), '[]'::jsonb), max(fingerprint)
          into v_current, v_fingerprint
          from public.split_files
         where dataset = p_dataset and config = p_config and split = p_split and image_column = p_image_column;
        if v_current <> coalesce(p_expected -> 'files', '[]'::jsonb)
           or v_fingerprint is distinct from (p_expected ->> 'fingerprint') then
            raise exception 'hf_ingest: layout changed' using hint = 'another import of the split recorded its files; plan again';
        end if;
    end if;
    if p_moves is not null and jsonb_array_length(p_moves) > 0 then
        select coalesce(array_agg(t.id), '{}') into v_orphans  -- read before anything moves
          from public.scenes t
          join jsonb_to_recordset(p_moves) as m(first_row bigint, end_row bigint, shift bigint)
            on t.row_index >= m.first_row + m.shift and t.row_index < m.end_row + m.shift
         where t.dataset = p_dataset and t.config = p_config and t.split = p_split
           and (t.image_column = p_image_column or left(t.image_column, length(p_image_column) + 1) = p_image_column || '[')
           and t.removed_at is null
           and not exists (
               select 1 from public.scenes s
                where s.dataset = t.dataset and s.config = t.config and s.split = t.split
                  and s.image_column = t.image_column and s.row_index = t.row_index - m.shift and s.removed_at is null);
        with moved as (
            insert into public.scenes as t (
                id, job_id, dataset, config, split, image_column, row_index, object_key, url, sha256, content_type,
                width, height, bytes, metadata, revision, thumbnail_url, preview_url, placeholder, phash, created_at
            )
            select gen_random_uuid(), p_job, s.dataset, s.config, s.split, s.image_column, s.row_index + m.shift,
                   s.object_key, s.url, s.sha256, s.content_type, s.width, s.height, s.bytes, s.metadata, s.revision,
                   s.thumbnail_url, s.preview_url, s.placeholder, s.phash, v_now
              from public.scenes s
              join jsonb_to_recordset(p_moves) as m(first_row bigint, end_row bigint, shift bigint)
                on s.row_index >= m.first_row and s.row_index < m.end_row
             where s.dataset = p_dataset and s.config = p_config and s.split = p_split
               and (s.image_column = p_image_column or left(s.image_column, length(p_image_column) + 1) = p_image_column || '[')
               and s.removed_at is null
            on conflict (dataset, config, split, image_column, row_index) do update
               set job_id = excluded.job_id, object_key = excluded.object_key, url = excluded.url,
                   sha256 = excluded.sha256, content_type = excluded.content_type, width = excluded.width,
                   height = excluded.height, bytes = excluded.bytes, metadata = excluded.metadata,
                   revision = excluded.revision, thumbnail_url = excluded.thumbnail_url,
                   preview_url = excluded.preview_url, placeholder = excluded.placeholder, phash = excluded.phash,
                   duplicate_of = null, removed_at = null, removed_in = null
            returning 1
        )
        select count(*) into v_moved from moved;
        update public.scenes set removed_at = v_now, removed_in = p_revision
         where id = any(v_orphans) and removed_at is null;
        get diagnostics v_count = row_count;
        v_removed := v_removed + v_count;
    end if;
    if p_end_row is not null then
        update public.scenes set removed_at = v_now, removed_in = p_revision
         where dataset = p_dataset and config = p_config and split = p_split
           and (image_column = p_image_column or left(image_column, length(p_image_column) + 1) = p_image_column || '[')
           and row_index >= p_end_row and removed_at is null;
        get diagnostics v_count = row_count;
        v_removed := v_removed + v_count;
    end if;
    delete from public.split_files
     where dataset = p_dataset and config = p_config and split = p_split and image_column = p_image_column;
    if p_files is not null then
        insert into public.split_files (dataset, config, split, image_column, position, name, content_id, rows,
                                        first_row, done, revision, fingerprint, job_id, updated_at, arrow_schema)
        select p_dataset, p_config, p_split, p_image_column, (f.ordinality - 1)::integer, f.value ->> 'name',
               f.value ->> 'content_id', (f.value ->> 'rows')::bigint, (f.value ->> 'first_row')::bigint,
               (f.value ->> 'done')::boolean, f.value ->> 'revision', p_fingerprint, p_job, v_now, f.value ->> 'schema'
          from jsonb_array_elements(p_files) with ordinality as f(value, ordinality);
    end if;
    return jsonb_build_object('moved', v_moved, 'removed', v_removed);
end
$$;

-- Scenes whose image is no longer valid at the revision read (p_rows: [{image_column, row_index}]).
create or replace function public.hf_ingest_remove_scenes(
    p_dataset text, p_config text, p_split text, p_rows jsonb, p_revision text
)
returns bigint
language sql
security invoker
set search_path = public
as $$
    with gone as (
        update public.scenes t
           set removed_at = now(), removed_in = p_revision
          from jsonb_to_recordset(p_rows) as r(image_column text, row_index bigint)
         where t.dataset = p_dataset and t.config = p_config and t.split = p_split
           and t.image_column = r.image_column and t.row_index = r.row_index and t.removed_at is null
        returning 1
    )
    select count(*) from gone;
$$;

revoke all on function public.hf_ingest_upsert_scenes(jsonb) from public;
revoke all on function public.hf_ingest_record_layout(text, text, text, text, text, jsonb, jsonb, bigint, text, uuid, boolean, jsonb) from public;
revoke all on function public.hf_ingest_remove_scenes(text, text, text, jsonb, text) from public;

do $$
begin
    if exists (select 1 from pg_roles where rolname = 'anon') then
        revoke all on function public.hf_ingest_upsert_scenes(jsonb) from anon, authenticated;
        revoke all on function public.hf_ingest_record_layout(text, text, text, text, text, jsonb, jsonb, bigint, text, uuid, boolean, jsonb)
            from anon, authenticated;
        revoke all on function public.hf_ingest_remove_scenes(text, text, text, jsonb, text) from anon, authenticated;
        revoke all on public.split_files from anon, authenticated;
    end if;
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        grant execute on function public.hf_ingest_upsert_scenes(jsonb) to service_role;
        grant execute on function public.hf_ingest_record_layout(text, text, text, text, text, jsonb, jsonb, bigint, text, uuid, boolean, jsonb)
            to service_role;
        grant execute on function public.hf_ingest_remove_scenes(text, text, text, jsonb, text) to service_role;
        grant all on public.split_files to service_role;
    end if;
end
$$;
