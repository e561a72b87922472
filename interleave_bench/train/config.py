"""``BaseTrainConfig`` (shared by every trainer) and ``TrainConfig`` (GRPO); saved next to the
checkpoints of a run."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ..models.base import GenerationSettings

C = TypeVar("C", bound="BaseTrainConfig")

# the choices of TrainConfig's enumerated keys, checked when a config is made (a recipe typo such
# as loss_type=gspo stops before a model is loaded, not at the first optimizer step)
CHOICES: dict[str, tuple[str, ...]] = {
    "loss_type": ("grpo", "bnpo", "dr_grpo", "dapo"),
    "importance": ("token", "sequence"),
    "scale_rewards": ("group", "batch", "none"),
    "image_logprob": ("cond", "cfg"),
    "reward_mode": ("sum_then_normalise", "normalise_then_sum"),
    "reward_missing": ("drop", "ignore"),
    "report_to": ("none", "tensorboard", "wandb", "mlflow"),
    "advantage": ("outcome", "process", "both"),
    "process_reward": ("auto", "scorers", "structure"),
}


def read_recipe(path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe file's keys with its ``base:`` resolved, so an ablation recipe is its base plus
    the keys it changes.

    ``base: ../janus_pro_1b_grpo.yaml`` (relative to the recipe's folder) loads that recipe
    first (itself possibly with a base); this file's keys then override it: a mapping value
    (``generation``, ``lora``) merges key by key (``null`` removes a key), anything else,
    ``rewards`` lists included, replaces. Errors are ``interleave_bench.config.ConfigError``
    naming the file.
    """
    import yaml

    from ..config import ConfigError

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the recipe ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: cannot read the recipe (invalid YAML: {e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of TrainConfig fields")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: base: expected the path of another recipe, got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in _chain or base_path == path.resolve():
        raise ConfigError(f"{path}: base: {base} leads back to itself")
    if not base_path.is_file():
        raise ConfigError(f"{path}: base: {base} is not a file next to this recipe")
    merged = read_recipe(base_path, (*_chain, path.resolve()))
    for key, value in data.items():
        old = merged.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            merged[key] = {k: v for k, v in {**old, **value}.items() if v is not None}
        else:
            merged[key] = value
    return merged


@dataclass
class BaseTrainConfig:
    """What every trainer (GRPO, warm-up) reads: model, run folder, optimizer, peft, processes.

    ``lora``: ``None`` for full fine-tuning, or ``{r, alpha, dropout, target_modules}`` (peft):
    only the adapters train, the base weights stay as loaded. ``quantization``: ``"4bit"`` /
    ``"8bit"`` loads the base model through bitsandbytes (QLoRA; CUDA only, needs ``lora``).
    ``grad_accum``: micro-batches per optimizer update. ``report_to``: ``none``, or the
    experiment tracker (``tensorboard``, ``wandb``, ``mlflow``) that also receives each step's
    numbers (``train.trackers``). ``gradient_checkpointing``: keep only each decoder layer's
    inputs and recompute its activations in backward (same loss and gradients, less memory,
    about one more forward per update). Data parallelism and DeepSpeed come from
    the launcher (``torchrun`` / ``accelerate launch``), not from a key (``train.distributed``).
    """

    model: str
    output_dir: str
    steps: int = 20
    lr: float = 2e-3
    weight_decay: float = 0.0
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0
    lora: dict[str, Any] | None = None
    quantization: str | None = None
    dtype: str = "float32"
    checkpoint_every: int = 0  # 0 = only at the end
    seed: int = 0
    device: str = "cpu"
    report_to: str = "none"
    gradient_checkpointing: bool = False  # recompute layer activations in backward: less memory

    #: mapping-valued keys whose inner keys are checked against a settings class
    __config_keys__: ClassVar[dict[str, type]] = {}

    @classmethod
    def from_yaml(cls: type[C], path: str | Path, overrides: Any = None) -> C:
        """A recipe file plus dotted ``overrides`` (``["generation.temperature=0.5"]`` or a
        mapping), keys and values checked (``interleave_bench.config.ConfigError`` names the key:
        ``generation.temprature: unknown key; did you mean temperature?``)."""
        from ..config import build, merge_overrides

        return build(cls, merge_overrides(read_recipe(Path(path)), overrides), str(path))

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            value = getattr(self, name, None)
            if value is not None and value not in allowed:
                close = difflib.get_close_matches(str(value), allowed, n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
                raise ValueError(f"{name}: {value!r} is not one of {', '.join(allowed)}{hint}")
        for name, settings in self.__config_keys__.items():
            known = [f.name for f in fields(settings) if f.name != "seed"]
            for key in getattr(self, name) or {}:
                if key not in known:
                    close = difflib.get_close_matches(str(key), known, n=1)
                    hint = (
                        f"; did you mean {close[0]}?" if close else f"; known: {', '.join(known)}"
                    )
                    raise ValueError(f"{name}.{key}: unknown key{hint}")


@dataclass
class TrainConfig(BaseTrainConfig):
    """Recipe keys (``train/*.yaml``). Groups: data, GRPO, rewards, model/peft, logging.

    ``rewards``: ``None`` for the structure reward asking for ``expected`` (tiny recipes), or a
    list of components, each ``{protocol, weight, name?, key?, options?}``: ``protocol`` is any
    ``ibench score`` protocol (``structure``, ``text_similarity``, ``clip_score``, ``mmie``,
    ``interleaved_eval``, ``opening_scores``), ``options`` the ``ScoreOptions`` fields it needs
    (``judge_model``, ``judge_base_url``, ``clip_model``, ...; ``expected`` for ``structure``).
    Several components form a ``HybridReward`` combined by ``reward_mode``.

    Under ``lora`` (``BaseTrainConfig``) the KL reference is the base model with the adapters
    switched off (no second copy).
    """

    benchmark: str = "mmie:sample"
    max_samples: int | None = None  # use only the first N samples as the prompt pool
    prompts_per_step: int = 2  # over all processes
    group_size: int = 4
    # rollouts decoded together on one KV cache (Janus, Emu3): None = all of a step's rollouts
    # on this process (prompts_per_step / processes * group_size); lower it when they do not fit
    rollout_batch_size: int | None = None
    beta: float = 0.04  # 0: no reference model at all
    eps_low: float = 0.2
    eps_high: float = 0.2
    loss_type: str = "grpo"
    importance: str = "token"
    scale_rewards: str = "group"
    image_logprob: str = "cond"  # "cfg" | "cond": which image log-probs form the ratio
    updates_per_rollout: int = 1
    #: zero every dropout (TRL's default): the policy forward, the rollout's old log-probs and
    #: the reference then see the same function, so the first update's ratio is 1
    disable_dropout: bool = True
    dynamic_sampling: bool = False  # drop zero-spread groups and refill with new prompts
    max_refill_rounds: int = 3
    # advantages (train/README.md "Process supervision"): "outcome" one per completion, "process"
    # per token from per-step rewards, "both" outcome + process_weight * process; unset: "both"
    # when process_weight > 0, else "outcome". process_reward: "scorers" (text steps by the
    # text_critic component, images by visual_alignment), "structure" (1 while the steps so far
    # follow ``expected``), "auto" (scorers when the recipe has one of those components)
    advantage: str | None = None
    process_weight: float = 0.0
    process_reward: str = "auto"
    expected: str = "IT"
    rewards: list[dict[str, Any]] | None = None
    reward_mode: str = "sum_then_normalise"
    reward_missing: str = "drop"
    save_final: bool = True  # write output_dir/final (save_pretrained + processor)
    generation: dict[str, Any] = field(
        default_factory=lambda: {
            "max_new_tokens": 24,
            "temperature": 1.0,
            "top_p": 1.0,
            "cfg_scale": 5.0,
            "max_images": 2,
        }
    )

    __config_keys__: ClassVar[dict[str, type]] = {"generation": GenerationSettings}

    def __post_init__(self) -> None:
        super().__post_init__()
        if "batch_size" in (self.generation or {}):
            raise ValueError("generation.batch_size: set rollout_batch_size instead")
        if self.rollout_batch_size is not None and self.rollout_batch_size < 1:
            raise ValueError(f"rollout_batch_size: must be >= 1, got {self.rollout_batch_size}")
        if self.advantage is None:
            self.advantage = "both" if self.process_weight > 0 else "outcome"
        if self.advantage == "both" and not self.process_weight > 0:
            raise ValueError("advantage: both needs process_weight > 0 (the process share)")
        if self.process_reward == "scorers" and self.advantage != "outcome":
            protocols = {r.get("protocol") for r in self.rewards or [] if isinstance(r, dict)}
            if not protocols & {"text_critic", "visual_alignment"}:
                raise ValueError(
                    "process_reward: scorers needs a rewards component with protocol "
                    "text_critic (text steps) or visual_alignment (image steps)"
                )

    def settings(self) -> GenerationSettings:
        """Rollout settings; ``batch_size`` is ``rollout_batch_size`` (unset: the whole step)."""
        batch = self.rollout_batch_size or self.prompts_per_step * self.group_size
        return GenerationSettings(**{**self.generation, "seed": self.seed, "batch_size": batch})
