"""Model families as registered plugins: each family is declared once, by a ``FamilySpec``.

Why: every place that used to branch on ``adapter.family`` (loading, ``--model-type``, rollouts,
recomputed log-probs, warm-up targets, structural tokens) reads the spec instead, so a new family
is one module plus one registration line, and a capability a family lacks is a named error
("emu3 cannot do X"), never another family's code path.

API::

    FamilySpec(name, adapter="module:Class", model_types=(...), detect=None, tiny=None,
               capabilities={"rollout": "module:func", ...}, folder=True, description="")
    spec.require("rollout")      # the implementation, or ModelError("<name> cannot do rollout ...")
    spec.can("rollout")          # bool
    spec.capability_names()      # sorted declared capabilities
    register(spec)               # == registry.models.register(spec.name, spec)
    get(name)                    # the spec; unknown: UnknownNameError ("did you mean"), exit 2
    names()                      # registered names (imports nothing)
    family_of(adapter)           # the spec of ``adapter.family``
    detect(path, override=None)  # the spec for a model folder (config.json) or ``--model-type``
    UNSUPPORTED                  # model_type -> why it cannot be used (Chameleon, Anole)

Built-ins are registered in ``interleave_bench.registry`` (``models.register("janus",
"interleave_bench.models.janus:FAMILY")``); plugins use the entry-point group
``interleave_bench.models`` with the same ``"module:attribute"`` value. Implementations are
``"module:attribute"`` strings imported on first use (or the objects themselves), so listing
families never imports torch.

Capabilities and their call signatures:

- ``generate``: the adapter's ``generate(prompts, settings, store, *, return_trace=False)``.
- ``rollout``: ``f(adapter, prompts, settings, group_size, store, seed, prompt_offset)`` ->
  ``list[train.rollout.Rollout]`` (the model already in eval mode).
- ``teacher_forced_logprobs``: ``f(adapter, rollouts, settings, image_logprob)`` -> ``(logp,
  entropy)``, both ``(B, T)`` zero-padded tensors.
- ``warmup_targets``: ``Class(adapter, settings)``, a ``train.warmup._Family``.
- ``structural_token_ids``: ``f(adapter)`` -> ``frozenset[int]`` (tokens that carry no content).

Loading: a ``folder`` family's ``adapter`` is called as ``adapter(path, device=, dtype=,
load_kwargs=)`` on a resolved model folder; a non-folder family's (replay, pipeline) as
``adapter(model, device=, dtype=, load_kwargs=, data=, pipeline=)`` on ``--model`` as given.
``tiny`` is a builder ``f(dest, *, seed=0) -> Path`` behind ``--model tiny:NAME``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..registry import UnknownNameError, models, resolve
from .base import UNSUPPORTED, ModelError

CAPABILITIES = (
    "generate",
    "rollout",
    "teacher_forced_logprobs",
    "warmup_targets",
    "structural_token_ids",
)


@dataclass(frozen=True)
class FamilySpec:
    """One model family: how to load it and what it can do (see the module docstring)."""

    name: str
    adapter: Any  # "module:Class" or a callable
    model_types: tuple[str, ...] = ()  # config.json ``model_type`` values it claims
    detect: Any = None  # "module:func": (config dict) -> bool, tried after exact claims
    tiny: Any = None  # "module:builder": (dest, *, seed=0) -> Path
    capabilities: Mapping[str, Any] = field(default_factory=dict)
    folder: bool = True  # --model is a model folder / Hub id / tiny:NAME
    description: str = ""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.capabilities) - set(CAPABILITIES))
        if unknown:
            raise ValueError(
                f"family {self.name!r}: unknown capabilities {unknown} "
                f"(known: {', '.join(CAPABILITIES)})"
            )

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    def capability_names(self) -> list[str]:
        return sorted(self.capabilities)

    def require(self, capability: str) -> Any:
        """The implementation of ``capability``, or a ``ModelError`` naming this family."""
        if capability not in self.capabilities:
            has = ", ".join(self.capability_names()) or "nothing"
            raise ModelError(f"{self.name} cannot do {capability} (it declares: {has})")
        return resolve(self.capabilities[capability])

    def load(self, model: str, **options: Any) -> Any:
        """An adapter for ``model`` (a folder path for folder families)."""
        if self.folder:
            options = {k: options.get(k) for k in ("device", "dtype", "load_kwargs")}
            options["device"] = options["device"] or "auto"
        return resolve(self.adapter)(model, **options)


def register(spec: FamilySpec) -> None:
    """Register a spec object (a plugin normally uses the entry-point group instead)."""
    models.register(spec.name, spec)


def names() -> list[str]:
    return models.names()


def get(name: str) -> FamilySpec:
    try:
        spec = models.get(name)
    except UnknownNameError:
        raise UnknownNameError("model family", name, models.names()) from None
    if not isinstance(spec, FamilySpec):
        raise ModelError(f"model family {name!r} is registered as a {type(spec).__name__}")
    return spec


def family_of(adapter: Any) -> FamilySpec:
    """The spec of ``adapter``'s family; an adapter without one is an error, not Janus."""
    name = getattr(adapter, "family", None)
    if not isinstance(name, str):
        raise ModelError(f"{type(adapter).__name__} declares no model family (.family)")
    return get(name)


def _claimant(model_type: str) -> FamilySpec | None:
    """The family claiming ``model_type`` (its own name first: one import in the common case)."""
    order = [model_type] if model_type in names() else []
    for name in order + [n for n in names() if n != model_type]:
        spec = get(name)
        if spec.folder and model_type in spec.model_types:
            return spec
    return None


def detect(path: str | Path, override: str | None = None) -> FamilySpec:
    """The family from ``--model-type`` or ``config.json`` (``model_type`` claimed by a family,
    else the first family whose ``detect`` accepts the config), with clear errors."""
    if override:
        key = override.lower()
        if key in UNSUPPORTED:
            raise ModelError(UNSUPPORTED[key])
        return get(key)
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        raise ModelError(
            f"{path}: no config.json here; pass a model folder or Hub id "
            f"(families: {', '.join(names())})"
        )
    try:
        data = json.loads(cfg.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{cfg}: unreadable ({e})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{cfg}: expected a JSON object")
    model_type = str(data.get("model_type", "")).lower()
    spec = _claimant(model_type)
    if spec is not None:
        return spec
    if model_type in UNSUPPORTED:
        raise ModelError(UNSUPPORTED[model_type])
    for name in names():
        spec = get(name)
        if spec.detect is not None and resolve(spec.detect)(data):
            return spec
    raise ModelError(
        f"{cfg}: unsupported model_type {model_type!r}; families: {', '.join(names())} "
        "(or pass --model-type)"
    )


def tiny_builder(name: str) -> Callable[..., Path]:
    """The builder behind ``tiny:NAME``, or a ``ModelError`` listing the families that have one."""
    spec = get(name) if name in names() else None
    if spec is None or spec.tiny is None:
        have = [f"tiny:{n}" for n in names() if get(n).tiny is not None]
        raise ModelError(f"tiny:{name}: expected one of {', '.join(have)}")
    return resolve(spec.tiny)
