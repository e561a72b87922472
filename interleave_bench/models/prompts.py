"""Prompt builders: how each benchmark's sample is put to a model, in our own words.

Each benchmark intends a different answer (the next steps of a how-to with pictures, the next part
of a story, a worked solution, an interleaved response to an open instruction); the wording is a
template per benchmark/category that users can replace with a JSON file, and its hash is recorded in
the run manifest so runs with different wording are never mixed up.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..types import Interleaved, Sample, Segment

DEFAULT_TEMPLATES: dict[str, dict[str, str]] = {
    "mmie": {
        "project_based_learning": "These are the steps so far. What should I do next? Explain "
        "each next step in text and show it with an image.",
        "situational_analysis": "Continue this story. Write the next part as short paragraphs, "
        "each followed by an image that shows it.",
        "multi_step_reasoning": "",
        "default": "Answer with text and images interleaved.",
    },
    "interleavedbench": {
        "default": "Respond to the instruction above with text and images interleaved.",
    },
    "opening": {
        "default": "Respond with interleaved text and images, as the request asks.",
    },
    "isg": {
        "default": "Answer with the text and images the request asks for, in that order.",
    },
}


def load_templates(path: str | Path | None = None) -> dict[str, dict[str, str]]:
    """The default templates, updated with a user's JSON file ``{bench: {category: text}}``."""
    templates = {k: dict(v) for k, v in DEFAULT_TEMPLATES.items()}
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


def build_prompt(sample: Sample, templates: dict[str, dict[str, str]] | None = None) -> Interleaved:
    """The sample's input followed by the benchmark's instruction (MSR: the question alone).

    Images the data refers to but that are missing are left out, as the official MMIE scorer
    does; the sample's ``missing_images`` count says how many.
    """
    table = (templates or DEFAULT_TEMPLATES).get(sample.benchmark, {})
    instruction = table.get(sample.category or "", table.get("default", ""))
    segments = [s for s in sample.input if s.image is None or not s.image.missing]
    if instruction:
        segments.append(Segment.of_text(instruction))
    return Interleaved(segments)
