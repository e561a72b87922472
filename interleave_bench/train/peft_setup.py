"""LoRA / QLoRA through peft, and the reference policy that goes with it.

With LoRA the frozen reference of the KL term is the base model with its adapters switched off
(``PeftModel.disable_adapter``), so a run holds one copy of the weights instead of two. peft
injects the adapter layers into the model object in place, so the decode loops and log-prob code
keep calling the same modules; only the optimizer sees fewer parameters.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
LORA_KEYS = {"r", "alpha", "dropout", "target_modules"}


def quantization_kwargs(quantization: str | None, device: str, has_lora: bool) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments for QLoRA (bitsandbytes, CUDA only), else ``{}``."""
    if quantization is None:
        return {}
    if quantization not in ("4bit", "8bit"):
        raise ValueError(f"quantization must be '4bit', '8bit' or null, got {quantization!r}")
    if not has_lora:
        raise ValueError("quantization needs lora: a quantized base model cannot be trained fully")
    if not str(device).startswith("cuda"):
        raise ValueError(f"quantization {quantization} needs a CUDA device, got {device!r}")
    try:
        import bitsandbytes  # noqa: F401
        import torch
        from transformers import BitsAndBytesConfig
    except ImportError as e:
        raise ValueError(f"quantization needs bitsandbytes installed ({e})") from None
    if quantization == "4bit":
        q = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
    else:
        q = BitsAndBytesConfig(load_in_8bit=True)
    return {"quantization_config": q, "device_map": {"": str(device)}}


def apply_lora(model: Any, lora: dict[str, Any], *, quantized: bool = False) -> Any:
    """Inject LoRA adapters into ``model`` (in place) and return the ``PeftModel`` wrapper."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    unknown = set(lora) - LORA_KEYS
    if unknown:
        raise ValueError(f"lora: unknown key(s) {sorted(unknown)}; known {sorted(LORA_KEYS)}")
    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    config = LoraConfig(
        r=int(lora.get("r", 8)),
        lora_alpha=int(lora.get("alpha", 16)),
        lora_dropout=float(lora.get("dropout", 0.0)),
        target_modules=lora.get("target_modules") or DEFAULT_TARGETS,
        bias="none",
    )
    return get_peft_model(model, config)


class Reference:
    """Log-probs under the frozen initial policy: a deep copy, or the LoRA base model."""

    def __init__(self, adapter: Any, peft_model: Any | None) -> None:
        self.peft_model = peft_model
        if peft_model is not None:
            self.adapter = adapter
        else:
            self.adapter = copy.copy(adapter)
            self.adapter.model = copy.deepcopy(adapter.model).eval().requires_grad_(False)

    @contextlib.contextmanager
    def active(self) -> Iterator[Any]:
        """The adapter to compute reference log-probs with (adapters off while inside)."""
        if self.peft_model is None:
            yield self.adapter
            return
        with self.peft_model.disable_adapter():
            yield self.adapter


def trainable_state(model: Any, peft_model: Any | None) -> dict[str, Any]:
    """What a checkpoint must hold: every weight, or only the LoRA ones."""
    state = model.state_dict()
    if peft_model is None:
        return state
    return {k: v for k, v in state.items() if "lora_" in k}
