"""Downloads from the Hugging Face Hub, pinned to a commit and recorded beside the data.

The token comes from the environment or the user's ``hf auth login`` (huggingface_hub reads both);
it is never passed on a command line, logged or written to disk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .problems import DataError

if TYPE_CHECKING:
    from .base import HubSpec


def download_snapshot(
    spec: HubSpec, dest: Path, revision: str | None = None, *, benchmark: str = ""
) -> str:
    """Download the files of ``spec`` into ``dest``; return the commit hash it was pinned to."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub import errors as hf_errors

    from .archives import SOURCE_FILE, write_file

    url = (
        f"https://huggingface.co/{'datasets/' if spec.repo_type == 'dataset' else ''}{spec.repo_id}"
    )
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise DataError(
            f"cannot download {spec.repo_id}: HF_HUB_OFFLINE is set; pass a local "
            "folder with --path instead"
        )
    try:
        endpoint = os.environ.get("HF_ENDPOINT") or None  # read now, not at import time
        api = HfApi(endpoint=endpoint)
        commit = api.repo_info(spec.repo_id, repo_type=spec.repo_type, revision=revision).sha
        snapshot_download(
            spec.repo_id,
            repo_type=spec.repo_type,
            revision=commit,
            local_dir=dest,
            endpoint=endpoint,
            allow_patterns=list(spec.allow_patterns),
        )
    except hf_errors.GatedRepoError:
        raise DataError(
            f"{spec.repo_id} is gated: accept its terms at {url}, then log in with "
            "`hf auth login` or set HF_TOKEN"
        ) from None
    except hf_errors.RepositoryNotFoundError:
        raise DataError(
            f"{spec.repo_id} not found on the Hub (or you lack access: log in with "
            "`hf auth login` or set HF_TOKEN)"
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise DataError(f"{spec.repo_id}: revision {revision!r} not found") from None
    except (hf_errors.HfHubHTTPError, hf_errors.LocalEntryNotFoundError, OSError) as e:
        raise DataError(
            f"cannot download {spec.repo_id}: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    # a symlink planted under the provenance file's name is replaced, never written through
    meta = {"source": f"hf://{spec.repo_type}s/{spec.repo_id}", "revision": commit}
    write_file(dest, SOURCE_FILE, json.dumps(meta).encode())
    return str(commit)
