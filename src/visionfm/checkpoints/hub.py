"""``hf-hub:ORG/NAME[@REVISION][:FILE]`` weights references, resolved through ``huggingface_hub``.

The file is fetched with ``hf_hub_download`` into huggingface_hub's own cache (``HF_HUB_CACHE`` / ``HF_HOME``), so
a reference downloads once and then resolves from the cache; ``HF_HUB_OFFLINE=1`` resolves from the cache only;
gated repositories (every RETFound release) need a token: ``HF_TOKEN`` or ``huggingface-cli login``.
Without ``:FILE`` the first of :data:`DEFAULT_FILES` present in the repository is used.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import UserError

__all__ = ["DEFAULT_FILES", "HF_PREFIX", "is_hub_reference", "parse_hub_reference", "resolve_weights_path"]

HF_PREFIX = "hf-hub:"
# RETFound publishes YukunZhou/<NAME> with <NAME>.pth; visionfm exports and most others use model.safetensors.
DEFAULT_FILES = ("model.safetensors", "{name}.pth", "{name}.safetensors", "pytorch_model.bin")
_REF = re.compile(r"^hf-hub:(?P<repo>[\w.\-]+/[\w.\-]+)(?:@(?P<rev>[\w.\-/]+?))?(?::(?P<file>[^:]+))?$")


def is_hub_reference(weights: object) -> bool:
    """Whether ``weights`` is an ``hf-hub:`` string (a path object never is)."""
    return isinstance(weights, str) and weights.startswith(HF_PREFIX)


def parse_hub_reference(ref: str) -> tuple[str, str | None, str | None]:
    """``hf-hub:ORG/NAME[@REV][:FILE]`` -> (repo id, revision or None, file or None).

    Raises:
        UserError: the reference is malformed (the message shows the expected form).
    """
    m = _REF.match(ref)
    if not m:
        raise UserError(
            f"{ref!r}: not a Hugging Face Hub reference; expected hf-hub:ORG/NAME[@REVISION][:FILE], "
            "e.g. hf-hub:YukunZhou/RETFound_mae_natureCFP:RETFound_mae_natureCFP.pth"
        )
    return m["repo"], m["rev"], m["file"]


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _download(repo: str, filename: str, revision: str | None) -> str:
    from huggingface_hub import hf_hub_download

    # Read the environment now (huggingface_hub reads it once, at import), so a later HF_HUB_OFFLINE/HF_HUB_CACHE holds.
    return hf_hub_download(
        repo,
        filename,
        revision=revision,
        cache_dir=os.environ.get("HF_HUB_CACHE") or None,
        local_files_only=_offline(),
        token=os.environ.get("HF_TOKEN") or None,
    )


def resolve_weights_path(weights: str | os.PathLike) -> Path:
    """A local path for ``weights``: an ``hf-hub:`` reference is downloaded (or found in the cache); any other value
    is returned as a path unchanged.

    Raises:
        UserError: malformed reference, unknown or gated repository, file not in it, or not cached while offline.
    """
    if not is_hub_reference(weights):
        return Path(weights)
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo, rev, file = parse_hub_reference(str(weights))
    name = repo.split("/", 1)[1]
    candidates = [file] if file else [f.format(name=name) for f in DEFAULT_FILES]
    for i, candidate in enumerate(candidates):
        try:
            return Path(_download(repo, candidate, rev))
        except GatedRepoError:
            raise UserError(
                f"{weights}: {repo} is a gated repository; accept its conditions on huggingface.co and "
                "set HF_TOKEN (or run `huggingface-cli login`)"
            ) from None
        except RepositoryNotFoundError:
            raise UserError(f"{weights}: repository {repo} not found (or private: set HF_TOKEN)") from None
        except RevisionNotFoundError:
            raise UserError(f"{weights}: revision {rev!r} not found in {repo}") from None
        except (EntryNotFoundError, LocalEntryNotFoundError) as e:
            if i + 1 < len(candidates):
                continue
            where = "in the local cache (HF_HUB_OFFLINE is set)" if _offline() else f"in {repo}"
            tried = ", ".join(candidates)
            if isinstance(e, LocalEntryNotFoundError) and not _offline():
                where = "in the cache, and the Hub could not be reached"
            raise UserError(f"{weights}: no {tried} {where}; name the file: hf-hub:{repo}:FILE") from None
    raise AssertionError("unreachable")
