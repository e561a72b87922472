"""InternVL's own chat path as a local judge: the computation MMIE's official scorer runs.

MMIE-Score (an InternVL2-4B fine-tune, remote code) is called by the official ``main.py`` as
``model.chat(tokenizer, pixel_values, prompt, {max_new_tokens: 1024, do_sample: False},
num_patches_list=...)``, each image tiled by InternVL's dynamic preprocessing. This module
reproduces the preprocessing with PIL and numpy (no torchvision) and hands the result to the
checkpoint's own ``chat()`` / ``batch_chat()``, so the conversation template, the image tokens
and the stop rule are the model's, not ours. Every fact used is recorded with its source in
``data_cards/mmie.md``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .local import QueuedJudge, _Pending, image_from_data_url
from .request import JudgeReply, JudgeRequest

TILE = 448  # InternVL2's ViT input size (config ``force_image_size``)
MAX_TILES = 12  # main.py: load_image(image, max_num=12)
MIN_TILES = 1
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
PLACEHOLDER = "<image>"  # what chat() replaces, in order, by each image's tokens
#: The default system message of InternVL's ``phi3-chat`` conversation template (the template
#: InternVL2-4B names in its config), inserted by ``chat()`` unless the model's
#: ``system_message`` is changed. A fact of the model's template, recorded with its source in
#: data_cards/mmie.md; a run may override it (``--judge-system-prompt``).
PHI3_CHAT_SYSTEM = (
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, "
    "是一个有用无害的人工智能助手。"
)
CHAT_ARCHITECTURE = "InternVLChatModel"


# ------------------------------------------------------------------------------ tiling


def tile_grids(max_tiles: int = MAX_TILES, min_tiles: int = MIN_TILES) -> list[tuple[int, int]]:
    """Every (columns, rows) grid with min..max tiles, fewest tiles first (ties: columns, rows).

    The tie order never decides a choice: two grids with as many tiles and the same distance to
    an aspect ratio would have to lie on both sides of it, and the 1x1 grid is always closer.
    """
    grids = {
        (c, r)
        for c in range(1, max_tiles + 1)
        for r in range(1, max_tiles + 1)
        if min_tiles <= c * r <= max_tiles
    }
    return sorted(grids, key=lambda g: (g[0] * g[1], g))


def choose_grid(width: int, height: int, max_tiles: int = MAX_TILES, tile: int = TILE) -> tuple:
    """The grid whose aspect ratio is closest to the image's; on an exact tie, the later (larger)
    grid wins only when the image has more than half the pixels that grid would hold."""
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    for c, r in tile_grids(max_tiles):
        diff = abs(aspect - c / r)
        if diff < best_diff:
            best, best_diff = (c, r), diff
        elif diff == best_diff and width * height > 0.5 * tile * tile * c * r:
            best = (c, r)
    return best


def tiles(image: Image.Image, max_tiles: int = MAX_TILES, tile: int = TILE) -> list[Image.Image]:
    """The image resized (bicubic) onto its grid and cut row by row into ``tile``-pixel squares,
    plus a bicubic thumbnail of the whole image when there is more than one tile."""
    image = image.convert("RGB")
    cols, rows = choose_grid(image.width, image.height, max_tiles, tile)
    resized = image.resize((cols * tile, rows * tile), Image.Resampling.BICUBIC)
    out = [
        resized.crop((x * tile, y * tile, (x + 1) * tile, (y + 1) * tile))
        for y in range(rows)
        for x in range(cols)
    ]
    if len(out) > 1:
        out.append(image.resize((tile, tile), Image.Resampling.BICUBIC))
    return out


def normalize(tile_images: list[Image.Image]) -> np.ndarray:
    """(n, 3, H, W) float32: each channel scaled to 0..1 and standardised with ImageNet's mean
    and std, in float32 as torchvision's ToTensor + Normalize compute it."""
    arr = np.stack([np.asarray(t, dtype=np.uint8) for t in tile_images]).astype(np.float32)
    arr = (arr / np.float32(255.0) - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(arr.transpose(0, 3, 1, 2))


def pixel_values(image: Image.Image, max_tiles: int = MAX_TILES) -> np.ndarray:
    """One image as InternVL's chat() expects it: its tiles (and thumbnail), normalised."""
    return normalize(tiles(image, max_tiles))


# ------------------------------------------------------------------------------ detection


def is_internvl_chat(path: str | Path) -> bool:
    """Whether a checkpoint folder's config names InternVL's chat model (remote code)."""
    config = Path(path) / "config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    archs = data.get("architectures") if isinstance(data, dict) else None
    return isinstance(archs, list) and CHAT_ARCHITECTURE in archs


# ------------------------------------------------------------------------------ the judge


@dataclass
class ChatCall:
    """One request in chat() terms: the question with a placeholder per image, earlier turns,
    the system message, and the tiled images."""

    question: str
    history: list[tuple[str, str]]
    system: str
    pixels: list[np.ndarray]  # one (tiles, 3, 448, 448) array per image, in placeholder order

    @property
    def num_patches_list(self) -> list[int]:
        return [p.shape[0] for p in self.pixels]


def chat_call(request: JudgeRequest, max_tiles: int = MAX_TILES) -> ChatCall:
    """The request as chat() arguments. Text parts are joined as they are; each image part
    becomes ``<image>`` at its position (MMIE's prompt already carries its ``Image-k: `` label)."""
    text = "".join(p.text or "" if p.kind == "text" else PLACEHOLDER for p in request.parts)
    pixels = [
        pixel_values(image_from_data_url(p.url), max_tiles)
        for p in request.parts
        if p.kind == "image"
    ]
    history: list[tuple[str, str]] = []
    question = text
    turns = list(request.followup)
    while turns:  # (assistant, user) pairs after the first question: earlier turns of chat()
        (role_a, answer), rest = turns[0], turns[1:]
        if role_a != "assistant" or not rest or rest[0][0] != "user":
            raise ValueError("follow-up turns must alternate assistant, user")
        history.append((question, answer))
        question, turns = rest[0][1], rest[1:]
    return ChatCall(question, history, "" if request.system is None else request.system, pixels)


class InternVLJudge(QueuedJudge):
    """A JudgeBackend that answers through the checkpoint's own ``chat()``: bfloat16 on GPU,
    greedy unless the request samples, ``max_tokens`` new tokens, images tiled as above.

    ``request.system`` becomes the template's system message (``None``: an empty one, since the
    template always renders its system block). Greedy single-turn requests with one image each
    and the template's own system message may be answered together by ``batch_chat()``, which
    handles exactly that case; anything else goes through ``chat()`` one at a time.
    """

    judge_path = "local-internvl"

    def __init__(
        self,
        model_path: str,
        *,
        trust_remote_code: bool = False,
        device: str = "auto",
        max_tiles: int = MAX_TILES,
        max_batch: int = 1,
        load: Any = None,
    ) -> None:
        super().__init__(str(model_path), max_batch=max_batch)
        if not trust_remote_code:
            raise ValueError(
                f"{model_path} is an InternVL chat checkpoint (remote code): "
                "pass --trust-remote-code to run its own chat()"
            )
        if max_tiles < 1:
            raise ValueError("max_tiles must be at least 1")
        self.max_tiles = max_tiles
        self._model, self.tokenizer, self.device, self.dtype = (load or _load)(self.model, device)
        self.default_system = getattr(self._model, "system_message", None)

    def describe(self) -> dict[str, Any]:
        return {"path": self.judge_path, "max_tiles": self.max_tiles, "dtype": self.dtype}

    def _prepare(self, request: JudgeRequest) -> ChatCall:
        return chat_call(request, self.max_tiles)

    def _batchable(self, batch: list[_Pending]) -> bool:
        return len(batch) > 1 and all(
            p.request.max_tokens == batch[0].request.max_tokens
            and len(p.conversation.pixels) == 1
            and not p.conversation.history
            and p.conversation.question.count(PLACEHOLDER) == 1
            and p.conversation.system == self.default_system
            for p in batch
        )

    def _tensor(self, arrays: list[np.ndarray]) -> Any:
        import torch

        if not arrays:
            return None
        t = torch.from_numpy(np.concatenate(arrays, axis=0))
        return t.to(device=self.device, dtype=getattr(torch, self.dtype))

    def _gen_config(self, request: JudgeRequest) -> dict[str, Any]:
        import torch

        if request.temperature > 0:
            if request.seed is not None:
                torch.manual_seed(request.seed)
            return {
                "max_new_tokens": request.max_tokens,
                "do_sample": True,
                "temperature": request.temperature,
            }
        return {"max_new_tokens": request.max_tokens, "do_sample": False}

    def _generate_locked(self, batch: list[_Pending], start: float) -> list[JudgeReply]:
        import torch

        with torch.inference_mode():
            if self._batchable(batch):
                calls: list[ChatCall] = [p.conversation for p in batch]  # type: ignore[misc]
                texts = self._model.batch_chat(
                    self.tokenizer,
                    self._tensor([c.pixels[0] for c in calls]),
                    [c.question for c in calls],
                    self._gen_config(batch[0].request),
                    num_patches_list=[c.num_patches_list[0] for c in calls],
                )
            else:
                texts = [self._chat(p) for p in batch]
        seconds = time.perf_counter() - start
        return [
            JudgeReply(status="ok", text=t, cost=0.0, attempts=1, seconds=seconds) for t in texts
        ]

    def _chat(self, item: _Pending) -> str:
        call: ChatCall = item.conversation  # type: ignore[assignment]
        self._model.system_message = call.system
        try:
            return self._model.chat(
                self.tokenizer,
                self._tensor(call.pixels),
                call.question,
                self._gen_config(item.request),
                history=call.history or None,
                num_patches_list=call.num_patches_list,
            )
        finally:
            self._model.system_message = self.default_system


def _load(path: str, device: str) -> tuple[Any, Any, str, str]:
    """The checkpoint as the official scorer loads it: AutoModel with its remote code, bfloat16
    on GPU (float32 on CPU, where bfloat16 matmuls are slow), the slow tokenizer."""
    import torch
    import transformers

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "bfloat16" if device.startswith("cuda") else "float32"
    model = transformers.AutoModel.from_pretrained(
        path, dtype=getattr(torch, dtype), trust_remote_code=True, low_cpu_mem_usage=True
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        path, trust_remote_code=True, use_fast=False
    )
    return model.to(device).eval(), tokenizer, device, dtype
