"""The one settings object: every knob of hf-ingest, read from the environment or `.env`.

Secrets are `SecretStr` so they never render in logs, reprs or errors by accident.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from hf_ingest.derivatives import DerivativeSizes


class Settings(BaseSettings):
    """Configuration shared by the flow, the CLI and the HTTP trigger."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    database_url: SecretStr = SecretStr("sqlite:///.data/hf_ingest.db")
    supabase_url: str | None = None
    supabase_service_role_key: SecretStr | None = None

    storage_url: str = ".data/objects"
    s3_endpoint_url: str | None = None
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    public_base_url: str | None = None

    storage_block: str | None = None  # name of a saved R2Bucket block (blocks/prefect_blocks.py)
    supabase_block: str | None = None  # name of a saved SupabaseCredentials block

    webhook_secret: SecretStr | None = None
    max_request_bytes: int = Field(default=64 * 1024, gt=0)  # larger trigger bodies: 413 before parsing
    auth_failures_per_minute: int = Field(default=20, gt=0)  # then 429 for that client (a valid token passes)
    local_dataset_root: Path | None = None
    hf_token: SecretStr | None = None

    # Data path tuning: see README "Performance".
    max_image_pixels: int = Field(default=89_478_485, gt=0)  # Pillow's own bomb threshold
    max_image_bytes: int = Field(default=100 * 2**20, gt=0)  # larger images: too_large, the rest never read
    batch_size: int = Field(default=8192, gt=0, le=100_000)
    batch_max_bytes: int = Field(default=64 * 2**20, gt=0)  # a batch closes at batch_size rows or this many bytes
    max_in_flight_batches: int = Field(default=3, gt=0, le=64)
    derivatives: bool = True  # thumbnail, preview, placeholder and pHash of every image (hf_ingest/derivatives.py)
    thumbnail_size: int = Field(default=256, gt=0, le=4096)  # longest side of the thumbnail (px)
    preview_size: int = Field(default=1024, gt=0, le=8192)  # longest side of the preview (px)
    near_duplicate_distance: int = Field(default=10, ge=0, le=24)  # pHash bits apart that still group (0: exact)
    store_concurrency: int = Field(default=128, gt=0, le=1024)  # uploads in flight per process (S3/R2)
    s3_client: Literal["obstore", "s3fs"] = "obstore"  # the S3 upload engine (see hf_ingest/storage.py)
    shard_rows: int = Field(default=50_000, gt=0)  # the least a shard holds: a deployment run of 2x this is sharded
    shard_bytes: int = Field(default=512 * 2**20, gt=0)  # ...or of this much parquet data, whichever cuts more
    max_shards: int = Field(default=64, gt=0, le=1000)  # ...one per slot that can run it, at most this many
    shard_attempts: int = Field(default=3, gt=0, le=20)  # a shard's child runs before the import fails
    worker_limit: int | None = Field(default=None, gt=0)  # `hf-ingest worker`: flow runs at once (default: cores)
    progress_interval_seconds: float = Field(default=2.0, ge=0)
    outage_seconds: float = Field(default=120.0, gt=0)  # an import waits this long for the Prefect API or the database
    reconcile_interval_seconds: float = Field(default=15.0, ge=0)  # 0: the trigger runs no reconciler
    reconcile_queued_grace_seconds: float = Field(default=60.0, ge=0)  # a queued job without a run waits this long

    @property
    def derivative_sizes(self) -> DerivativeSizes | None:
        """The derivatives' sizes, or None where DERIVATIVES is off."""
        return DerivativeSizes(self.thumbnail_size, self.preview_size) if self.derivatives else None

    @property
    def uses_supabase(self) -> bool:
        """Supabase's REST client is used only when both its URL and key are configured."""
        return bool(self.supabase_url and self.supabase_service_role_key)

    def secret_values(self) -> list[str]:
        """Every configured secret in clear text, so log and error scrubbing can remove them."""
        values: list[str] = []
        for secret in (
            self.supabase_service_role_key,
            self.aws_access_key_id,
            self.aws_secret_access_key,
            self.webhook_secret,
            self.hf_token,
        ):
            if secret is not None and secret.get_secret_value():
                values.append(secret.get_secret_value())
        password = _url_password(self.database_url.get_secret_value())
        if password:
            values.append(password)
        return values


def _url_password(url: str) -> str | None:
    """The password inside a SQLAlchemy URL, if any."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).password
    except ArgumentError:
        return None


def env_file() -> str | None:
    """The `.env` file settings are read from: `.env` in the working directory, or HF_INGEST_ENV_FILE
    (empty: none, as the test suite runs)."""
    return os.environ.get("HF_INGEST_ENV_FILE", ".env") or None


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, with any configured Prefect Blocks applied (`runtime.reset()` forgets them)."""
    settings = Settings(_env_file=env_file())  # type: ignore[call-arg]
    if settings.storage_block or settings.supabase_block:
        from blocks.prefect_blocks import apply_blocks

        settings = apply_blocks(settings)
    return settings
