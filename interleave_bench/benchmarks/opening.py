"""OpenING (CVPR 2025): ``OpenING-benchmark/test_data.jsonl`` plus ``images/<subtask>/...``.

Each row's ``conversations`` holds ``{"input": [...]}`` and ``{"output": [...]}``; items are
``{"image": path|null, "text": str}`` where the first text starts with ``<BEGIN>`` and an item's image
sits at the ``<image>`` marker of its text (after the text when there is no marker).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..types import Interleaved, Sample, Segment
from .base import Benchmark, RowContext, as_row, req, typed
from .problems import RowError
from .readers import iter_jsonl
from .spec import BenchmarkSpec

FOLDERS = ("OpenING-benchmark", "OpenING-Benchmark")


def parse_items(items: list[Any], where: str, ctx: RowContext) -> Interleaved:
    segments: list[Segment] = []
    for i, item in enumerate(items):
        name = f"{where}[{i}]"
        it = typed(item, dict, name)
        text = req(it, "text", (str, type(None)), name) or ""
        image = req(it, "image", (str, type(None)), name)
        ref = ctx.image(image, f"{name}.image") if image is not None else None
        pieces = text.replace("<BEGIN>", "").split("<image>")
        for k, piece in enumerate(pieces):
            if piece.strip():
                segments.append(Segment.of_text(piece.strip()))
            if k == 0 and ref is not None and len(pieces) > 1:
                segments.append(Segment.of_image(ref))
        if ref is not None and len(pieces) == 1:
            segments.append(Segment.of_image(ref))
    return Interleaved(segments)


def _id(row: dict[str, Any], key: str) -> str:
    value = req(row, key, (str, int))
    return str(value)


class OpenING(Benchmark):
    name = "opening"
    title = "OpenING"
    data_file_name = "test_data.jsonl"
    hosting = "github.com/LanceZPF/OpenING (data archive linked from its README)"
    licence = "see the OpenING repository"
    size = "2,160 public test rows (5,400 in all), 56 subtasks, 23 meta-tasks"

    def locate(self, path: Path) -> Path:
        if (path / self.data_file_name).is_file():
            return path
        for folder in FOLDERS:
            if (path / folder / self.data_file_name).is_file():
                return path / folder
        return path

    def rows(self, data_file: Path):
        return iter_jsonl(data_file)

    def parse_row(self, raw: Any, ctx: RowContext) -> Sample:
        row = as_row(raw)
        uid = _id(row, "total_uid")
        if not uid.strip():
            raise RowError("total_uid", "empty id")
        ctx.row = uid
        meta = {k: _id(row, k) for k in ("meta_task_id", "subtask_id", "data_id")}
        meta_name = req(row, "meta_task_name", str)
        sub_name = req(row, "subtask_name", str)
        turns = req(row, "conversations", list)
        inp = out = None
        for i, turn in enumerate(turns):
            t = typed(turn, dict, f"conversations[{i}]")
            if "input" in t and inp is None:
                inp = parse_items(
                    req(t, "input", list, f"conversations[{i}]"), f"conversations[{i}].input", ctx
                )
            if "output" in t and out is None:
                out = parse_items(
                    req(t, "output", list, f"conversations[{i}]"), f"conversations[{i}].output", ctx
                )
        if inp is None:
            raise RowError("conversations", "no input turn")
        return Sample(
            id=uid,
            benchmark=self.name,
            input=inp,
            gold=out,
            category=meta_name,
            task=sub_name,
            metadata=meta,
        )


SPEC = BenchmarkSpec(
    name="opening",
    loader=OpenING,
    prompts={"default": "Respond with interleaved text and images, as the request asks."},
    data_card="data_cards/opening.md",
    mini_set="opening",
    description=OpenING.size,
)
