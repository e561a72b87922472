"""Supervised warm-up (SFT) before GRPO: teacher-forced interleaved, understanding and t2i answers.

RL (the "unified interleaved GRPO" recipe) starts from a model that already answers in the
interleaved format, so it first fine-tunes on a hybrid mix of three example kinds
(``train.warmup_data``), each answer laid out as the eval decode loop emits it after the same
prompt (``models.prompts.build_prompt`` + the adapter's processor path):

* Janus: text tokens, ``<begin_of_image>``, the image's VQ codes (from the model's own VQ encoder),
  ``<end_of_image>``, ..., EOS. One forward of the language model over prompt + answer (a
  micro-batch right-padded into one forward), inputs as the loop feeds them (``models.janus.embed_generated``: codes through the generation embeddings
  and aligner); text positions are scored by the LM head, code positions by the generation head.
* Emu3: image tokens are vocabulary tokens, laid out as ``ImageGrammar`` dictates (size header,
  row ends, frame end); the layout is replayed through the grammar, so a mismatch fails loudly.
  One causal-LM forward; visual positions form the image loss, the rest the text loss.

Prompt tokens are not in the loss, nor are positions the decode loop forces (``<end_of_image>``;
Emu3's header, wrapper, row ends and tail): they carry no choice. ``<begin_of_image>`` and EOS are
text-mode choices and count as text. ``loss = weight_text * loss_text + weight_image * loss_image``,
each a token mean over the whole optimizer step (micro-batches included), logged separately.

Resume works like the GRPO trainer's: a step's draw depends only on (seed, step); a checkpoint
holds model, optimizer, step, RNG states and the log's byte offset. ``TrainerBase`` supplies that,
the processes, LoRA/QLoRA and DeepSpeed: under ``torchrun`` each process takes a contiguous share
of a step's ``batch_size * grad_accum`` examples (over all processes), scales its loss by the
process count and the gradients are averaged, so N processes take the step one process would.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..media import load_ref
from ..models.base import GenerationSettings, ModelError
from ..models.emu3 import teacher_forced_logits as emu3_teacher_forced_logits
from ..models.families import family_of
from ..models.janus import (
    build_prompt_inputs,
    embed_generated,
    janus_token_ids,
    teacher_forced_hidden,
)
from ..models.prompts import build_prompt, load_templates
from ..types import ImageRef, Interleaved, Sample
from .base import FINAL, LOG_NAME, TrainerBase
from .config import BaseTrainConfig
from .distributed import main_process
from .output_dir import prepare_output_dir
from .policy_logprobs import prompt_embeds
from .progress import warmup_metrics
from .warmup_data import (
    KINDS,
    PAPER_MIX,
    Example,
    Forced,
    MixSampler,
    Token,
    counts,
    layout,
    load_sources,
)

__all__ = ["FINAL", "LOG_NAME", "WarmupConfig", "WarmupResult", "WarmupTrainer", "warmup"]


@dataclass
class WarmupConfig(BaseTrainConfig):
    """Everything that decides a warm-up run (saved as ``warmup_config.json``); model, optimizer,
    ``lora``/``quantization`` and process keys are ``BaseTrainConfig``'s, as in GRPO."""

    data: Any = "tiny"  # a source or a list: tiny | PATH.jsonl | {jsonl, kind} | {hf, columns, ...}
    mix: dict[str, float] = field(default_factory=lambda: dict(PAPER_MIX))  # kind -> ratio
    steps: int = 100
    batch_size: int = 4  # examples per micro-batch; batch_size * grad_accum per step (all ranks)
    lr: float = 1e-5
    weight_text: float = 1.0
    weight_image: float = 1.0
    max_prompt_tokens: int = 4096  # longer prompts: the example is skipped (counted)
    max_answer_tokens: int = 4096  # longer answers are cut before the image that crosses it
    image_size: int | None = None  # Emu3: side of generated images (as in GenerationSettings)
    max_image_tokens: int | None = None  # Emu3: cap on an image's visual tokens
    templates: str | None = None  # a prompt-template JSON, as ``ibench eval --templates``
    save: bool = True  # save_pretrained model + processor into output_dir/final

    def settings(self) -> GenerationSettings:
        return GenerationSettings(
            image_size=self.image_size, max_image_tokens=self.max_image_tokens
        )


@dataclass
class WarmupResult:
    records: list[dict[str, Any]]
    log_path: Path
    final_path: Path | None
    seconds: float


class _Family:
    """How one model family lays out and scores a teacher-forced answer."""

    def __init__(self, adapter: Any) -> None:
        self.adapter, self.model, self.processor = adapter, adapter.model, adapter.processor
        self.tok = self.processor.tokenizer
        self._codes: dict[str, list[int]] = {}

    def codes(self, ref: ImageRef) -> list[int]:
        key = ref.path or ref.sha256 or ""
        if key not in self._codes:
            with torch.no_grad():
                self._codes[key] = self._encode(load_ref(ref).convert("RGB"))
        return self._codes[key]

    def forced(self, prompt: Interleaved, gold: Interleaved, max_answer: int) -> Forced:
        def text(t: str) -> list[int]:
            return self.tok.encode(t, add_special_tokens=False)

        spans = layout(gold, text, lambda ref: self.image_span(self.codes(ref)), self.eos)
        return self.check(Forced.cut(self.prompt_inputs(prompt), spans, max_answer))

    def check(self, f: Forced) -> Forced:
        return f

    # family specifics
    eos: int

    def _encode(self, image: Any) -> list[int]: ...

    def image_span(self, codes: list[int]) -> list[Token]: ...

    def prompt_inputs(self, prompt: Interleaved) -> Any: ...

    def losses(self, f: Forced) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token cross-entropies of the text and of the image targets."""
        raise NotImplementedError

    def batch_losses(self, fs: list[Forced]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``losses`` of several examples (one forward each unless a family batches them)."""
        return [self.losses(f) for f in fs]

    @staticmethod
    def split_ce(f: Forced, text: Any, image: Any, device: Any) -> tuple[torch.Tensor, ...]:
        """Cross-entropies at text and at image targets; ``text``/``image`` map a position mask
        to the logits of those positions (one head or two)."""
        target = torch.tensor(f.tokens, device=device)
        is_image = torch.tensor(f.image, dtype=torch.bool, device=device)
        keep = torch.tensor(f.target, dtype=torch.bool, device=device)
        t, i = keep & ~is_image, keep & is_image
        return (
            F.cross_entropy(text(t).float(), target[t], reduction="none"),
            F.cross_entropy(image(i).float(), target[i], reduction="none"),
        )


class _Janus(_Family):
    def __init__(self, adapter: Any, settings: GenerationSettings | None = None) -> None:
        super().__init__(adapter)
        self.ids = janus_token_ids(self.model, self.processor)
        eos = self.tok.eos_token_id
        self.eos = eos if eos in self.ids.eos else min(self.ids.eos)
        self.n_codes = int(self.model.model.vision_model.config.num_image_tokens)

    def _encode(self, image: Any) -> list[int]:
        pixels = self.processor.image_processor(images=[image], return_tensors="pt")
        pv = pixels["pixel_values"].to(self.model.device, dtype=self.model.dtype)
        codes = self.model.model.vqmodel.encode(pv).image_tokens.flatten().tolist()
        if len(codes) != self.n_codes:
            raise ValueError(f"the VQ encoder gave {len(codes)} codes, expected {self.n_codes}")
        return codes

    def image_span(self, codes: list[int]) -> list[Token]:
        return [(self.ids.boi, False, True), *((c, True, True) for c in codes)] + [
            (self.ids.eoi, False, False)  # forced by the loop
        ]

    def prompt_inputs(self, prompt: Interleaved) -> Any:
        return build_prompt_inputs(self.processor, prompt, None)

    def losses(self, f: Forced) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batch_losses([f])[0]

    def batch_losses(self, fs: list[Forced]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One right-padded forward for the micro-batch (``teacher_forced_hidden``)."""
        model = self.model
        contexts = [
            (
                prompt_embeds(model, f.prompt_inputs),
                embed_generated(model, f.tokens[:-1], f.image[:-1]),
            )
            for f in fs
        ]
        head = model.model.generation_head
        return [
            self.split_ce(
                f, lambda m, h=h: model.lm_head(h[m]), lambda m, h=h: head(h[m]), model.device
            )
            for f, h in zip(fs, teacher_forced_hidden(model, contexts), strict=True)
        ]


class _Emu3(_Family):
    def __init__(self, adapter: Any, settings: GenerationSettings) -> None:
        super().__init__(adapter)
        self.grammar = adapter.grammar(settings)
        self.vocab = adapter.vocab
        self.eos = self.tok.eos_token_id

    def _encode(self, image: Any) -> list[int]:
        g, f = self.grammar, self.adapter.spatial_factor
        image = image.resize((g.cols * f, g.rows * f))
        batch = self.processor.image_processor(images=[image], return_tensors="pt")
        pv = batch["pixel_values"].to(self.model.device, dtype=self.model.dtype)
        vq = self.model.model.vqmodel
        codes = vq.encode(pv, batch["image_sizes"]).image_tokens[0]
        if tuple(codes.shape) != (g.rows, g.cols):
            raise ValueError(f"the VQ grid is {tuple(codes.shape)}, expected {(g.rows, g.cols)}")
        to_bpe = self.model.vocabulary_mapping.img2bpe_mapping_tensor
        return to_bpe[codes.cpu().long()].flatten().tolist()

    def image_span(self, codes: list[int]) -> list[Token]:
        g, v = self.grammar, self.vocab
        span = [(v.boi, False, True)] + [(t, False, False) for t in (*g.header, v.wrapper)]
        for r in range(g.rows):
            span += [(c, True, True) for c in codes[r * g.cols : (r + 1) * g.cols]]
            span.append((v.eol, False, False))
        return span + [(v.eof, False, False), (v.eoi, False, False)]

    def check(self, f: Forced) -> Forced:
        """Replay the answer through the decode grammar: forced positions must hold exactly the
        forced token, free ones are in the loss, visual ones are the image tokens."""
        from ..models.emu3_grammar import VISUAL

        n = f.tokens.count(self.vocab.boi)
        fresh = replace(self.grammar, max_new_tokens=len(f.tokens) + 1, max_images=n)
        for k, step in enumerate(fresh.replay(f.tokens)):
            ok = step.forced == f.tokens[k] if step.forced is not None else f.target[k]
            if not ok or (step.kind == VISUAL) != f.image[k]:
                raise AssertionError(f"answer token {k} does not follow Emu3's image grammar")
        return f

    def prompt_inputs(self, prompt: Interleaved) -> Any:
        return self.adapter.prompt_inputs(prompt, None)

    def losses(self, f: Forced) -> tuple[torch.Tensor, torch.Tensor]:
        logits = emu3_teacher_forced_logits(self.model, f.prompt_inputs, f.tokens)
        return self.split_ce(f, lambda m: logits[m], lambda m: logits[m], logits.device)


class WarmupTrainer(TrainerBase):
    """SFT warm-up of a Janus or Emu3 checkpoint on a seeded mix of example kinds."""

    config_name = "warmup_config.json"

    def __init__(
        self, config: WarmupConfig, *, examples: list[Example] | None = None, console: Any = None
    ) -> None:
        super().__init__(config, console=console)
        self.cfg: WarmupConfig = config
        sources = config.data if isinstance(config.data, list) else [config.data]
        if examples is None:  # process 0 writes a bundled source first, the others then read it
            if not self.dist.main:
                self.dist.barrier()
            examples = load_sources(sources, self.out)
            if self.dist.main:
                self.dist.barrier()
        self.examples = examples
        self.by_kind = {k: [e for e in self.examples if e.kind == k] for k in KINDS}
        self.sampler = MixSampler(
            {k: len(v) for k, v in self.by_kind.items()}, config.mix, config.seed
        )
        self.templates = load_templates(config.templates)
        adapter = self.load_policy()
        spec = family_of(adapter)
        self.family_name = spec.name
        try:
            targets = spec.require("warmup_targets")
        except ModelError as e:
            raise ModelError(f"{config.model}: warm-up trains image tokens; {e}") from None
        self.setup_policy(adapter)
        self.family: _Family = targets(adapter, config.settings())
        self.setup_optimizer()

    def freeze(self) -> None:
        self.model.model.vqmodel.requires_grad_(False).eval()  # targets come from a frozen VQ

    # ------------------------------------------------------------------ examples

    def prepare(self, example: Example) -> Forced | None:
        """The teacher-forced sequence, or None (skipped) when the prompt exceeds
        ``max_prompt_tokens`` or nothing of the answer fits ``max_answer_tokens``."""
        sample: Sample = example.sample
        prompt = build_prompt(sample, self.templates, unknown="as_is")
        try:
            assert sample.gold is not None
            f = self.family.forced(prompt, sample.gold, self.cfg.max_answer_tokens)
        except (ValueError, OSError) as e:
            raise ValueError(f"{example.where}: {e}") from e
        too_long = f.prompt_inputs["input_ids"].shape[1] > self.cfg.max_prompt_tokens
        return None if too_long or not f.tokens else f

    def example_losses(self, example: Example) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token text and image cross-entropies of one example (no grad)."""
        f = self.prepare(example)
        if f is None:
            return torch.zeros(0), torch.zeros(0)
        with torch.no_grad():
            return self.family.losses(f)

    # ------------------------------------------------------------------ one step

    def train_step(self) -> dict[str, Any]:
        cfg, t0 = self.cfg, time.perf_counter()
        draws = self.sampler.draw(self.step, cfg.batch_size * cfg.grad_accum)
        mine, _ = self.dist.shard(draws, "batch_size * grad_accum")
        prepared = [self.prepare(self.by_kind[k][i]) for k, i in mine]
        forced = [f for f in prepared if f is not None]
        # token counts of the whole step (all processes): each loss part is a share of its mean
        n_text = int(self.dist.sum(sum(f.n_text for f in forced)))
        n_image = int(self.dist.sum(sum(f.n_image for f in forced)))
        world = self.dist.world  # the gradient average divides by it again
        self.model.train()
        self.model.model.vqmodel.eval()
        self.optimizer.zero_grad(set_to_none=True)
        sum_text = sum_image = 0.0
        whole: list[torch.Tensor] = []  # DeepSpeed: one backward per step
        for start in range(0, len(forced), cfg.batch_size):
            parts = []
            micro = forced[start : start + cfg.batch_size]
            for text_ce, image_ce in self.family.batch_losses(micro):
                if n_text and len(text_ce):
                    parts.append(cfg.weight_text * text_ce.sum() / n_text)
                    sum_text += float(text_ce.detach().sum())
                if n_image and len(image_ce):
                    parts.append(cfg.weight_image * image_ce.sum() / n_image)
                    sum_image += float(image_ce.detach().sum())
            if parts and self.engine is not None:
                whole.extend(parts)
            elif parts:
                self.backward(torch.stack(parts).sum() * world)
        if self.engine is not None:  # a rank without tokens still joins the engine's reduce
            zero = sum(p.sum() for p in self.params) * 0.0
            self.backward((torch.stack(whole).sum() if whole else zero) * world)
        grad_norm = self.optimizer_step()
        self.model.eval()
        self.step += 1
        sum_text, sum_image = self.dist.sum(sum_text), self.dist.sum(sum_image)
        loss_text = sum_text / n_text if n_text else None
        loss_image = sum_image / n_image if n_image else None
        record = {
            "step": self.step,
            "loss": cfg.weight_text * (loss_text or 0.0) + cfg.weight_image * (loss_image or 0.0),
            "loss_text": loss_text,
            "loss_image": loss_image,
            "counts": counts(draws),
            "tokens_text": n_text,
            "tokens_image": n_image,
            "truncated": int(self.dist.sum(sum(f.truncated for f in forced))),
            "skipped": int(self.dist.sum(len(prepared) - len(forced))),
            "grad_norm": grad_norm,
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t0,
        }
        self.write_record(record)
        return record

    def progress_metrics(self, record: dict[str, Any]) -> str:
        return warmup_metrics(record)

    def console_line(self, rec: dict[str, Any]) -> str:
        f = {k: "-" if rec[k] is None else f"{rec[k]:.4f}" for k in ("loss_text", "loss_image")}
        kinds = " ".join(f"{k}={n}" for k, n in rec["counts"].items())
        return (
            f"[bold]warm-up {rec['step']}/{self.cfg.steps}[/] loss {rec['loss']:.4f} (text "
            f"{f['loss_text']}, image {f['loss_image']}) {kinds} {rec['seconds']:.2f}s"
        )

    # ------------------------------------------------------------------ the loop

    def wants_final(self) -> bool:
        return self.cfg.save

    def train(self, *, resume: bool = False, stop_after: int | None = None) -> WarmupResult:
        """Run to ``config.steps`` (or ``stop_after`` more steps, to simulate an interruption)."""
        final, seconds = self.run(resume=resume, stop_after=stop_after)
        return WarmupResult(self.records(), self.log_path, final, seconds)


def warmup(
    config: WarmupConfig, *, resume: bool = False, overwrite: bool = False, console: Any = None
) -> WarmupResult:
    """Build a warm-up trainer from ``config`` and run it (``resume``/``overwrite``: ``train``)."""
    if main_process():
        prepare_output_dir(Path(config.output_dir), resume=resume, overwrite=overwrite)
    return WarmupTrainer(config, console=console).train(resume=resume)
