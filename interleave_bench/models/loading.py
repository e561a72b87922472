"""Turning ``--model PATH|HUB_ID [--model-type T]`` into an adapter, with clear errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .base import ModelError, detect_family

TINY = ("tiny:janus", "tiny:emu3", "tiny:text")


def tiny_model(spec: str) -> Path:
    """``tiny:janus`` / ``tiny:emu3``: a tiny random model built once into the cache (the demo)."""
    from ..benchmarks.base import cache_home

    family = spec.partition(":")[2]
    dest = cache_home() / "tiny" / family
    if not (dest / "config.json").is_file():
        if family == "janus":
            from .tiny_janus import build_tiny_janus as build
        elif family == "emu3":
            from .tiny_emu3 import build_tiny_emu3 as build
        elif family == "text":
            from .tiny_text import build_tiny_text as build
        else:
            raise ModelError(f"{spec}: expected one of {', '.join(TINY)}")
        build(dest)
    return dest


def resolve_model_path(model: str) -> Path:
    """A local folder as is; ``tiny:FAMILY`` built on the spot; otherwise a Hub id fetched into
    the Hugging Face cache."""
    if model.startswith("tiny:"):
        return tiny_model(model)
    p = Path(model).expanduser()
    if p.exists():
        return p
    if "/" not in model or model.startswith((".", "/")):
        raise ModelError(f"{model}: no such folder (and not a Hub id like org/name)")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ModelError(f"{model}: not a local folder and HF_HUB_OFFLINE is set")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model))
    except Exception as e:  # noqa: BLE001 - any Hub failure becomes one clear message
        raise ModelError(
            f"{model}: cannot download from the Hub ({type(e).__name__}: {e})"
        ) from None


def load_adapter(
    model: str,
    model_type: str | None = None,
    *,
    device: str = "auto",
    dtype: str | None = None,
    data: Any = None,
    pipeline: dict[str, Any] | None = None,
    load_kwargs: dict[str, Any] | None = None,
) -> Any:
    """``data`` (the loaded benchmark) pairs replayed outputs with samples; ``pipeline`` holds
    the integrated pipeline's options (chat endpoint, image generator); ``load_kwargs`` go to a
    transformers model's ``from_pretrained`` (QLoRA's quantization config)."""
    if model_type == "replay":
        from .replay import ReplayAdapter

        return ReplayAdapter(model, data)
    if model_type == "pipeline":
        return _pipeline(model, pipeline or {})
    path = resolve_model_path(model)
    family = detect_family(path, model_type)
    if family == "janus":
        from .janus import JanusAdapter

        return JanusAdapter(str(path), device=device, dtype=dtype, load_kwargs=load_kwargs)
    if family == "text":
        from .text_lm import TextLMAdapter

        return TextLMAdapter(str(path), device=device, dtype=dtype, load_kwargs=load_kwargs)
    from .emu3 import Emu3Adapter

    return Emu3Adapter(str(path), device=device, dtype=dtype, load_kwargs=load_kwargs)


def _pipeline(chat_model: str, opts: dict[str, Any]) -> Any:
    """``--image-generator openai:MODEL`` (Images API) or ``diffusers:PATH`` (local pipeline)."""
    from .image_generators import DiffusersImageGenerator, OpenAIImageGenerator
    from .pipeline import PipelineAdapter

    spec = opts.get("image_generator") or "openai:dall-e-3"
    kind, _, target = spec.partition(":")
    key_env = opts.get("api_key_env") or "OPENAI_API_KEY"
    generator: Any
    if kind == "openai":
        generator = OpenAIImageGenerator(
            target or "dall-e-3", base_url=opts.get("image_base_url"), api_key_env=key_env
        )
    elif kind == "diffusers":
        generator = DiffusersImageGenerator(target)
    else:
        raise ModelError(f"--image-generator {spec!r}: expected openai:MODEL or diffusers:PATH")
    return PipelineAdapter(chat_model, opts.get("chat_base_url"), key_env, generator=generator)
