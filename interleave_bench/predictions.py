"""Reading predictions made elsewhere, paired with their samples, for ``ibench score``.

- MMIE format: a JSON array like ``data.json`` whose ``answer`` is the model's output (segments with
  image paths relative to the file, or a plain string): the official scorer's input.
- OpenING ``gen_outputs/<MODEL>_output/``: one ``<total_uid>.json`` per sample (some tools write
  ``.jsonl`` holding the same single object); output images are bare file names in that folder.
- Our own JSONL of ``Prediction`` records (a run folder's ``predictions.jsonl``).
"""

from __future__ import annotations

import json
from pathlib import Path

from .benchmarks import BenchmarkData, DataError, Problem, load_benchmark
from .benchmarks.base import RowContext, as_row, req
from .benchmarks.opening import parse_items
from .benchmarks.paths import DataRoot
from .benchmarks.problems import RowError
from .benchmarks.readers import iter_jsonl
from .types import Interleaved, Prediction, Sample, SchemaError


def load_mmie_predictions(path: str | Path) -> tuple[list[Sample], list[Prediction], list[Problem]]:
    """Samples (question, category, gt_answer) and predictions (the ``answer`` field) from one
    MMIE-format file."""
    data = load_benchmark("mmie", Path(path), download=False)
    samples = list(data)
    preds = [
        Prediction(s.id, str(s.metadata.get("model") or "unknown"), s.gold or Interleaved())
        for s in samples
    ]
    return samples, preds, data.problems


def _opening_output(file: Path, folder: Path) -> tuple[str, Prediction]:
    raw = file.read_bytes().decode("utf-8")
    try:
        row = as_row(json.loads(raw.strip().splitlines()[0] if file.suffix == ".jsonl" else raw))
    except (json.JSONDecodeError, IndexError) as e:
        raise RowError("<file>", f"invalid JSON ({e})") from None
    turns = req(row, "conversations", list)
    items = next((t["output"] for t in turns if isinstance(t, dict) and "output" in t), None)
    if not isinstance(items, list):
        raise RowError("conversations", "no output turn")
    # the official reader keeps only the base name of each output image
    cleaned = [
        dict(it, image=Path(it["image"]).name)
        if isinstance(it, dict) and isinstance(it.get("image"), str)
        else it
        for it in items
    ]
    ctx = RowContext(DataRoot([folder]), 0)
    output = parse_items(cleaned, "output", ctx)
    model = folder.name.removesuffix("_output")
    return file.stem, Prediction(file.stem, model, output)


def load_opening_outputs(
    folder: str | Path, data: BenchmarkData
) -> tuple[list[Sample], list[Prediction], list[Problem]]:
    """Pair ``<total_uid>.json`` files with the benchmark's samples; a sample without an output
    file gets a Prediction with ``error`` set (so it is counted, not dropped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder of OpenING outputs")
    found: dict[str, Prediction] = {}
    problems: list[Problem] = []
    for file in sorted(folder.iterdir()):
        if file.suffix not in (".json", ".jsonl") or file.name.startswith("."):
            continue
        try:
            uid, pred = _opening_output(file, folder)
        except (RowError, UnicodeDecodeError, OSError) as e:
            field = e.field if isinstance(e, RowError) else "<file>"
            problems.append(Problem(file.name, field, str(e)))
            continue
        found[uid] = pred
    model = folder.name.removesuffix("_output")
    samples = list(data)
    preds = [
        found.get(s.id) or Prediction(s.id, model, Interleaved(), error="no output file")
        for s in samples
    ]
    return samples, preds, problems


def load_prediction_records(
    path: str | Path, data: BenchmarkData
) -> tuple[list[Sample], list[Prediction], list[Problem]]:
    """Our JSONL of Prediction records (later lines replace earlier ones for the same sample)."""
    found: dict[str, Prediction] = {}
    problems: list[Problem] = []
    for index, raw, problem in iter_jsonl(Path(path)):
        if problem is not None:
            problems.append(problem)
            continue
        try:
            pred = Prediction.from_dict(raw)
        except SchemaError as e:
            problems.append(Problem(index, e.field, e.message))
            continue
        found[pred.sample_id] = pred
    samples = list(data)
    unknown = set(found) - {s.id for s in samples}
    problems += [Problem(i, "sample_id", "not a sample of this benchmark") for i in sorted(unknown)]
    preds = [
        found.get(s.id) or Prediction(s.id, "unknown", Interleaved(), error="no prediction")
        for s in samples
    ]
    return samples, preds, problems
