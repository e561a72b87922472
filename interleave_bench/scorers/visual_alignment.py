"""r_v, visual-text alignment: each generated image against the text segment that precedes it.

The paper scores every image with ImageReward against the text right before it (the instruction
when the answer opens with an image) and averages over the answer's images; CLIP was its weaker
ablation. Backends (``backend``):

- ``imagereward``: the ``image-reward`` package (``import ImageReward``) with local weights. It
  cannot be downloaded at run time here; place the files offline: ``ImageReward.pt`` and
  ``med_config.json`` (from the THUDM/ImageReward model repository) in one folder given as
  ``imagereward_model`` (or ``$IBENCH_IMAGEREWARD_MODEL``), and the ``bert-base-uncased``
  tokenizer in the Hugging Face cache (its BLIP text encoder loads it by name; set
  ``HF_HUB_OFFLINE=1``). Per image: ``sigmoid(ImageReward score)``.
- ``clip``: a local CLIP folder (``clip_model`` or ``$IBENCH_CLIP_MODEL``). Per image:
  ``(1 + cos) / 2``.
- ``auto`` (default): ImageReward when the package imports and its weights folder is set, else
  CLIP. The backend used is recorded in every judgment (``metadata["backend"]``).

Both map to [0, 1], strictly above 0 for any real image, so an answer **without images** gets the
minimum, 0.0 (an ``ok`` judgment, not ``None``): a text-only answer is punished, never dropped.
An image that cannot be decoded also counts 0 (it is a failed image, not a judge failure).
``None`` (an ``error`` judgment) is left for a failed generation or a backend that cannot load.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..media import DEFAULT_LIMITS, ImageError, ImageLimits, ImageStore, load_ref
from ..protocols import ProtocolSpec
from ..types import ImageRef, Interleaved, Judgment, Prediction, Sample
from .base import Scorer, check_aligned
from .similarity import ClipScoreScorer, _LazyModel, _resolve_device

IMAGEREWARD_ENV = "IBENCH_IMAGEREWARD_MODEL"
BACKENDS = ("auto", "imagereward", "clip")
MINIMUM = 0.0


def image_contexts(sample: Sample, output: Interleaved) -> list[tuple[str, ImageRef | None]]:
    """(text before it, image) for each answer image: the nearest non-blank answer text segment
    before the image, or the instruction's text when none precedes it."""
    instruction = sample.input.text.strip()
    last = ""
    out: list[tuple[str, ImageRef | None]] = []
    for seg in output:
        if seg.is_image:
            out.append((last or instruction, seg.image))
        elif (seg.text or "").strip():
            last = (seg.text or "").strip()
    return out


def imagereward_available(folder: str | os.PathLike[str] | None = None) -> bool:
    """True when the ``image-reward`` package imports and its weights folder (``folder``, else
    ``$IBENCH_IMAGEREWARD_MODEL``) exists."""
    try:
        import ImageReward  # noqa: F401
    except Exception:  # noqa: BLE001 - any failure to import means "not available"
        return False
    folder = folder or os.environ.get(IMAGEREWARD_ENV)
    return bool(folder) and Path(folder).is_dir()


class VisualAlignmentScorer(Scorer):
    """r_v: mean per-image alignment with the preceding text (see the module notes).

    Args:
        backend: ``auto``, ``imagereward`` or ``clip``.
        clip_model: local CLIP folder (default ``$IBENCH_CLIP_MODEL``).
        imagereward_model: folder with ``ImageReward.pt`` and ``med_config.json``.
        store, limits: where image references resolve, and the decoding limits.
    """

    name = "visual_alignment"
    protocol_version = "1"

    def __init__(
        self,
        *,
        backend: str = "auto",
        clip_model: str | os.PathLike[str] | None = None,
        imagereward_model: str | os.PathLike[str] | None = None,
        device: str | None = None,
        store: ImageStore | None = None,
        limits: ImageLimits = DEFAULT_LIMITS,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        ir_folder = imagereward_model or os.environ.get(IMAGEREWARD_ENV)
        if backend == "auto":
            backend = "imagereward" if ir_folder and imagereward_available(ir_folder) else "clip"
        self.backend = backend
        self.imagereward_model = None if not ir_folder else Path(ir_folder)
        self.device = device
        self.store = store
        self.limits = limits
        self._clip = ClipScoreScorer(clip_model, device=device, w=1.0, store=store, limits=limits)
        self._ir = _LazyModel(self._load_imagereward)

    def _load_imagereward(self) -> Any:
        import ImageReward as RM  # the image-reward package

        folder = self.imagereward_model
        if folder is None or not (folder / "ImageReward.pt").is_file():
            raise RuntimeError(
                f"imagereward backend: put ImageReward.pt and med_config.json in a folder and "
                f"pass imagereward_model (or ${IMAGEREWARD_ENV})"
            )
        return RM.load(
            str(folder / "ImageReward.pt"),
            device=_resolve_device(self.device),
            med_config=str(folder / "med_config.json"),
        )

    # ------------------------------------------------------------------ one image at a time

    def _image(self, ref: ImageRef | None) -> Any:
        if ref is None or ref.missing:
            raise ImageError("image missing (it failed to decode)")
        return load_ref(ref, self.store, self.limits).convert("RGB")

    def _values(self, pairs: Sequence[tuple[str, Any]]) -> list[float]:
        """Alignment in [0, 1] of each decoded (text, image) pair."""
        if not pairs:
            return []
        if self.backend == "imagereward":
            model = self._ir.get()
            return [1.0 / (1.0 + math.exp(-float(model.score(t, img)))) for t, img in pairs]
        texts = list(dict.fromkeys(t for t, _ in pairs))
        t_emb = self._clip._embed_texts(texts)
        i_emb = self._clip._embed_images([img for _, img in pairs])
        row = {t: k for k, t in enumerate(texts)}
        return [
            (1.0 + max(-1.0, min(1.0, float((e * t_emb[row[t]]).sum())))) / 2.0
            for (t, _), e in zip(pairs, i_emb, strict=True)
        ]

    def _score_all(
        self, jobs: list[tuple[int, list[tuple[str, ImageRef | None]]]]
    ) -> dict[int, list[float | str]]:
        """Per answer: a value per image, or the reason an image counts as the minimum."""
        decoded: list[tuple[int, int, str, Any]] = []
        found: dict[int, list[float | str]] = {}
        for i, ctx in jobs:
            found[i] = []
            for k, (text, ref) in enumerate(ctx):
                try:
                    decoded.append((i, k, text, self._image(ref)))
                    found[i].append(math.nan)
                except ImageError as e:
                    found[i].append(f"image {k}: {e}")
        values = self._values([(t, img) for _, _, t, img in decoded])
        for (i, k, _, _), v in zip(decoded, values, strict=True):
            found[i][k] = v
        return found

    def score_image(self, preceding_text: str, image: ImageRef | None) -> float:
        """One image against the text before it (a process-reward step); 0.0 when it is missing
        or cannot be decoded."""
        try:
            img = self._image(image)
        except ImageError:
            return MINIMUM
        return self._values([(preceding_text, img)])[0]

    async def ascore_image(self, preceding_text: str, image: ImageRef | None) -> float:
        return await asyncio.to_thread(self.score_image, preceding_text, image)

    async def ascore(
        self, samples: Sequence[Sample], predictions: Sequence[Prediction]
    ) -> list[Judgment]:
        check_aligned(samples, predictions)
        out: list[Judgment | None] = [None] * len(samples)
        jobs: list[tuple[int, list[tuple[str, ImageRef | None]]]] = []
        for i, (s, p) in enumerate(zip(samples, predictions, strict=True)):
            ctx = image_contexts(s, p.output)
            if p.error:
                out[i] = self.error(s.id, f"generation failed: {p.error}")
            elif not ctx:
                out[i] = self.ok(
                    s.id,
                    MINIMUM,
                    {"visual_alignment": MINIMUM},
                    metadata={"backend": self.backend, "images": 0, "no_image": True},
                )
            else:
                jobs.append((i, ctx))
        if jobs:
            try:
                found = await asyncio.to_thread(self._score_all, jobs)
            except Exception as e:  # noqa: BLE001 - a backend that cannot load is a judge error
                for i, _ in jobs:
                    out[i] = self.error(samples[i].id, f"{self.backend} backend failed: {e}")
                return [j for j in out if j is not None]
            for i, ctx in jobs:
                per = found[i]
                values = [v if isinstance(v, float) else MINIMUM for v in per]
                overall = sum(values) / len(values)
                out[i] = self.ok(
                    samples[i].id,
                    overall,
                    {"visual_alignment": overall},
                    metadata={
                        "backend": self.backend,
                        "images": len(per),
                        "per_image": values,
                        "failed_images": [v for v in per if isinstance(v, str)],
                        "texts": [t for t, _ in ctx],
                    },
                )
        return [j for j in out if j is not None]


def build(opts: Any, engine: Any) -> VisualAlignmentScorer:
    extra = dict(getattr(opts, "extra", None) or {})
    return VisualAlignmentScorer(
        backend=str(extra.get("backend", "auto")),
        clip_model=getattr(opts, "clip_model", None),
        imagereward_model=extra.get("imagereward_model"),
    )


SPEC = ProtocolSpec(
    name="visual_alignment",
    kind="offline",
    builder=build,
    description="offline: each image vs the text before it (r_v; ImageReward, else CLIP)",
)
