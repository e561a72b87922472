"""Rewards named in a recipe: the scorers ``ibench score`` builds, as ``NativeReward``s.

One component is a plain ``NativeReward``; several become a ``HybridReward`` (text, visual,
format, judge) with their weights. Judge-based components get their own judgment cache under the
run folder, so a resumed run does not pay twice for a judgment it already has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import TrainConfig
from .rewards import HybridReward, NativeReward

KNOWN_KEYS = {"protocol", "weight", "name", "key", "options"}


def validate_rewards(cfg: TrainConfig) -> list[str]:
    """Check the recipe's reward specs without building anything; return the component names."""
    from ..protocols import protocol_names

    names: list[str] = []
    for i, spec in enumerate(cfg.rewards or []):
        where = f"rewards[{i}]"
        if not isinstance(spec, dict) or "protocol" not in spec:
            raise ValueError(f"{where}: expected a mapping with a 'protocol' key, got {spec!r}")
        unknown = set(spec) - KNOWN_KEYS
        if unknown:
            raise ValueError(
                f"{where}: unknown key(s) {sorted(unknown)}; known {sorted(KNOWN_KEYS)}"
            )
        usable = protocol_names("offline", "judge")  # a pairwise arena is not a reward
        if spec["protocol"] not in usable:
            raise ValueError(f"{where}: protocol {spec['protocol']!r} is not one of {usable}")
        options = spec.get("options") or {}
        if not isinstance(options, dict):
            raise ValueError(f"{where}.options: expected a mapping")
        allowed = _option_names() | ({"expected"} if spec["protocol"] == "structure" else set())
        if set(options) - allowed:
            raise ValueError(f"{where}.options: unknown {sorted(set(options) - allowed)}")
        name = str(spec.get("name") or spec["protocol"])
        if name in names:
            raise ValueError(f"{where}: duplicate reward name {name!r}")
        names.append(name)
    return names  # reward_mode and reward_missing: checked by TrainConfig (train.config.CHOICES)


def build_reward(cfg: TrainConfig, default_scorer: Any) -> Any:
    """The run's reward: the recipe's components, or ``default_scorer`` when there are none."""
    if not cfg.rewards:
        return NativeReward(default_scorer)
    names = validate_rewards(cfg)
    parts: dict[str, tuple[Any, float]] = {}
    for i, (spec, name) in enumerate(zip(cfg.rewards, names, strict=True)):
        where = f"rewards[{i}]"
        scorer = _scorer(cfg, str(spec["protocol"]), dict(spec.get("options") or {}), where)
        parts[name] = (
            NativeReward(scorer, key=spec.get("key"), name=name),
            float(spec.get("weight", 1.0)),
        )
    if len(parts) == 1:
        return next(iter(parts.values()))[0]
    return HybridReward(
        parts,
        cfg.reward_mode,  # type: ignore[arg-type]
        group_size=cfg.group_size,
        missing=cfg.reward_missing,  # type: ignore[arg-type]
    )


_PROTOCOL_OPTIONS = ("protocol_file", "allow_unofficial", "clip_model", "extra")
#: options of the hybrid-reward protocols, passed to their builders through ``extra``
_EXTRA_OPTIONS = ("backend", "imagereward_model", "max_images", "require_text")


def _option_names() -> set[str]:
    """A component's ``options``: the ``JudgeSpec`` fields and the protocol's own settings."""
    from ..config import JudgeSpec

    return set(JudgeSpec.model_fields) | set(_PROTOCOL_OPTIONS) | set(_EXTRA_OPTIONS)


def _scorer(cfg: TrainConfig, protocol: str, options: dict[str, Any], where: str) -> Any:
    from ..config import ConfigError, JudgeSpec, build
    from ..scoring import ScoreConfig, build_engine, build_scorer

    if protocol == "structure":
        from ..scorers.structure import StructureScorer

        return StructureScorer(expected=options.pop("expected", cfg.expected), prefer_gold=False)
    own = {k: options.pop(k) for k in _PROTOCOL_OPTIONS if k in options}
    moved = {k: options.pop(k) for k in _EXTRA_OPTIONS if k in options}
    if moved:
        own["extra"] = {**(own.get("extra") or {}), **moved}
    if protocol == "format_fidelity":  # the recipe's image limit unless the component sets one
        own.setdefault("extra", {}).setdefault("max_images", cfg.generation.get("max_images"))
    for k in ("protocol_file", "clip_model"):
        if own.get(k) is not None:
            own[k] = Path(own[k])
    options.setdefault("preflight", False)
    try:
        judge = build(JudgeSpec, options, f"{where}.options")
    except ConfigError as e:
        raise ValueError(str(e)) from None
    opts = ScoreConfig(
        bench=cfg.benchmark,
        predictions=Path(cfg.output_dir),
        protocol=protocol,
        out=Path(cfg.output_dir) / "rewards" / protocol,
        judge=judge,
        **own,
    )
    opts.out.mkdir(parents=True, exist_ok=True)
    return build_scorer(opts, build_engine(opts))


# --------------------------------------------------------------------------- logging and streams


def reward_failures(reward: Any) -> dict[str, int]:
    """``{"<component>: <reason>": count}`` of the latest call's judgments that were not ok (the
    ``None`` rewards), from a ``NativeReward`` or each component of a ``HybridReward``."""
    parts = getattr(reward, "components", None)
    named = (
        [(n, r) for n, (r, _) in parts.items()]
        if isinstance(parts, dict)
        else [(getattr(reward, "__name__", "reward"), reward)]
    )
    out: dict[str, int] = {}
    for name, r in named:
        for j in getattr(r, "last_judgments", None) or []:
            if j.status != "ok":
                key = f"{name}: {j.status}: {j.reason or 'no reason'}"
                out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def failure_fields(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The step record's failure fields from every process's reward metrics: reward failures by
    reason (``reward_failures``, their total ``reward_failure_count``) and the rollout error
    messages (``rollout_errors``, each message once with its count)."""
    failures: dict[str, int] = {}
    errors: dict[str, int] = {}
    for p in parts:
        for reason, n in (p.get("reward_failures") or {}).items():
            failures[reason] = failures.get(reason, 0) + n
        for message in p.get("rollout_errors") or []:
            errors[message] = errors.get(message, 0) + 1
    return {
        "reward_failures": dict(sorted(failures.items())),
        "reward_failure_count": sum(failures.values()),
        "rollout_errors": dict(sorted(errors.items())),
    }


def stream_spec(adapter: Any, settings: Any) -> Any:
    """The family's structure tokens for ``format_fidelity``'s token-stream checks (None for a
    family without images)."""
    from ..scorers.format_fidelity import StreamSpec

    family = getattr(adapter, "family", None)
    if family == "janus":
        from ..models.janus import janus_token_ids

        ids = janus_token_ids(adapter.model, adapter.processor)
        n = int(adapter.model.config.vision_config.num_image_tokens)
        return StreamSpec(
            frozenset({ids.boi}), frozenset({ids.eoi}), frozenset(ids.eos), n, settings.max_images
        )
    if family == "emu3":
        v = adapter.vocab
        return StreamSpec(
            frozenset({v.boi}),
            frozenset({v.eoi}),
            frozenset(v.eos),
            None,
            settings.max_images,
            delimiters_in_span=True,
        )
    return None
