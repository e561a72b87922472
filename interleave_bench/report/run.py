"""Read a run folder for the report, tolerantly: a run killed mid-write (a truncated last line, no
``results.json`` yet) still gets a page, and every line that could not be read is named on it
instead of silently vanishing."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..benchmarks.problems import DataError, Problem
from ..benchmarks.readers import load_json
from ..media import ImageError, ImageStore, to_data_url
from ..types import ImageRef, Judgment, Prediction, Result, RunResults, Sample

T = TypeVar("T")
ImageLoader = Callable[[ImageRef], str]
"""Returns a ``data:image/...`` URL for a reference, or raises when the image is unusable."""

MAX_SIDE = 384
PROBLEMS_FILE = "problems.json"
"""What the benchmark loader found wrong with the data of a run (refused paths, duplicate ids)."""
SHOWN_PROBLEMS = 20


@dataclass
class RunData:
    """Everything the report shows, plus the problems met while reading it."""

    samples: list[Sample] = field(default_factory=list)
    predictions: list[Prediction] = field(default_factory=list)
    judgments: list[Judgment] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    data_problems: list[str] = field(default_factory=list)


def readable_mode() -> int:
    """The mode ``open()`` gives a new file (0666 less the umask): ``mkstemp`` makes 0600 files,
    which would leave a report or problems file unreadable to everyone else who reads runs."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_problems(run_dir: Path, data_file: str, problems: Sequence[Problem]) -> None:
    """Record the loader's problems in the run folder (atomically: a reader never sees half)."""
    body = {"data_file": data_file, "problems": [p.to_dict() for p in problems]}
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".problems-", suffix=".tmp")
    try:
        os.fchmod(fd, readable_mode())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(body, ensure_ascii=False, indent=1) + "\n")
        os.replace(tmp, Path(run_dir) / PROBLEMS_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_problems(run_dir: Path, notes: list[str] | None = None) -> list[str]:
    """The recorded data problems as ``Problem`` lines; an unreadable file is a note, not a crash."""
    path = Path(run_dir) / PROBLEMS_FILE
    if not path.is_file():
        return []
    try:
        body = load_json(path.read_text(encoding="utf-8"), PROBLEMS_FILE)
        items = body["problems"]
        return [str(Problem(i["row"], str(i["field"]), str(i["message"]))) for i in items]
    except (OSError, ValueError, DataError, TypeError, KeyError) as e:
        if notes is not None:
            notes.append(f"{PROBLEMS_FILE} unreadable: {e}")
        return []


def problem_lines(run_dir: Path) -> list[str]:
    """``problem: ...`` lines for the terminal, as ``ibench score`` prints them (the first 20)."""
    found = read_problems(run_dir)
    lines = [f"problem: {p}" for p in found[:SHOWN_PROBLEMS]]
    if len(found) > SHOWN_PROBLEMS:
        lines.append(f"... and {len(found) - SHOWN_PROBLEMS} more problems in {PROBLEMS_FILE}")
    return lines


def read_jsonl(path: Path, parse: Callable[[Any, str], T], problems: list[str]) -> list[T]:
    """Parse each line; a bad line becomes a problem, never an exception or a silent drop."""
    if not path.is_file():
        return []
    out: list[T] = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(parse(load_json(line, f"line {n}"), f"{path.name}:{n}"))
            except (ValueError, TypeError, DataError) as e:
                problems.append(f"{path.name} line {n} skipped: {e}")
    return out


def read_results(path: Path, problems: list[str]) -> list[Result]:
    """The per-protocol results of ``results.json`` (``types.RunResults``, any shape)."""
    if not path.is_file():
        problems.append("results.json is absent: the run has not been aggregated yet")
        return []
    try:
        data = load_json(path.read_text(encoding="utf-8"), path.name)
    except (OSError, ValueError, DataError) as e:
        problems.append(f"results.json unreadable: {e}")
        return []
    try:
        return RunResults.from_dict(data).results
    except (ValueError, TypeError) as e:
        problems.append(f"results.json unreadable: {e}")
        return []


def read_manifest(path: Path, problems: list[str]) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = load_json(path.read_text(encoding="utf-8"), path.name)
    except (OSError, ValueError, DataError) as e:
        problems.append(f"manifest.json unreadable: {e}")
        return {}
    if not isinstance(data, dict):
        problems.append("manifest.json is not an object")
        return {}
    return data


def load_run(run_dir: Path) -> RunData:
    """Read ``samples.jsonl``, ``predictions.jsonl``, ``judgments.jsonl``, ``results.json`` and
    ``manifest.json`` from a run folder; absent files give empty parts."""
    run_dir = Path(run_dir)
    problems: list[str] = []
    return RunData(
        samples=read_jsonl(run_dir / "samples.jsonl", Sample.from_dict, problems),
        predictions=read_jsonl(run_dir / "predictions.jsonl", Prediction.from_dict, problems),
        judgments=read_jsonl(run_dir / "judgments.jsonl", Judgment.from_dict, problems),
        results=read_results(run_dir / "results.json", problems),
        manifest=read_manifest(run_dir / "manifest.json", problems),
        problems=problems,
        data_problems=read_problems(run_dir, problems),
    )


def run_image_loader(run_dir: Path, max_side: int = MAX_SIDE) -> ImageLoader:
    """Thumbnails from the run's own store first (so a moved run folder still shows its images),
    then the reference's path, then that path taken relative to the run folder."""
    run_dir = Path(run_dir)
    store = ImageStore(run_dir / "images")

    def load(ref: ImageRef) -> str:
        try:
            return to_data_url(ref, store=store, max_side=max_side, format="JPEG")
        except ImageError:
            if ref.path is None or ref.missing or Path(ref.path).is_absolute():
                raise
            alt = run_dir / ref.path
            if not alt.is_file():
                raise
            return to_data_url(alt, max_side=max_side, format="JPEG")

    return load
