"""InterleavedBench (EMNLP 2024): ``interleaved_bench.json`` plus PNGs in ``zipped_images/*.zip``.

Rows are LLaVA-style: ``conversations`` with a human turn whose ``<image>`` placeholders map, in
order, to the first entries of ``image``; the remaining entries are the gold output images, placed
at the ``<image>`` placeholders of the gpt turn when there is one. The subset is context-based when
the instruction carries images, context-free otherwise.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..types import ImageRef, Interleaved, Sample, Segment
from .base import Benchmark, HubSpec, RowContext, as_row, opt, req, typed
from .problems import RowError
from .spec import BenchmarkSpec

PLACEHOLDER = "<image>"
_LEADING_DOT = re.compile(r"^\.(?:\s+|$)")
HUMAN = ("human", "user")
GPT = ("gpt", "assistant")


def _clean(piece: str) -> str:
    """Drop ``<BEGIN>`` markers and the stray "." that starts some pieces after a placeholder."""
    return _LEADING_DOT.sub("", piece.replace("<BEGIN>", "").strip())


def fill(text: str, images: list[ImageRef]) -> tuple[Interleaved, int]:
    """Split ``text`` at placeholders and put ``images`` there in order; return the sequence and
    how many placeholders it had."""
    pieces = text.split(PLACEHOLDER)
    segments: list[Segment] = []
    for i, piece in enumerate(pieces):
        if cleaned := _clean(piece):
            segments.append(Segment.of_text(cleaned))
        if i < len(pieces) - 1 and i < len(images):
            segments.append(Segment.of_image(images[i]))
    return Interleaved(segments), len(pieces) - 1


class InterleavedBench(Benchmark):
    name = "interleavedbench"
    title = "InterleavedBench"
    data_file_name = "interleaved_bench.json"
    count_by = "task"
    hub = HubSpec("mqliu/InterleavedBench", "model", ("interleaved_bench.json", "zipped_images/*"))
    hosting = "Hugging Face model repo mqliu/InterleavedBench"
    licence = "Apache-2.0"
    size = "815 instances, 10 tasks in 2 subsets"

    def archive_targets(self, root: Path) -> list[tuple[Path, str]]:
        return [(z, "zipped_images") for z in sorted((root / "zipped_images").glob("*.zip"))]

    def image_subdirs(self) -> list[str]:
        return ["", "zipped_images"]

    def parse_row(self, raw: Any, ctx: RowContext) -> Sample:
        row = as_row(raw)
        sid = req(row, "id", str)
        if not sid.strip():
            raise RowError("id", "empty id")
        ctx.row = sid
        paths = req(row, "image", list)
        task = req(row, "task_name", str)
        turns = req(row, "conversations", list)
        human = gpt = None
        for i, turn in enumerate(turns):
            t = typed(turn, dict, f"conversations[{i}]")
            who = req(t, "from", str, f"conversations[{i}]")
            value = req(t, "value", str, f"conversations[{i}]")
            if who in HUMAN and human is None:
                human = (i, value)
            elif who in GPT and gpt is None:
                gpt = (i, value)
        if human is None:
            raise RowError("conversations", "no human turn")
        n_in = human[1].count(PLACEHOLDER)
        if n_in > len(paths):
            raise RowError(
                f"conversations[{human[0]}].value",
                f"{n_in} {PLACEHOLDER} placeholders but only {len(paths)} images",
            )
        images = [ctx.image(p, f"image[{k}]") for k, p in enumerate(paths)]
        inp, _ = fill(human[1], images[:n_in])
        rest = images[n_in:]
        gold: Interleaved | None = None
        if gpt is not None:
            gold, n_out = fill(gpt[1], rest)
            if n_out > len(rest):
                ctx.problem(
                    f"conversations[{gpt[0]}].value",
                    f"{n_out} {PLACEHOLDER} placeholders but only {len(rest)} gold images",
                )
            elif n_out < len(rest):
                ctx.problem(
                    "image",
                    f"{len(rest) - n_out} images match no placeholder; appended to the gold answer",
                )
                gold = Interleaved([*gold, *(Segment.of_image(r) for r in rest[n_out:])])
        elif rest:
            gold = Interleaved(Segment.of_image(r) for r in rest)
        return Sample(
            id=sid,
            benchmark=self.name,
            input=inp,
            gold=gold,
            category="context-based" if n_in else "context-free",
            task=task,
            metadata={
                "goal": opt(row, "goal", (str, list, dict)),
                "category": opt(row, "category", (str, list)),
                "dataset_id": opt(row, "dataset_id", (str, int)),
            },
        )


SPEC = BenchmarkSpec(
    name="interleavedbench",
    loader=InterleavedBench,
    prompts={"default": "Respond to the instruction above with text and images interleaved."},
    data_card="data_cards/interleavedbench.md",
    mini_set="interleavedbench",
    description=InterleavedBench.size,
)
