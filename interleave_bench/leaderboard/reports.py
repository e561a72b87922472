"""The sample report of an accepted submission, rendered by our own report code from validated
records, never copied from the submission (whose ``report.html`` could be any HTML).

Images are looked up by content hash in the submission's own image store, or among the trusted
benchmark's input images; a path written in a submitted record is never opened, so a crafted
record cannot pull a file from the validating machine into a published page.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..media import ImageError, ImageStore, to_data_url
from ..report.html import render_report
from ..types import ImageRef, Result, Sample
from .runfiles import RunFiles

MAX_SIDE = 384


def _trusted_paths(samples: Sequence[Sample]) -> set[str]:
    out = set()
    for s in samples:
        for seq in (s.input, s.gold):
            for ref in seq.images if seq is not None else ():
                if ref.path and not ref.missing:
                    out.add(os.path.realpath(ref.path))
    return out


def regenerate_report(
    root: Path, samples: Sequence[Sample], run: RunFiles, result: Result, model: str
) -> str:
    """One self-contained HTML page for the submitted run."""
    store = ImageStore(root / "images")
    images_root = os.path.realpath(root / "images")
    trusted = _trusted_paths(samples)

    def load(ref: ImageRef) -> str:
        if ref.sha256 is not None and (p := store.find(ref.sha256)) is not None:
            real = os.path.realpath(p)
            if real.startswith(images_root + os.sep) and not p.is_symlink():
                return to_data_url(Path(real), max_side=MAX_SIDE, format="JPEG")
        if ref.path is not None and os.path.realpath(ref.path) in trusted:
            return to_data_url(Path(ref.path), max_side=MAX_SIDE, format="JPEG")
        raise ImageError("not in the submission's image store")

    ids = {s.id for s in samples}
    judgments = [j for _, j in run.judgments if j.sample_id in ids]
    return render_report(
        samples,
        [p for p in run.predictions if p.sample_id in ids],
        judgments,
        [result],
        {"model": model, "benchmark": result.benchmark, "judge": result.judge},
        image_loader=load,
        title=f"{model} on {result.benchmark}: submitted samples",
    )
