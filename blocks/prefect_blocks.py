"""Prefect Blocks for the R2/S3 bucket and the Supabase credentials.

On a Prefect server (or Prefect Cloud) these hold the configuration instead of environment
variables: save a block once (UI or code), then point the workers at it by name with
`STORAGE_BLOCK=<name>` and/or `SUPABASE_BLOCK=<name>`. Values in a block override the
matching environment settings; secrets stay `SecretStr` and show as `********` in the UI.
"""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks.settings import Settings


class R2Bucket(Block):
    """Cloudflare R2 (or any S3-compatible) bucket that hf-ingest stores images in."""

    _block_type_name = "hf-ingest R2 bucket"
    _block_type_slug = "hf-ingest-r2-bucket"
    _description = "Where hf-ingest stores images: s3://bucket/prefix on R2 or another S3-compatible store."

    storage_url: str = Field(description="s3://bucket/prefix")
    endpoint_url: str | None = Field(default=None, description="https://<account-id>.r2.cloudflarestorage.com")
    access_key_id: SecretStr
    secret_access_key: SecretStr
    public_base_url: str | None = Field(default=None, description="public URL prefix for scene urls")


class SupabaseCredentials(Block):
    """Supabase project URL and service role key for the jobs/scenes tables."""

    _block_type_name = "hf-ingest Supabase"
    _block_type_slug = "hf-ingest-supabase"
    _description = "Supabase REST credentials hf-ingest writes jobs and scenes with."

    url: str = Field(description="https://<project-ref>.supabase.co")
    service_role_key: SecretStr


def apply_blocks(settings: Settings) -> Settings:
    """`settings` with the values of the blocks named by STORAGE_BLOCK / SUPABASE_BLOCK, if any.

    Loaded with `_sync=True`: settings are read by sync code that can run on an event loop's thread
    (the async flow's hooks, the trigger's routes), where `Block.load` would return a coroutine."""
    update: dict[str, object] = {}
    if settings.storage_block:
        bucket = R2Bucket.load(settings.storage_block, _sync=True)
        update.update(
            storage_url=bucket.storage_url,
            s3_endpoint_url=bucket.endpoint_url,
            aws_access_key_id=bucket.access_key_id,
            aws_secret_access_key=bucket.secret_access_key,
            public_base_url=bucket.public_base_url or settings.public_base_url,
        )
    if settings.supabase_block:
        supabase = SupabaseCredentials.load(settings.supabase_block, _sync=True)
        update.update(supabase_url=supabase.url, supabase_service_role_key=supabase.service_role_key)
    return settings.model_copy(update=update) if update else settings
