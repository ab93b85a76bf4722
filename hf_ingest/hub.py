"""The HuggingFace Hub as the import sees it: one commit per import, the token on every request,
and refusals that say what to do.

`HF_ENDPOINT` (a mirror, or the tests' Hub server) is read by `huggingface_hub` from the environment
when it is first imported, as HuggingFace defines it.
"""

from __future__ import annotations

import re
from typing import Any

from hf_ingest.transient import PermanentIngestError, http_status

HUB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$"
_REFUSED = {"RepositoryNotFoundError", "GatedRepoError", "RevisionNotFoundError", "DisabledRepoError"}


def hub_api(token: str | None) -> Any:
    from huggingface_hub import HfApi

    return HfApi(token=token or False)  # False: never fall back to a token saved on this machine


def hub_filesystem(token: str | None) -> Any:
    """The `hf://` filesystem, authenticated with the import's token (path-only rows are read through it)."""
    from huggingface_hub import HfFileSystem

    return HfFileSystem(token=token or False, skip_instance_cache=True)


def is_hub_id(dataset: str) -> bool:
    return re.fullmatch(HUB_ID_PATTERN, dataset) is not None and ".." not in dataset


def resolve_commit(dataset: str, revision: str, token: str | None) -> str:
    """The commit sha that `revision` (a branch, tag or sha) names now: the import reads only that commit."""
    if not is_hub_id(dataset):
        raise PermanentIngestError(f"{dataset!r} is neither a local dataset folder nor a Hub dataset id (owner/name)")
    try:
        return str(hub_api(token).dataset_info(dataset, revision=revision).sha)
    except Exception as exc:
        refusal = describe_refusal(exc, dataset, revision, token)
        if refusal is not None:
            raise PermanentIngestError(refusal) from None
        raise


def describe_refusal(exc: BaseException, dataset: str, revision: str, token: str | None) -> str | None:
    """What the Hub's refusal means for this import, or None if `exc` is not a refusal (maybe transient)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    status = http_status(exc)
    where = f"dataset {dataset!r} at revision {revision!r}"
    if "OfflineModeIsEnabled" in names:  # a setting of this process, not the Hub's answer: no retry changes it
        return f"{where} cannot be read: HF_HUB_OFFLINE is set in the worker's environment (unset it, or set it to 0)"
    if "GatedRepoError" in names or status == 403:
        return (
            f"{where} is gated: accept its terms on the Hub with the account whose HF_TOKEN the worker uses"
            + ("" if token else " (no HF_TOKEN is set)")
        )
    if "RevisionNotFoundError" in names:
        return f"{where}: no such revision (a branch, tag or commit sha of the dataset repository)"
    if names & _REFUSED or status in (401, 404):
        hint = "check the name and revision" + (
            "; if it is private, the HF_TOKEN's account must have access" if token
            else "; if it is private or gated, set HF_TOKEN"
        )
        return f"{where} was not found on the Hub ({hint})"
    return None
