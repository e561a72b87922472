"""The steps of a rollout for process supervision: one list that ties each step's token span in
the ``DecodeTrace`` to its segment of the interleaved output.

A step is a text block or an image. The decoders' trace segments also hold spans that carry no
content (Janus: the ``<end_of_image>``/``<begin_of_image>`` pair between two images, the final
EOS; Emu3: a lone EOS after an image): those are not steps. The output (what scorers see) leaves
out text that decodes to nothing and, in a decoder that skips it, an image that failed to decode.
``rollout_steps`` walks both in order and pairs them, so a reward computed on an output segment
lands on the tokens that produced it; a step with no output segment gets ``segment=None`` (its
reward is then "not applicable"). Built here from the trace and the output, not inside the
decoders, so every family gets the same rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from ..models.base import DecodeTrace
from ..types import Interleaved

StepKind = Literal["text", "image"]


class StepAlignmentError(ValueError):
    """The output holds segments that no step of the trace produced (a decoder bug)."""


@dataclass(frozen=True)
class Step:
    """One modality step: ``[start, end)`` over generated positions, and the index of its
    segment in the rollout's output (``None`` when the output has none for it)."""

    kind: StepKind
    start: int
    end: int
    segment: int | None

    @property
    def span(self) -> tuple[int, int]:
        return self.start, self.end


def rollout_steps(
    trace: DecodeTrace,
    output: Interleaved,
    structural: frozenset[int],
    *,
    text_of: Callable[[Sequence[int]], str] | None = None,
) -> list[Step]:
    """The steps of one rollout, in time order.

    ``structural``: the family's ``structural_token_ids`` (tokens that carry no content); a text
    span made of them only is not a step. ``text_of``: the tokenizer's decode; with it, a text
    step whose tokens decode to blank text is known to have no output segment (without it, a
    text step takes the next output segment when that one is text). Raises
    ``StepAlignmentError`` when output segments are left over or the kinds cannot pair.
    """
    ids = trace.token_ids
    segs = list(output.segments)
    k = 0
    steps: list[Step] = []
    for kind, start, end in trace.segments:
        if kind == "image":
            match = k < len(segs) and segs[k].is_image
        elif kind == "text":
            if all(t in structural for t in ids[start:end]):
                continue  # delimiters only: not a step
            blank = text_of is not None and not text_of(list(ids[start:end])).strip()
            match = not blank and k < len(segs) and not segs[k].is_image
        else:
            raise StepAlignmentError(f"trace segment of unknown kind {kind!r}")
        steps.append(Step(kind, start, end, k if match else None))  # type: ignore[arg-type]
        k += match
    if k != len(segs):
        raise StepAlignmentError(
            f"{len(segs) - k} of {len(segs)} output segments ({output.structure()}) have no step "
            f"in the trace ({len(steps)} steps)"
        )
    return steps


def structure_of_steps(steps: Sequence[Step]) -> str:
    """``"TIT"``-style letters of the steps (images that failed to decode included)."""
    return "".join("I" if s.kind == "image" else "T" for s in steps)
