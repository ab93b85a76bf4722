"""What an import may ask for, checked the same way however the run starts: the trigger's body, a
Supabase webhook's row, a queued row the reconciler picks up, a deployment run from the Prefect UI or
`prefect deployment run`. A request that fails is never started; the reason says what to fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hf_ingest.hub import is_hub_id

NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"
REVISION_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$"  # a git ref name or a commit sha


class ImportRequest(BaseModel):
    """Import one split of a dataset."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"dataset": "owner/name", "split": "train", "revision": "main", "limit": 1000}]},
    )

    dataset: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="Hub id `owner/name`, or a folder inside LOCAL_DATASET_ROOT when that is configured",
    )
    config: str | None = Field(default=None, pattern=NAME_PATTERN, description="dataset configuration (subset)")
    split: str = Field(default="train", pattern=NAME_PATTERN)
    revision: str = Field(
        default="main",
        min_length=1,
        max_length=255,
        pattern=REVISION_PATTERN,
        description="branch, tag or commit sha of the Hub dataset; the import reads the commit it names when it starts",
    )
    image_column: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="default: the first column with the Image feature",
    )
    limit: int | None = Field(default=None, ge=1, le=1_000_000_000, description="import at most this many rows")

    @field_validator("revision")
    @classmethod
    def _no_parent_steps(cls, revision: str) -> str:
        if ".." in revision:
            raise ValueError("revision must not contain '..'")
        return revision




class InvalidImport(ValueError):
    """The request cannot be imported as it is; the message is the reason, for a 422 or a failed job."""


def validate_import(params: dict[str, Any], local_root: Path | None) -> dict[str, Any]:
    """`params` checked and normalised (a local folder resolved inside `local_root`), or `InvalidImport`."""
    try:
        request = ImportRequest.model_validate({k: v for k, v in params.items() if v is not None})
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}" for error in exc.errors()
        )
        raise InvalidImport(f"invalid import parameters: {reasons}"[:1000]) from None
    try:
        dataset = resolve_dataset(request.dataset, local_root)
    except ValueError as exc:
        raise InvalidImport(str(exc)) from None
    return {**request.model_dump(), "dataset": dataset}


def resolve_dataset(dataset: str, local_root: Path | None) -> str:
    """A Hub id as given, or a local folder resolved inside `local_root`; ValueError says why not."""
    if is_hub_id(dataset):
        return dataset
    if local_root is None:
        raise ValueError(
            "dataset must be a Hub id 'owner/name' (local folders are accepted only when LOCAL_DATASET_ROOT is set)"
        )
    root = local_root.expanduser().resolve()
    candidate = Path(dataset).expanduser()
    if not candidate.is_absolute():
        candidate = root / candidate
    try:
        resolved = candidate.resolve(strict=True)  # follows symlinks, collapses '..'
    except (OSError, RuntimeError):
        raise ValueError("dataset folder does not exist inside LOCAL_DATASET_ROOT") from None
    if not resolved.is_relative_to(root) or resolved == root:
        raise ValueError("dataset folder must lie inside LOCAL_DATASET_ROOT")
    if not resolved.is_dir():
        raise ValueError("dataset must be a folder in a Hub format (parquet with an Image column, or imagefolder)")
    return str(resolved)
