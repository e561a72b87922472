"""Audit re-judging: a submission's judgments are only as good as the judge replies it wrote
itself, so recomputing its aggregate cannot catch a fabricated run. An audit re-sends a
seeded-random sample of the judged items (trusted samples from our loader, the submitted model
outputs) through the very scorer ``ibench score`` builds, with the same judge, and compares.

At temperature 0 a parsed integer score is reproducible, so the default tolerance is 0 (exact);
a judge served with sampling needs ``tolerance``. Images are taken only from the submission's own
content-addressed store, never from a path written in a submitted record.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Any

from ..media import ImageStore
from ..types import ImageRef, Interleaved, Judgment, Prediction, Sample, Segment
from .specs import BoardSpec

_SHOW = 50


@dataclass(frozen=True)
class AuditRequest:
    """What ``leaderboard submit --audit N`` re-judges with."""

    n: int
    judge_model: str
    judge_base_url: str | None = None
    judge_key_env: str = "OPENAI_API_KEY"
    judge_transport: str = "sdk"
    seed: int | None = None  # None: drawn at random (and recorded), so no one can predict it
    tolerance: float = 0.0
    protocol_file: Path | None = None
    allow_unofficial: bool = False


def choose(js: Sequence[Judgment], n: int, seed: int) -> list[Judgment]:
    """``n`` judged items (ok or invalid), drawn with ``seed`` from the ids in sorted order, so
    the same seed picks the same items whatever order the file holds them in."""
    pool = sorted((j for j in js if j.status in ("ok", "invalid")), key=lambda j: j.sample_id)
    return sorted(Random(seed).sample(pool, min(n, len(pool))), key=lambda j: j.sample_id)


def _stored(ref: ImageRef, store: ImageStore, root: str) -> ImageRef:
    """The submission's own copy of an image, or a missing reference (a submitted path is never
    opened: it could name any file of the auditing machine)."""
    if ref.sha256 is not None and (p := store.find(ref.sha256)) is not None:
        real = os.path.realpath(p)
        if real.startswith(root + os.sep) and not p.is_symlink():
            return ImageRef(sha256=ref.sha256, path=real, source=ref.source)
    return ImageRef(sha256=ref.sha256, source=ref.source or ref.path, missing=True)


def confined(pred: Prediction, images: Path) -> Prediction:
    """``pred`` with every image re-pointed into the submission's ``images/`` store."""
    store, root = ImageStore(images), os.path.realpath(images)
    segs = [
        Segment.of_image(_stored(s.image, store, root)) if s.image is not None else s
        for s in pred.output
    ]
    return Prediction(
        pred.sample_id, pred.model, Interleaved(segs), pred.settings, pred.timing, pred.error
    )


def _show(j: Judgment) -> str:
    if j.status != "ok":
        return j.status + (f" ({j.reason})" if j.reason else "")
    if len(j.scores) <= 1:
        return f"{j.overall:g}" if j.overall is not None else "none"
    parts = ", ".join(f"{k} {v:g}" for k, v in sorted(j.scores.items()) if v is not None)
    return f"{j.overall:g} ({parts})" if j.overall is not None else parts


def agrees(submitted: Judgment, rejudged: Judgment, tolerance: float) -> bool:
    """Same status; for ok items every score and the overall within ``tolerance``."""
    if submitted.status != rejudged.status:
        return False
    if submitted.status != "ok":
        return True
    pairs = [(submitted.overall, rejudged.overall)]
    pairs += [(submitted.scores.get(k), rejudged.scores.get(k)) for k in
              set(submitted.scores) | set(rejudged.scores)]  # fmt: skip
    for a, b in pairs:
        if (a is None) != (b is None):
            return False
        if a is not None and abs(float(a) - float(b)) > tolerance + 1e-9:  # type: ignore[arg-type]
            return False
    return True


def _scorer(spec: BoardSpec, req: AuditRequest, bench: str):
    """The scorer ``ibench score --protocol <spec.scorer>`` would build (no cache: a cached reply
    would be the auditor's own earlier answer, not the judge's)."""
    from ..config import JudgeSpec
    from ..scoring import ScoreConfig, build_engine, build_scorer

    opts = ScoreConfig(
        bench=bench,
        predictions=Path("."),
        protocol=spec.scorer,
        out=Path("."),
        protocol_file=req.protocol_file,
        allow_unofficial=req.allow_unofficial,
        judge=JudgeSpec(
            judge_model=req.judge_model,
            judge_base_url=req.judge_base_url,
            judge_key_env=req.judge_key_env,
            judge_transport=req.judge_transport,  # type: ignore[arg-type]
            concurrency=min(16, max(1, req.n)),
            max_retries=3,
        ),
    )
    return build_scorer(opts, build_engine(opts, with_cache=False))


def run_audit(
    spec: BoardSpec,
    req: AuditRequest,
    *,
    bench: str,
    samples: Sequence[Sample],
    judgments: Sequence[Judgment],
    predictions: Sequence[Prediction],
    root: Path,
    judge: str | None,
    declared_hashes: dict[str, str],
) -> tuple[dict[str, Any] | None, list[str]]:
    """(the audit record for the row, problems). Any problem means the audit did not pass."""
    from ..benchmarks import DataError
    from ..judges.client import JudgeUnavailable
    from ..scorers.protocol_files import ProtocolError
    from ..scoring import ScoreError

    if judge is None or req.judge_model != judge:
        return None, [
            f"audit: --judge-model {req.judge_model!r} is not the judge the run used ({judge!r}); "
            "an audit re-judges with the same judge"
        ]
    seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
    chosen = choose(judgments, req.n, seed)
    if not chosen:
        return None, ["audit: the run has no judged item to re-judge"]
    by_id = {p.sample_id: p for p in predictions}
    lacking = [j.sample_id for j in chosen if j.sample_id not in by_id]
    if lacking:
        return None, [
            f"audit (seed {seed}): no prediction in predictions.jsonl for {', '.join(lacking)}; "
            "an audited run must hold the model outputs it was judged on"
        ]
    try:
        scorer = _scorer(spec, req, bench)
    except (DataError, ProtocolError, ScoreError, OSError) as e:
        return None, [f"audit: cannot build the {spec.scorer} scorer: {e}"]
    prompts = getattr(scorer, "prompts", None) or getattr(scorer, "prompt", None)
    mine = dict(getattr(prompts, "hashes", None) or {})
    differ = sorted(k for k, v in mine.items() if declared_hashes.get(k) != v)
    if differ:
        return None, [
            f"audit: the audit's prompts differ from those the run declares ({', '.join(differ)});"
            " pass --protocol-file with the prompts the run used"
        ]
    sample_of = {s.id: s for s in samples}
    ids = [j.sample_id for j in chosen]
    outputs = [confined(by_id[i], root / "images") for i in ids]
    try:
        rejudged = scorer.score([sample_of[i] for i in ids], outputs)
    except (JudgeUnavailable, OSError) as e:
        return None, [f"audit: the judge could not be reached ({e}); nothing was written"]
    failed = [f"{r.sample_id} ({r.reason})" for r in rejudged if r.status == "error"]
    if failed:
        return None, [
            f"audit (seed {seed}): the judge failed on {len(failed)} item(s): "
            f"{', '.join(failed[:_SHOW])}; rerun the audit"
        ]
    bad = [
        f"{j.sample_id}: submitted {_show(j)}, re-judged {_show(r)}"
        for j, r in zip(chosen, rejudged, strict=True)
        if not agrees(j, r, req.tolerance)
    ]
    record = {
        "n": len(chosen),
        "seed": seed,
        "judge_model": req.judge_model,
        "agreed": len(chosen) - len(bad),
        "tolerance": req.tolerance,
        "sample_ids": ids,
    }
    if bad:
        more = f"; and {len(bad) - _SHOW} more" if len(bad) > _SHOW else ""
        return record, [
            f"audit failed (seed {seed}, judge {req.judge_model}, tolerance {req.tolerance:g}): "
            f"{len(bad)} of {len(chosen)} re-judged items disagree with the submission: "
            + "; ".join(bad[:_SHOW])
            + more
        ]
    return record, []
