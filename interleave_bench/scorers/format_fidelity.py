"""r_f, structural fidelity: rule-based checks that an answer's modalities are correctly delimited.

The paper's format reward checks the emitted token stream with the model's structure tokens; a
violation is penalised. Here each rule that fails is one violation:

- ``unopened_image``: image tokens not preceded (Janus) or started (Emu3) by an image-start token;
- ``unclosed_image``: an image span without its image-end token (the stream stopped inside it);
- ``empty_image``: an image-start with no image content after it;
- ``truncated_image``: fewer (or more) image codes than the family's fixed count (Janus), or an
  image that failed to decode (its ``ImageRef`` is missing);
- ``stray_delimiter``: an image-end outside an image, or an end-of-sequence before the end;
- ``too_many_images``: more images than ``max_images``;
- ``no_text``: no non-blank text anywhere when ``require_text`` (the default: every benchmark
  answer here asks for text).

Scale: ``overall = 1.0`` with no violation, else ``max(-1, -0.5 * violations)`` (one violation
-0.5, two or more -1): a clean answer always beats a broken one and the penalty stays on the
scale of the other components. The violations are listed in ``metadata["violations"]``.

Two inputs. In training the trainer attaches the rollout's token stream to each prediction
(``attach_stream``); the rules then run on the tokens. For a plain ``Prediction`` (``ibench
score``) there is no token stream: the same rules run on the segment list (missing images, image
count, text present, blank text segments between images count as stray delimiters), which cannot
see unclosed or truncated token spans.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..protocols import ProtocolSpec
from ..types import Judgment, Prediction, Sample
from .base import Scorer, check_aligned

STREAM_KEY = "token_stream"
PENALTY = 0.5


@dataclass(frozen=True)
class TokenStream:
    """A rollout's generated tokens and the family's structure tokens.

    ``open_ids``: tokens that start an image (Janus ``<begin_of_image>``, sampled as text; Emu3
    ``<|image start|>``, the first position of the image span). ``close_ids``: tokens that end
    one. ``image_tokens``: codes per image when the family fixes it (Janus), else ``None``.
    ``delimiters_in_span``: the start and end tokens are the first and last positions of the image
    span (Emu3) rather than text positions around it (Janus, whose codes come from a separate
    codebook, so a code may equal any text id and is never read as a delimiter).
    ``image_mask[i]`` is true on positions that belong to an image span.
    """

    token_ids: tuple[int, ...]
    image_mask: tuple[bool, ...]
    open_ids: frozenset[int]
    close_ids: frozenset[int]
    eos_ids: frozenset[int]
    image_tokens: int | None = None
    max_images: int | None = None
    delimiters_in_span: bool = False


@dataclass(frozen=True)
class StreamSpec:
    """A family's structure tokens, to turn a rollout's tokens into a ``TokenStream``."""

    open_ids: frozenset[int]
    close_ids: frozenset[int]
    eos_ids: frozenset[int]
    image_tokens: int | None = None
    max_images: int | None = None
    delimiters_in_span: bool = False

    def of(self, token_ids: Sequence[int], image_mask: Sequence[bool]) -> TokenStream:
        return TokenStream(
            tuple(token_ids),
            tuple(bool(m) for m in image_mask),
            self.open_ids,
            self.close_ids,
            self.eos_ids,
            self.image_tokens,
            self.max_images,
            self.delimiters_in_span,
        )


def attach_stream(prediction: Prediction, stream: TokenStream) -> Prediction:
    """Give ``prediction`` its token stream, as plain lists under ``settings["token_stream"]``
    (JSON like every other setting, so a prediction written to disk stays readable)."""
    prediction.settings[STREAM_KEY] = {
        "token_ids": list(stream.token_ids),
        "image_mask": list(stream.image_mask),
        "open_ids": sorted(stream.open_ids),
        "close_ids": sorted(stream.close_ids),
        "eos_ids": sorted(stream.eos_ids),
        "image_tokens": stream.image_tokens,
        "max_images": stream.max_images,
        "delimiters_in_span": stream.delimiters_in_span,
    }
    return prediction


def stream_of(prediction: Prediction) -> TokenStream | None:
    """The token stream ``attach_stream`` gave ``prediction``, or None."""
    d = prediction.settings.get(STREAM_KEY)
    if not isinstance(d, dict):
        return None
    return TokenStream(
        tuple(d["token_ids"]),
        tuple(bool(m) for m in d["image_mask"]),
        frozenset(d["open_ids"]),
        frozenset(d["close_ids"]),
        frozenset(d["eos_ids"]),
        d.get("image_tokens"),
        d.get("max_images"),
        bool(d.get("delimiters_in_span", False)),
    )


def stream_violations(stream: TokenStream) -> tuple[list[str], int]:
    """(violations, images) found on a token stream."""
    ids, mask = stream.token_ids, stream.image_mask
    if len(ids) != len(mask):
        raise ValueError(f"{len(ids)} token ids but {len(mask)} image-mask entries")
    n = len(ids)
    out: list[str] = []
    images = 0
    i = 0
    while i < n:
        if mask[i]:
            j = i
            while j < n and mask[j]:
                j += 1
            images += 1
            if stream.delimiters_in_span:  # Emu3: start and end are the span's own ends
                opened = ids[i] in stream.open_ids
                closed = j - i > 1 and ids[j - 1] in stream.close_ids
                content = (j - i) - opened - closed
            else:  # Janus: the codes (a separate codebook: any id) sit between text-side tokens
                opened = i > 0 and ids[i - 1] in stream.open_ids
                closed = j < n and ids[j] in stream.close_ids
                content = j - i
            if not opened:
                out.append("unopened_image")
            if not closed:
                out.append("unclosed_image")
            if content == 0:
                out.append("empty_image")
            elif stream.image_tokens is not None and content != stream.image_tokens:
                out.append("truncated_image")
            # a text-side close token right after the span belongs to it
            i = j + 1 if closed and not stream.delimiters_in_span else j
            continue
        t = ids[i]
        if t in stream.open_ids and not (i + 1 < n and mask[i + 1]):
            images += 1
            out.append("empty_image")
        elif t in stream.close_ids or (t in stream.eos_ids and i != n - 1):
            out.append("stray_delimiter")
        i += 1
    if stream.max_images is not None and images > stream.max_images:
        out.append("too_many_images")
    return out, images


def segment_violations(prediction: Prediction, max_images: int | None) -> tuple[list[str], int]:
    """(violations, images) found on the segment list alone (no token stream)."""
    out: list[str] = []
    segs = list(prediction.output)
    images = sum(1 for s in segs if s.is_image)
    for k, s in enumerate(segs):
        if s.is_image and s.image is not None and s.image.missing:
            out.append("truncated_image")
        inner = 0 < k < len(segs) - 1
        between_images = inner and segs[k - 1].is_image and segs[k + 1].is_image
        if not s.is_image and between_images and not (s.text or "").strip():
            out.append("stray_delimiter")
    if max_images is not None and images > max_images:
        out.append("too_many_images")
    return out, images


def fidelity(violations: Sequence[str]) -> float:
    """The reward for a list of violations (see the module notes for the scale)."""
    return 1.0 if not violations else max(-1.0, -PENALTY * len(violations))


class FormatFidelityScorer(Scorer):
    """r_f: structural fidelity of an answer, on its token stream when one is attached."""

    name = "format_fidelity"
    protocol_version = "1"

    def __init__(self, *, max_images: int | None = None, require_text: bool = True) -> None:
        if max_images is not None and max_images < 0:
            raise ValueError(f"max_images must be >= 0, got {max_images}")
        self.max_images = max_images
        self.require_text = require_text

    def score_one(self, sample: Sample, prediction: Prediction) -> Judgment:
        if prediction.error:
            return self.error(sample.id, f"generation failed: {prediction.error}")
        stream = stream_of(prediction)
        if stream is not None:
            violations, images = stream_violations(stream)
            # a code span can decode to a missing image: the stream cannot see that
            violations += [
                "truncated_image"
                for s in prediction.output
                if s.is_image and s.image is not None and s.image.missing
            ]
            source = "tokens"
        else:
            violations, images = segment_violations(prediction, self.max_images)
            source = "segments"
        if self.require_text and not prediction.output.text.strip():
            violations.append("no_text")
        overall = fidelity(violations)
        return self.ok(
            sample.id,
            overall,
            {"format_fidelity": overall, "violations": float(len(violations))},
            metadata={"violations": violations, "images": images, "checked_on": source},
        )

    async def ascore(
        self, samples: Sequence[Sample], predictions: Sequence[Prediction]
    ) -> list[Judgment]:
        check_aligned(samples, predictions)
        return [self.score_one(s, p) for s, p in zip(samples, predictions, strict=True)]


def build(opts: Any, engine: Any) -> FormatFidelityScorer:
    extra = dict(getattr(opts, "extra", None) or {})
    return FormatFidelityScorer(
        max_images=extra.get("max_images"), require_text=bool(extra.get("require_text", True))
    )


SPEC = ProtocolSpec(
    name="format_fidelity",
    kind="offline",
    builder=build,
    description="offline: modalities correctly delimited (r_f; 1 clean, -0.5 per violation)",
    scale="-1-1",
)
