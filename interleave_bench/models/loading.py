"""Turning ``--model PATH|HUB_ID [--model-type T]`` into an adapter, with clear errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import families
from .base import ModelError


def tiny_model(spec: str) -> Path:
    """``tiny:NAME``: the tiny random model of family NAME, built once into the cache (the demo)."""
    from ..benchmarks.base import cache_home

    family = spec.partition(":")[2]
    build = families.tiny_builder(family)
    dest = cache_home() / "tiny" / family
    if not (dest / "config.json").is_file():
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
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise ModelError(f"{model}: no such folder")
    # a bare name (gpt2) is a Hub id too: say what was tried, not that it is no Hub id
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ModelError(
            f"{model}: no local folder {model} and HF_HUB_OFFLINE is set, so it cannot be "
            "downloaded from the Hub; pass a model folder or unset HF_HUB_OFFLINE"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model))
    except Exception as e:  # noqa: BLE001 - any Hub failure becomes one clear message
        raise ModelError(
            f"{model}: no local folder {model}, and it cannot be downloaded from the Hub "
            f"({type(e).__name__}: {e})"
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
    if model_type:
        spec = families.detect(model, model_type)
        if not spec.folder:
            return spec.load(
                model,
                device=device,
                dtype=dtype,
                load_kwargs=load_kwargs,
                data=data,
                pipeline=pipeline,
            )
    path = resolve_model_path(model)
    spec = families.detect(path, model_type)
    if not spec.folder:
        raise ModelError(f"{model}: family {spec.name} needs --model-type {spec.name}")
    return spec.load(str(path), device=device, dtype=dtype, load_kwargs=load_kwargs)


def load_replay(model: str, *, data: Any = None, **_: Any) -> Any:
    """The replay family's loader: ``--model`` is a folder or file of another tool's outputs."""
    from .replay import ReplayAdapter

    return ReplayAdapter(model, data)


def load_pipeline(model: str, *, pipeline: dict[str, Any] | None = None, **_: Any) -> Any:
    """The pipeline family's loader: ``--model`` is the chat model."""
    return _pipeline(model, pipeline or {})


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
