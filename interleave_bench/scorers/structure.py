"""Structure scorer: does the answer have the right shape (which segments, how many images, where)?

It needs no model and no network, so it is deterministic and cheap enough to serve as an RL reward.
Every sub-score gives partial credit, so that a policy can climb towards a target shape such as
"exactly one image followed by text" instead of facing an all-or-nothing signal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..protocols import ProtocolSpec
from ..types import Interleaved, Judgment, Prediction, Sample
from .base import Scorer, check_aligned


def structure_of(seq: Interleaved, *, collapse_text: bool = True) -> str:
    """The type string of ``seq`` ("T"/"I" per segment), blank text segments left out.

    With ``collapse_text`` adjacent text segments count as one "T": where a model splits its prose
    into segments is arbitrary and should not change the score.
    """
    letters = [
        "I" if s.is_image else "T" for s in seq if s.is_image or (s.text or "").strip() != ""
    ]
    return _collapse("".join(letters)) if collapse_text else "".join(letters)


def _collapse(structure: str) -> str:
    out: list[str] = []
    for c in structure:
        if not (c == "T" and out and out[-1] == "T"):
            out.append(c)
    return "".join(out)


def levenshtein(a: str, b: str) -> int:
    """Edit distance with unit costs (structure strings are short, so plain DP is enough)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def type_sequence_score(pred: str, ref: str) -> float:
    """1 - normalised edit distance: 1.0 only for the same string, 0.0 when nothing is shared."""
    return 1.0 - levenshtein(pred, ref) / max(len(pred), len(ref), 1)


def image_count_score(pred: int, ref: int) -> float:
    return 1.0 - abs(pred - ref) / max(pred, ref, 1)


def _image_positions(structure: str) -> list[float]:
    """Relative position in (0, 1) of each image: the midpoint of its slot in the sequence."""
    n = len(structure)
    return [(i + 0.5) / n for i, c in enumerate(structure) if c == "I"]


def order_score(pred: str, ref: str) -> float:
    """Whether images sit where the reference puts them relative to the text.

    The k-th predicted image is paired with the k-th reference image and each pair scores
    1 - |difference of relative positions|; the score is the mean over pairs. Unpaired images are
    the image-count score's business. No images on either side: 1.0; on one side only: 0.0.
    """
    p, r = _image_positions(pred), _image_positions(ref)
    if not p and not r:
        return 1.0
    if not p or not r:
        return 0.0
    pairs = list(zip(p, r, strict=False))
    return sum(1.0 - abs(a - b) for a, b in pairs) / len(pairs)


def range_score(count: int, min_images: int | None, max_images: int | None) -> float:
    """1.0 inside [min_images, max_images], else decreasing with the distance to the range."""
    if min_images is not None and count < min_images:
        return 1.0 - (min_images - count) / max(min_images, 1)
    if max_images is not None and count > max_images:
        return 1.0 - (count - max_images) / count
    return 1.0


class StructureScorer(Scorer):
    """Compare an answer's segment structure with the gold answer's, or with an expected one.

    Args:
        expected: a type string such as ``"IT"`` (one image, then text), used for samples without
            a (non-empty) gold answer, or for all samples when ``prefer_gold`` is false.
        min_images, max_images: an image-count requirement, scored as ``image_range``; it applies
            to every sample, with or without a reference structure.
        collapse_text: count adjacent text segments as one (see ``structure_of``).
        prefer_gold: use ``sample.gold`` when it has segments; otherwise ``expected``.

    Sub-scores (each in [0, 1]): ``type_sequence``, ``image_count`` and ``order`` against the
    reference structure, and ``image_range`` when a range is set. ``overall`` is their mean;
    ``metadata["exact"]`` is true when every sub-score is 1. An empty answer is a real answer and
    scores low; a prediction whose generation failed is an ``error`` judgment.
    """

    name = "structure"
    protocol_version = "1"

    def __init__(
        self,
        expected: str | None = None,
        *,
        min_images: int | None = None,
        max_images: int | None = None,
        collapse_text: bool = True,
        prefer_gold: bool = True,
    ) -> None:
        if expected is not None:
            expected = expected.strip().upper()
            if any(c not in "TI" for c in expected):
                raise ValueError(f"expected structure {expected!r} may only hold 'T' and 'I'")
            if collapse_text:
                expected = _collapse(expected)
        for label, bound in (("min_images", min_images), ("max_images", max_images)):
            if bound is not None and bound < 0:
                raise ValueError(f"{label} must be >= 0, got {bound}")
        if min_images is not None and max_images is not None and min_images > max_images:
            raise ValueError(f"min_images {min_images} > max_images {max_images}")
        self.expected = expected
        self.min_images = min_images
        self.max_images = max_images
        self.collapse_text = collapse_text
        self.prefer_gold = prefer_gold

    def _reference(self, sample: Sample) -> tuple[str | None, str | None]:
        """(reference structure, where it came from) or (None, None) when there is none."""
        has_gold = sample.gold is not None and len(sample.gold) > 0
        if has_gold and (self.prefer_gold or self.expected is None):
            assert sample.gold is not None
            return structure_of(sample.gold, collapse_text=self.collapse_text), "gold"
        if self.expected is not None:
            return self.expected, "expected"
        return None, None

    def score_one(self, sample: Sample, prediction: Prediction) -> Judgment:
        if prediction.error:
            return self.error(sample.id, f"generation failed: {prediction.error}")
        ref, source = self._reference(sample)
        has_range = self.min_images is not None or self.max_images is not None
        if ref is None and not has_range:
            return self.invalid(sample.id, "no gold answer and no expected structure to compare")
        pred = structure_of(prediction.output, collapse_text=self.collapse_text)
        n_pred = pred.count("I")
        scores: dict[str, float | None] = {}
        if ref is not None:
            scores["type_sequence"] = type_sequence_score(pred, ref)
            scores["image_count"] = image_count_score(n_pred, ref.count("I"))
            scores["order"] = order_score(pred, ref)
        if has_range:
            scores["image_range"] = range_score(n_pred, self.min_images, self.max_images)
        values = [v for v in scores.values() if v is not None]
        overall = sum(values) / len(values)
        return self.ok(
            sample.id,
            overall,
            scores,
            metadata={
                "exact": all(v == 1.0 for v in values),
                "predicted": pred,
                "reference": ref,
                "reference_source": source,
            },
        )

    async def ascore(
        self, samples: Sequence[Sample], predictions: Sequence[Prediction]
    ) -> list[Judgment]:
        check_aligned(samples, predictions)
        return [self.score_one(s, p) for s, p in zip(samples, predictions, strict=True)]


def build(opts: Any, engine: Any) -> StructureScorer:
    return StructureScorer()


SPEC = ProtocolSpec(
    name="structure",
    kind="offline",
    builder=build,
    description="offline: does the answer interleave text and images as asked",
)
