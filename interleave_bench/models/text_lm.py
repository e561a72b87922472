"""The text family: any transformers causal LM (Llama, Qwen2, ...) answering in text only.

It makes text-only baselines possible in ``ibench eval`` and gives the trainer a model TRL can
also train (``perf/grpo_vs_trl.py``). Prompts lose their images (a text model cannot see them):
text segments are joined with blank lines, through the tokenizer's chat template when it has one.

Decoding is one batched ``model.generate`` over all prompts (left padding), sampling with the
global torch RNG seeded from ``settings.seed`` and the call's seed. Log-probs follow the shared
convention (``models.sampling``): raw logits, log-softmax at the temperature, before the top-p
cut. ``generate``'s ``output_logits`` are the unprocessed logits, so this holds by construction.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..media import ImageStore
from ..types import Interleaved, Segment
from .base import DecodeTrace, GenerationOutput, GenerationSettings
from .families import FamilySpec
from .sampling import load_pretrained, resolve_device


def prompt_text(prompt: Interleaved) -> str:
    """The prompt's text segments, images dropped."""
    return "\n\n".join(s.text for s in prompt if s.text)


class TextLMAdapter:
    """``ModelAdapter`` for a plain causal LM; ``decode_batch`` is also the rollout path."""

    family = "text"

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "auto",
        dtype: str | None = None,
        model_id: str | None = None,
        load_kwargs: dict[str, Any] | None = None,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = str(resolve_device(device))
        self.model = load_pretrained(AutoModelForCausalLM, path, self.device, dtype, load_kwargs)
        self.processor = AutoTokenizer.from_pretrained(str(path), padding_side="left")
        if self.processor.pad_token is None:
            self.processor.pad_token = self.processor.eos_token
        self.model_id = model_id or str(path)

    def encode(self, prompts: list[Interleaved]) -> Any:
        """Left-padded ``input_ids``/``attention_mask`` for the prompts."""
        tok = self.processor
        texts = [prompt_text(p) for p in prompts]
        if getattr(tok, "chat_template", None):
            texts = [
                tok.apply_chat_template(
                    [{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True
                )
                for t in texts
            ]
        return tok(texts, return_tensors="pt", padding=True).to(self.model.device)

    def decode_batch(
        self, inputs: Any, settings: GenerationSettings, seed: int
    ) -> list[DecodeTrace]:
        """One trace per input row: sampled ids (through the first EOS) and their log-probs."""
        import torch

        torch.manual_seed(seed)
        sample = settings.temperature > 0
        with torch.no_grad():
            out = self.model.generate(
                **inputs,
                do_sample=sample,
                temperature=settings.temperature if sample else None,
                top_p=settings.top_p if sample else None,
                top_k=0 if sample else None,
                max_new_tokens=settings.max_new_tokens,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=self.processor.pad_token_id,
            )
        new = out.sequences[:, inputs["input_ids"].shape[1] :]
        logits = torch.stack(out.logits, 1).float()  # (B, T, V), unprocessed
        temp = settings.temperature if sample else 1.0
        logp = torch.log_softmax(logits / temp, -1).gather(-1, new[..., None]).squeeze(-1)
        eos = set(_eos_ids(self.model, self.processor))
        traces = []
        for ids, lp in zip(new.tolist(), logp.tolist(), strict=True):
            n = next((k + 1 for k, t in enumerate(ids) if t in eos), len(ids))
            traces.append(
                DecodeTrace(
                    token_ids=ids[:n],
                    logprobs=lp[:n],
                    image_mask=[False] * n,
                    segments=[("text", 0, n)] if n else [],
                )
            )
        return traces

    def text_of(self, trace: DecodeTrace) -> str:
        return self.processor.decode(trace.token_ids, skip_special_tokens=True).strip()

    def answer_of(self, trace: DecodeTrace) -> Interleaved:
        """The decoded answer: one text segment, or nothing when only EOS was produced."""
        text = self.text_of(trace)
        return Interleaved([Segment.of_text(text)] if text else [])

    def generate(
        self,
        prompts: list[Interleaved],
        settings: GenerationSettings,
        store: ImageStore,
        *,
        return_trace: bool = False,
    ) -> list[GenerationOutput]:
        start = time.perf_counter()
        try:
            traces = self.decode_batch(self.encode(prompts), settings, settings.seed)
        except Exception as e:  # noqa: BLE001 - recorded on every prompt of the batch
            msg = f"{type(e).__name__}: {e}"
            return [GenerationOutput(Interleaved(), error=msg) for _ in prompts]
        each = (time.perf_counter() - start) / max(len(prompts), 1)
        return [
            GenerationOutput(
                self.answer_of(t),
                seconds=each,
                trace=t if return_trace else None,
            )
            for t in traces
        ]


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    eos = getattr(model.generation_config, "eos_token_id", None) or tokenizer.eos_token_id
    return list(eos) if isinstance(eos, (list, tuple)) else [eos]


def is_causal_lm(config: dict[str, Any]) -> bool:
    """A config.json no other family claims is a text model when it names a ``*ForCausalLM``."""
    return any(str(a).endswith("ForCausalLM") for a in config.get("architectures") or [])


FAMILY = FamilySpec(
    name="text",
    adapter="interleave_bench.models.text_lm:TextLMAdapter",
    detect="interleave_bench.models.text_lm:is_causal_lm",
    tiny="interleave_bench.models.tiny_text:build_tiny_text",
    capabilities={
        "generate": "interleave_bench.models.text_lm:TextLMAdapter.generate",
        "rollout": "interleave_bench.train.rollout:rollout_text",
        "teacher_forced_logprobs": "interleave_bench.train.policy_logprobs:text_batch_logprobs",
        "structural_token_ids": "interleave_bench.train.rollout:text_structural_ids",
    },
    description="any transformers causal LM (Llama, Qwen2, ...): text answers only",
)
