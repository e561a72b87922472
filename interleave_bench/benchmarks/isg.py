"""ISG-Bench (ICLR 2025): ``ISG-Bench.jsonl`` plus ``images/`` from ``images.zip``.

Rows: ``id``, ``Category`` (one of 21 strings grouped into 8 categories), ``Query`` and ``Golden`` as
lists of ``{"type": "text"|"image", "content"}``. Ids repeat across categories in some copies, so the
sample id is ``"<id>_<Category>"`` and the original id is kept in the metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..types import Interleaved, Sample, Segment
from .base import Benchmark, HubSpec, RowContext, as_row, req, typed
from .problems import RowError
from .readers import iter_jsonl
from .spec import BenchmarkSpec

GROUPS = {
    "Style Transfer": [
        "Art Style Transfer",
        "Scene Attribute Transfer",
        "Photo Variation",
        "Portrait Variation",
    ],
    "Progressive": ["Animation Images", "Animation Text-Image", "Attribute Transfer"],
    "3D Scene": ["3D_object", "multi-Perspective Scene Generation"],
    "Image Decomposition": ["Realistic Object Detection", "Imaginary Object Detection"],
    "Image-Text Complementation": ["HowTo", "Scientific"],
    "Temporal Prediction": ["Prediction", "painting"],
    "Visual Story Telling": [
        "visual storytelling text-image",
        "visual storytelling image",
        "visual storytelling text",
    ],
    "VQA": ["Object_VQA", "Historical"],
}
GROUP_OF = {c: g for g, cs in GROUPS.items() for c in cs}


def parse_blocks(items: list[Any], where: str, ctx: RowContext) -> Interleaved:
    segments: list[Segment] = []
    for i, item in enumerate(items):
        name = f"{where}[{i}]"
        block = typed(item, dict, name)
        kind = req(block, "type", str, name)
        content = req(block, "content", str, name)
        if kind == "text":
            segments.append(Segment.of_text(content))
        elif kind == "image":
            segments.append(Segment.of_image(ctx.image(content, f"{name}.content")))
        else:
            raise RowError(f"{name}.type", f"expected 'text' or 'image', got {kind!r}")
    return Interleaved(segments)


class ISGBench(Benchmark):
    name = "isg"
    title = "ISG-Bench"
    data_file_name = "ISG-Bench.jsonl"
    hub = HubSpec("shuaishuaicdp/ISG-Bench", "dataset", ("ISG-Bench.jsonl", "images.zip"))
    hosting = "Hugging Face dataset shuaishuaicdp/ISG-Bench"
    licence = "see the dataset card"
    size = "1,150 samples, 8 categories (21 sub-categories)"

    def rows(self, data_file: Path):
        return iter_jsonl(data_file)

    def archive_targets(self, root: Path) -> list[tuple[Path, str]]:
        z = root / "images.zip"
        return [(z, "")] if z.is_file() and not (root / "images").is_dir() else []

    def parse_row(self, raw: Any, ctx: RowContext) -> Sample:
        row = as_row(raw)
        source_id = str(req(row, "id", (str, int)))
        category = req(row, "Category", str)
        if not source_id.strip() or not category.strip():
            raise RowError("id" if not source_id.strip() else "Category", "empty value")
        sid = f"{source_id}_{category}"
        ctx.row = sid
        if category not in GROUP_OF:
            ctx.problem("Category", f"unknown category {category!r}")
        query = parse_blocks(req(row, "Query", list), "Query", ctx)
        golden = parse_blocks(req(row, "Golden", list), "Golden", ctx)
        return Sample(
            id=sid,
            benchmark=self.name,
            input=query,
            gold=golden,
            category=category,
            metadata={
                "source_id": source_id,
                "group": GROUP_OF.get(category),
                # the question lists the ISG protocol asks (block_qa, image_qa); kept verbatim
                "predict": row.get("predict") if isinstance(row.get("predict"), dict) else {},
            },
        )


SPEC = BenchmarkSpec(
    name="isg",
    loader=ISGBench,
    prompts={"default": "Answer with the text and images the request asks for, in that order."},
    data_card="data_cards/isg.md",
    mini_set="isg",
    description=ISGBench.size,
)
