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


def _option_names() -> set[str]:
    """A component's ``options``: the ``JudgeSpec`` fields and the protocol's own settings."""
    from ..config import JudgeSpec

    return set(JudgeSpec.model_fields) | set(_PROTOCOL_OPTIONS)


def _scorer(cfg: TrainConfig, protocol: str, options: dict[str, Any], where: str) -> Any:
    from ..config import ConfigError, JudgeSpec, build
    from ..scoring import ScoreConfig, build_engine, build_scorer

    if protocol == "structure":
        from ..scorers.structure import StructureScorer

        return StructureScorer(expected=options.pop("expected", cfg.expected), prefer_gold=False)
    own = {k: options.pop(k) for k in _PROTOCOL_OPTIONS if k in options}
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
