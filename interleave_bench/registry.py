"""One small registry for benchmarks, models and scorers.

Entries are registered as ``"module:attribute"`` strings and imported on first use, so ``ibench
--version`` never imports torch. Unknown names get a "did you mean" suggestion. Third-party
packages add entries through the entry-point groups ``interleave_bench.<kind>``.
"""

from __future__ import annotations

import difflib
import importlib
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def resolve(target: Any) -> Any:
    """``"package.module:attr.attr"`` imported now; any other object is itself (a spec may hold
    the class or function rather than its name)."""
    if not isinstance(target, str):
        return target
    module, sep, attr = target.partition(":")
    if not sep or not attr:
        raise ValueError(f"{target!r}: expected 'package.module:attribute'")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class UnknownNameError(KeyError):
    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        self.message = f"unknown {kind} {name!r}{hint} (known: {', '.join(sorted(known))})"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._targets: dict[str, str] = {}
        self._loaded: dict[str, T] = {}
        self._entry_points_read = False

    def register(self, name: str, target: str | T) -> None:
        """Register ``name`` -> ``"package.module:attribute"`` (imported lazily), or an object
        itself (a spec built at run time, say in a test)."""
        if not isinstance(target, str):
            if name in self._targets and self._loaded.get(name) is not target:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._targets[name], self._loaded[name] = f"<object {name}>", target
            return
        if name in self._targets and self._targets[name] != target:
            raise ValueError(f"{self.kind} {name!r} is already registered as {self._targets[name]}")
        self._targets[name] = target

    def unregister(self, name: str) -> None:
        """Forget ``name`` (a test's temporary entry); unknown names are ignored."""
        self._targets.pop(name, None)
        self._loaded.pop(name, None)

    def _read_entry_points(self) -> None:
        if self._entry_points_read:
            return
        self._entry_points_read = True
        for ep in entry_points(group=f"interleave_bench.{self.kind}s"):
            self._targets.setdefault(ep.name, ep.value)

    def names(self) -> list[str]:
        self._read_entry_points()
        return sorted(self._targets)

    def get(self, name: str) -> T:
        self._read_entry_points()
        key = name.lower()
        if key not in self._targets:
            raise UnknownNameError(self.kind, name, list(self._targets))
        if key not in self._loaded:
            obj = resolve(self._targets[key])
            self._loaded[key] = obj() if isinstance(obj, type) else obj
        return self._loaded[key]


# each target is a spec object declared in the kind's own module (see ``benchmarks/spec.py``)
benchmarks: Registry[Any] = Registry("benchmark")
benchmarks.register("mmie", "interleave_bench.benchmarks.mmie:SPEC")
benchmarks.register("interleavedbench", "interleave_bench.benchmarks.interleavedbench:SPEC")
benchmarks.register("opening", "interleave_bench.benchmarks.opening:SPEC")
benchmarks.register("isg", "interleave_bench.benchmarks.isg:SPEC")

# scoring protocols (see ``protocols.py``): offline scorers, judge protocols, pairwise arenas
protocols: Registry[Any] = Registry("protocol")
protocols.register("mmie", "interleave_bench.scorers.mmie:SPEC")
protocols.register("interleaved_eval", "interleave_bench.scorers.interleaved_eval:SPEC")
protocols.register("opening_scores", "interleave_bench.scorers.opening:SCORES_SPEC")
protocols.register("opening_pairwise", "interleave_bench.scorers.opening:PAIRWISE_SPEC")
protocols.register("isg", "interleave_bench.scorers.isg:SPEC")
protocols.register("structure", "interleave_bench.scorers.structure:SPEC")
protocols.register("text_similarity", "interleave_bench.scorers.similarity:TEXT_SPEC")
protocols.register("clip_score", "interleave_bench.scorers.similarity:CLIP_SPEC")
protocols.register("text_critic", "interleave_bench.scorers.text_critic:SPEC")
protocols.register("visual_alignment", "interleave_bench.scorers.visual_alignment:SPEC")
protocols.register("format_fidelity", "interleave_bench.scorers.format_fidelity:SPEC")

# model families (see ``models/families.py``): each a FamilySpec declared in its adapter's module
models: Registry[Any] = Registry("model")
models.register("janus", "interleave_bench.models.janus:FAMILY")
models.register("emu3", "interleave_bench.models.emu3:FAMILY")
models.register("text", "interleave_bench.models.text_lm:FAMILY")
models.register("replay", "interleave_bench.models.replay:FAMILY")
models.register("pipeline", "interleave_bench.models.pipeline:FAMILY")
