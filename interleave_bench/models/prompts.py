"""Prompt builders: how each benchmark's sample is put to a model, in our own words.

Each benchmark intends a different answer (the next steps of a how-to with pictures, the next part
of a story, a worked solution, an interleaved response to an open instruction); the wording is a
template per benchmark/category, declared by each benchmark's spec, that users can replace with a
JSON file, and its hash is recorded in the run manifest so runs with different wording are never
mixed up.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from ..types import Interleaved, Sample, Segment


def default_templates() -> dict[str, dict[str, str]]:
    """Every registered benchmark's default wording (``BenchmarkSpec.prompts``)."""
    from ..benchmarks.spec import benchmark_names, get_benchmark_spec

    return {name: dict(get_benchmark_spec(name).prompts) for name in benchmark_names()}


def load_templates(path: str | Path | None = None) -> dict[str, dict[str, str]]:
    """The default templates, updated with a user's JSON file ``{bench: {category: text}}``."""
    templates = default_templates()
    if path is not None:
        user = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(user, dict) or not all(isinstance(v, dict) for v in user.values()):
            raise ValueError(f"{path}: expected {{benchmark: {{category: text}}}}")
        for bench, entries in user.items():
            templates.setdefault(bench, {}).update({str(k): str(v) for k, v in entries.items()})
    return templates


def templates_sha256(templates: dict[str, dict[str, str]]) -> str:
    blob = json.dumps(templates, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def build_prompt(
    sample: Sample,
    templates: dict[str, dict[str, str]] | None = None,
    *,
    unknown: Literal["error", "as_is"] = "error",
) -> Interleaved:
    """The sample's input followed by the benchmark's instruction (MSR: the question alone).

    The wording comes from ``templates`` (a user's file merged over the defaults) or else the
    benchmark's spec; a benchmark that is neither in ``templates`` nor registered is an
    ``UnknownNameError`` (never a silent prompt without instruction), unless ``unknown="as_is"``
    says the samples are prompts in their own right (a trainer's in-memory samples).

    Images the data refers to but that are missing are left out, as the official MMIE scorer
    does; the sample's ``missing_images`` count says how many.
    """
    if templates is not None and sample.benchmark in templates:
        table = templates[sample.benchmark]
    else:
        from ..benchmarks.spec import get_benchmark_spec
        from ..registry import UnknownNameError

        try:
            table = dict(get_benchmark_spec(sample.benchmark).prompts)
        except UnknownNameError:
            if unknown == "error":
                raise
            table = {}
    instruction = table.get(sample.category or "", table.get("default", ""))
    segments = [s for s in sample.input if s.image is None or not s.image.missing]
    if instruction:
        segments.append(Segment.of_text(instruction))
    return Interleaved(segments)
