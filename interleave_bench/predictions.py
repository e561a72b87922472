"""Reading predictions made elsewhere, paired with their samples, for ``ibench score``.

- MMIE format: a JSON array like ``data.json`` whose ``answer`` is the model's output (segments with
  image paths relative to the file, or a plain string): the official scorer's input.
- OpenING ``gen_outputs/<MODEL>_output/``: one ``<total_uid>.json`` per sample (some tools write
  ``.jsonl`` holding the same single object); output images are bare file names in that folder.
- Our own JSONL of ``Prediction`` records (a run folder's ``predictions.jsonl``).

Predictions are untrusted: an image they name is read only from inside their own folder (or, by
content hash, from the run's store ``images/`` beside them). An absolute path outside, a ``..``
escape or a symlink leading out is refused by name, and that prediction becomes an error, so it is
counted and never judged as if the image were fine. Every problem names the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from .benchmarks import BenchmarkData, DataError, Problem, load_benchmark
from .benchmarks.base import RowContext, as_row, req
from .benchmarks.opening import parse_items
from .benchmarks.paths import DataRoot
from .benchmarks.problems import RowError
from .benchmarks.readers import iter_jsonl, load_json
from .media import ImageError, ImageStore
from .types import ImageRef, Interleaved, Prediction, Sample, SchemaError, Segment


def _named(problems: list[Problem], file: Path) -> list[Problem]:
    """The same problems, each message starting with the file it is about."""
    return [Problem(p.row, p.field, f"{file.name}: {p.message}") for p in problems]


def _refused(pred: Prediction, reasons: list[str]) -> Prediction:
    """A prediction whose images were refused: an error, so no scorer judges it without them."""
    if not reasons or pred.error:
        return pred
    return dataclasses.replace(pred, error=f"image refused: {reasons[0]}")


def load_mmie_predictions(path: str | Path) -> tuple[list[Sample], list[Prediction], list[Problem]]:
    """Samples (question, category, gt_answer) and predictions (the ``answer`` field) from one
    MMIE-format file."""
    path = Path(path)
    data = load_benchmark("mmie", path, download=False)
    samples = list(data)
    # the loader refuses escaping image paths with a problem on that row's ``*.image`` field
    refused: dict[str, list[str]] = {}
    for p in data.problems:
        if isinstance(p.row, str) and p.field.endswith(".image"):
            refused.setdefault(p.row, []).append(f"{p.field}: {p.message}")
    preds = [
        _refused(
            Prediction(s.id, str(s.metadata.get("model") or "unknown"), s.gold or Interleaved()),
            refused.get(s.id, []),
        )
        for s in samples
    ]
    return samples, preds, _named(data.problems, path)


def _opening_output(file: Path, folder: Path) -> tuple[str, Prediction, list[Problem]]:
    raw = file.read_bytes().decode("utf-8")
    try:
        text = raw.strip().splitlines()[0] if file.suffix == ".jsonl" else raw
        row = as_row(load_json(text, file.name))
    except (json.JSONDecodeError, IndexError) as e:
        raise RowError("<file>", f"invalid JSON ({e})") from None
    except DataError as e:
        raise RowError("<file>", str(e).removeprefix(f"{file.name}: ")) from None
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
    ctx.row = file.name
    output = parse_items(cleaned, "output", ctx)  # its only problems are refused image paths
    model = folder.name.removesuffix("_output")
    pred = _refused(Prediction(file.stem, model, output), [str(p) for p in ctx.problems])
    return file.stem, pred, ctx.problems


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
            uid, pred, refused = _opening_output(file, folder)
        except (RowError, UnicodeDecodeError, OSError) as e:
            field = e.field if isinstance(e, RowError) else "<file>"
            message = e.message if isinstance(e, RowError) else str(e)
            problems.append(Problem(file.name, field, message))
            continue
        problems += refused
        found[uid] = pred
    if not found:
        first = f": {problems[0]}" if problems else ""
        raise DataError(f"{folder}: no readable <total_uid>.json output file{first}")
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
    path = Path(path)
    images = PredictionImages(path.parent)
    found: dict[str, Prediction] = {}
    problems: list[Problem] = []
    for index, raw, problem in iter_jsonl(path):
        if problem is not None:
            problems.append(problem)
            continue
        try:
            pred = Prediction.from_dict(raw)
        except SchemaError as e:
            problems.append(Problem(index, e.field, e.message))
            continue
        output, refused = images.confine(pred.output)
        problems += [Problem(pred.sample_id, f, m) for f, m in refused]
        found[pred.sample_id] = _refused(
            dataclasses.replace(pred, output=output), [f"{f}: {m}" for f, m in refused]
        )
    samples, preds = _align(found, data, problems, f"{path}: no usable prediction record")
    return samples, preds, _named(problems, path)


class PredictionImages:
    """Where the images named by a predictions file may come from: its own folder, looked up by
    path through the benchmarks' safe-path rules (``DataRoot``), or its run store by hash."""

    def __init__(self, folder: Path, store: Path | None = None) -> None:
        self.folder = Path(folder)
        self.real = os.path.realpath(self.folder)
        self.root = DataRoot([self.folder])
        self.store = ImageStore(store if store is not None else self.folder / "images")

    def _inside(self, path: str) -> bool:
        real = os.path.realpath(path)
        return real == self.real or real.startswith(self.real + os.sep)

    def locate(self, ref: ImageRef) -> tuple[str | None, str | None]:
        """(the file behind ``ref`` inside the folder, None), (None, None) when it is absent, or
        (None, why it is refused)."""
        if ref.sha256 is not None:
            hit = self.store.find(ref.sha256)
            if hit is not None and self._inside(str(hit)):
                return str(hit), None
        if ref.path is None:
            return None, None
        path = ref.path
        if os.path.isabs(path):
            # our own runs record absolute store paths: fine while they stay in this folder
            if not self._inside(path):
                return None, f"absolute image path {path!r} is outside {self.folder} and refused"
            path = os.path.relpath(os.path.realpath(path), self.real)
        found = self.root.resolve(path)
        return found.path, found.refused

    def confine(self, output: Interleaved) -> tuple[Interleaved, list[tuple[str, str]]]:
        """``output`` with every image pointing at its file inside the folder (absent or refused
        ones marked ``missing``), and the refused ones as (field, reason)."""
        segments: list[Segment] = []
        refused: list[tuple[str, str]] = []
        for k, seg in enumerate(output):
            ref = seg.image
            if ref is None or ref.missing:
                segments.append(seg)
                continue
            path, why = self.locate(ref)
            if why is not None:
                refused.append((f"output[{k}].image", why))
            origin = ref.source or ref.path
            if path is None:
                ref = ImageRef(sha256=ref.sha256, source=origin, missing=True)
            else:
                ref = ImageRef(sha256=ref.sha256, path=path, source=origin)
            segments.append(Segment.of_image(ref))
        return Interleaved(segments), refused


def load_prediction_dataset(
    where: str | Path, data: BenchmarkData, images: Path
) -> tuple[list[Sample], list[Prediction], list[Problem]]:
    """A Hugging Face ``datasets`` dataset (a ``save_to_disk`` folder or a Hub id) with
    ``sample_id`` and ``output`` columns (``output``: segment rows as ``to_hf()`` writes them, or
    a plain string). Its images are written into the run's own store ``images``; a bad row is a
    problem naming it and the field, and the others are still scored."""
    from .hf import MissingExtra, open_dataset, prediction_from_row

    try:
        ds = open_dataset(where)
    except MissingExtra:
        raise
    except Exception as e:  # datasets' own errors (offline, no such repo, bad folder)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{where}: not a readable `datasets` dataset ({first})") from None
    missing = [c for c in ("sample_id", "output") if c not in ds.column_names]
    if missing:
        raise DataError(
            f"{where}: no {' and no '.join(missing)} column; a predictions dataset needs "
            "sample_id and output (columns: " + ", ".join(ds.column_names) + ")"
        )
    store = ImageStore(images)
    # a cell's bytes land in the run's store; a cell naming a file (a path, a hash) may only
    # name one in that store: a dataset is untrusted and never reads other files
    confined = PredictionImages(images, store=images)
    found: dict[str, Prediction] = {}
    problems: list[Problem] = []
    for index, row in enumerate(ds):
        try:
            pred = prediction_from_row(row, store)
        except SchemaError as e:
            problems.append(Problem(index, e.field, e.message))
            continue
        except ImageError as e:
            problems.append(Problem(index, "output", f"image refused: {e}"))
            continue
        output, refused = confined.confine(pred.output)
        problems += [Problem(pred.sample_id, f, m) for f, m in refused]
        found[pred.sample_id] = _refused(
            dataclasses.replace(pred, output=output), [f"{f}: {m}" for f, m in refused]
        )
    samples, preds = _align(found, data, problems, f"{where}: no usable prediction row")
    return samples, preds, problems


def _align(
    found: dict[str, Prediction], data: BenchmarkData, problems: list[Problem], nothing: str
) -> tuple[list[Sample], list[Prediction]]:
    """One prediction per sample of ``data`` in its order (a missing one is an error record, an
    unknown sample id a problem); ``nothing`` is the error when no record was usable."""
    if not found:
        raise DataError(nothing + (f": {problems[0]}" if problems else ""))
    samples = list(data)
    unknown = set(found) - {s.id for s in samples}
    problems += [Problem(i, "sample_id", "not a sample of this benchmark") for i in sorted(unknown)]
    preds = [
        found.get(s.id) or Prediction(s.id, "unknown", Interleaved(), error="no prediction")
        for s in samples
    ]
    return samples, preds
