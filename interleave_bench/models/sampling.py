"""Token choice and device/dtype resolution shared by every decode loop.

One convention for the log-prob recorded with each sampled token, so rollouts of every family
agree with what the trainer recomputes: the log-softmax over the *allowed* tokens at the sampling
temperature (temperature 1 when greedy), taken before the top-p cut. The nucleus only decides
which token is drawn; a training forward pass has no nucleus, so a truncated value would make
the importance ratio drift from 1 on the very first update.
"""

from __future__ import annotations

import functools
from typing import Any


def allowed_logprobs(logits: Any, mask: Any | None, temperature: float) -> Any:
    """Log-softmax over the allowed tokens (all when ``mask`` is None) at the temperature."""
    import torch

    x = logits if mask is None else logits.masked_fill(~mask, float("-inf"))
    return torch.log_softmax(x / temperature if temperature > 0 else x, dim=-1)


def sample_token(
    logits: Any, temperature: float, top_p: float, generator: Any | None, mask: Any | None = None
) -> tuple[int, Any]:
    """Argmax (temperature 0) or a draw from the nucleus; returns the token and the ``(V,)``
    log-probs it was judged under (see the module docstring)."""
    import torch

    logp = allowed_logprobs(logits.float(), mask, temperature)
    if temperature <= 0:
        return int(torch.argmax(logp)), logp
    probs = logp.exp()
    if top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        drop = torch.cumsum(sorted_p, dim=-1) - sorted_p >= top_p  # the top token always stays
        probs = probs.scatter(0, order, sorted_p.masked_fill(drop, 0.0))
    return int(torch.multinomial(probs, 1, generator=generator)), logp


def resolve_device(device: str) -> Any:
    """``auto`` (CUDA when present), ``cpu`` or ``cuda[:N]`` as a ``torch.device``."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return torch.device(device)


def resolve_dtype(dtype: Any, device: Any) -> Any:
    """None/"auto": bfloat16 on a GPU, float32 on the CPU; otherwise a torch dtype or its name."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r} (try float32, bfloat16 or float16)")
    return value


def cache_kwarg(module: Any) -> str:
    """transformers 5.2x names the KV cache argument ``cache``; older releases
    ``past_key_values`` (looked up once per class: decode loops call this every token)."""
    return _cache_kwarg(type(module))


@functools.cache
def _cache_kwarg(cls: type) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def output_cache(out: Any) -> Any:
    """The KV cache a forward returned, under either name."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def load_pretrained(
    cls: Any, path: Any, device: Any, dtype: Any, load_kwargs: dict[str, Any] | None
) -> Any:
    """``cls.from_pretrained`` at the resolved dtype, moved to ``device`` and in eval mode.
    ``load_kwargs`` (a quantization config and ``device_map`` for QLoRA) go to
    ``from_pretrained``, which then decides placement, so the model is not moved."""
    model = cls.from_pretrained(
        str(path), dtype=resolve_dtype(dtype, device), **(load_kwargs or {})
    )
    return (model if load_kwargs else model.to(device)).eval()
