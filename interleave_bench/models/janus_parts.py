"""What the single-row Janus loop (``janus``) and the batched one (``janus_batch``) share: the
structural token ids, one decoded answer, and pixels to a PIL image. A leaf, so neither loop
imports the other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .base import DecodeTrace

if TYPE_CHECKING:
    import torch
    from PIL import Image


@dataclass(frozen=True)
class JanusTokenIds:
    """The structural token ids the loop needs, resolved once per model."""

    bos: int | None
    eos: frozenset[int]
    pad: int
    boi: int
    eoi: int
    placeholder: int


@dataclass
class DecodeResult:
    """One answer as the loop produced it: text pieces and PIL images in order, plus the trace."""

    parts: list[str | Image.Image]
    image_codes: list[list[int]]
    stop_reason: str  # "eos" | "length"
    trace: DecodeTrace | None = None


def janus_token_ids(model: Any, processor: Any) -> JanusTokenIds:
    """Structural ids from the processor's image tokens and the model's generation config."""
    tok = processor.tokenizer
    gen = model.generation_config

    def _id(token: str) -> int:
        i = tok.convert_tokens_to_ids(token)
        if i is None or i == tok.unk_token_id:
            raise ValueError(f"the tokenizer has no {token!r} token")
        return int(i)

    eos = gen.eos_token_id if gen.eos_token_id is not None else tok.eos_token_id
    eos_ids = frozenset(
        int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None
    )
    pad = next(
        (int(p) for p in (gen.pad_token_id, tok.pad_token_id) if p is not None),
        min(eos_ids) if eos_ids else 0,
    )
    bos = gen.bos_token_id if gen.bos_token_id is not None else tok.bos_token_id
    return JanusTokenIds(
        bos=None if bos is None else int(bos),
        eos=eos_ids,
        pad=pad,
        boi=_id(processor.image_start_token),
        eoi=_id(processor.image_end_token),
        placeholder=int(model.config.image_token_id),
    )


def pixels_to_image(processor: Any, pixels: torch.Tensor) -> Image.Image:
    """One decoded ``(H, W, C)`` normalised float CPU tensor -> a PIL image (see ``decode_codes``)."""
    import torch
    from PIL import Image as PILImage

    ip = processor.image_processor
    mean = torch.tensor(ip.image_mean, dtype=torch.float32)
    std = torch.tensor(ip.image_std, dtype=torch.float32)
    values = ((pixels * std + mean) / float(ip.rescale_factor)).clamp(0, 255).to(torch.uint8)
    return PILImage.fromarray(values.numpy(), "RGB")
