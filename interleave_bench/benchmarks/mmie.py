"""MMIE (ICLR 2025): ``data.json`` (one JSON array) plus ``images/`` from ``images.tar.gz``.

Rows: ``id`` (category from its prefix SA-/PBL-/MSR-), ``question`` and ``answer`` as lists of
``{"text", "image"}`` (an answer may also be a plain string), ``model`` and ``gt_answer`` (only
``gt_answer[0]["text"]`` matters, for MSR). Within one segment the text comes before the image, as
the official scorer flattens it. A missing image file is counted on the sample, never fatal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..types import Interleaved, Sample, Segment
from .base import Benchmark, HubSpec, RowContext, as_row, req, typed
from .problems import RowError
from .spec import BenchmarkSpec

CATEGORIES = {
    "SA": "situational_analysis",
    "PBL": "project_based_learning",
    "MSR": "multi_step_reasoning",
}


def category_of(sample_id: str) -> str | None:
    return CATEGORIES.get(sample_id.split("-", 1)[0])


def parse_segments(items: list[Any], where: str, ctx: RowContext) -> Interleaved:
    segments: list[Segment] = []
    for i, item in enumerate(items):
        name = f"{where}[{i}]"
        seg = typed(item, dict, name)
        text = req(seg, "text", (str, type(None)), name)
        image = req(seg, "image", (str, type(None)), name)
        if text is not None:
            segments.append(Segment.of_text(text))
        if image is not None:
            segments.append(Segment.of_image(ctx.image(image, f"{name}.image")))
    return Interleaved(segments)


class MMIE(Benchmark):
    name = "mmie"
    title = "MMIE"
    data_file_name = "data.json"
    hub = HubSpec("MMIE/MMIE", "dataset", ("*.json", "images.tar.gz"))
    hosting = "Hugging Face dataset MMIE/MMIE (gated, auto-approved)"
    licence = "code MIT; dataset licence not stated"
    size = "20,103 queries in 3 categories"

    def data_file(self, root: Path) -> Path:
        main = root / self.data_file_name
        if main.is_file() or not root.is_dir():
            return main
        others = sorted(
            p
            for p in root.glob("*.json")
            if p.name != "overview.json" and not p.name.startswith(".")
        )
        return others[0] if len(others) == 1 else main

    def archive_targets(self, root: Path) -> list[tuple[Path, str]]:
        tar = root / "images.tar.gz"
        if tar.is_file() and not (root / "images").is_dir():
            return [(tar, "")]
        return []

    def parse_row(self, raw: Any, ctx: RowContext) -> Sample:
        row = as_row(raw)
        sid = req(row, "id", str)
        if not sid.strip():
            raise RowError("id", "empty id")
        ctx.row = sid
        question = parse_segments(req(row, "question", list), "question", ctx)
        answer = req(row, "answer", (list, str))
        gold = (
            Interleaved([Segment.of_text(answer)])
            if isinstance(answer, str)
            else parse_segments(answer, "answer", ctx)
        )
        model = req(row, "model", (str, type(None)))
        gt = req(row, "gt_answer", list)
        if not gt:
            raise RowError("gt_answer", "empty list (the scorer reads gt_answer[0].text)")
        gt_text = req(typed(gt[0], dict, "gt_answer[0]"), "text", (str, type(None)), "gt_answer[0]")
        category = category_of(sid)
        if category is None:
            ctx.problem("id", f"unknown category prefix in {sid!r} (expected SA-, PBL- or MSR-)")
        elif category == "multi_step_reasoning" and gt_text is None:
            ctx.problem("gt_answer[0].text", "null for an MSR row (the judge needs the answer)")
        return Sample(
            id=sid,
            benchmark=self.name,
            input=question,
            gold=gold,
            category=category,
            metadata={
                "gt_answer": gt_text,
                "answer_format": "string" if isinstance(answer, str) else "segments",
                "model": model,
            },
        )


SPEC = BenchmarkSpec(
    name="mmie",
    loader=MMIE,
    categories=tuple(CATEGORIES.values()),
    prompts={
        "project_based_learning": "These are the steps so far. What should I do next? Explain "
        "each next step in text and show it with an image.",
        "situational_analysis": "Continue this story. Write the next part as short paragraphs, "
        "each followed by an image that shows it.",
        "multi_step_reasoning": "",  # the question alone, as MMIE poses it
        "default": "Answer with text and images interleaved.",
    },
    data_card="data_cards/mmie.md",
    mini_set="mmie",
    description=MMIE.size,
)
