"""Which in-process judge a checkpoint gets, and how a run's manifest names the judge path.

Kept apart from ``local`` and ``internvl`` so that neither imports the other: both backends
build on ``local.QueuedJudge``; only this module knows them both.
"""

from __future__ import annotations

from typing import Any

from .internvl import InternVLJudge, is_internvl_chat
from .local import LocalJudge, QueuedJudge

LOCAL_BACKENDS = ("auto", "generic", "internvl")


def local_judge(
    path: str, *, trust_remote_code: bool = False, backend: str = "auto", **kwargs: Any
) -> QueuedJudge:
    """The in-process judge for a checkpoint folder: InternVL's own chat path when its config
    names InternVL's chat model (or ``backend="internvl"``), the generic transformers one
    otherwise (or ``backend="generic"``)."""
    if backend not in LOCAL_BACKENDS:
        raise ValueError(
            f"unknown local judge backend {backend!r}: use {', '.join(LOCAL_BACKENDS)}"
        )
    if backend == "internvl" or (backend == "auto" and is_internvl_chat(path)):
        return InternVLJudge(path, trust_remote_code=trust_remote_code, **kwargs)
    return LocalJudge(path, trust_remote_code=trust_remote_code, **kwargs)


def judge_setup(scorer: Any) -> dict[str, Any]:
    """For a run's manifest: which judge path computed the judgments (server, local-generic,
    local-internvl), with its tile limit, and the system message the scorer sends."""
    engine = getattr(scorer, "engine", None)
    if engine is None:
        return {}
    backend = getattr(engine, "backend", None)
    describe = getattr(backend, "describe", None)
    out: dict[str, Any] = (
        describe() if isinstance(backend, QueuedJudge) and describe else {"path": "server"}
    )
    out.setdefault("max_tiles", None)  # a server's or processor's own setting
    if hasattr(scorer, "system_prompt"):
        out["system_prompt"] = scorer.system_prompt
    return out
