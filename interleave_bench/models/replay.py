"""Replay: evaluate answers another tool already generated, through the same runner and scorers.

Sources (read with ``interleave_bench.predictions``): an MMIE-format answers JSON, an OpenING
``gen_outputs/<MODEL>_output/`` folder, or our own ``predictions.jsonl`` (or a run folder holding
one). Answers are keyed by sample id, which ``ModelAdapter.generate`` never sees, so the runner
calls ``outputs_for(sample_ids, store)`` instead. Referenced images are copied into the run's store
so the run folder stands on its own.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from ..benchmarks import BenchmarkData, DataError, Problem
from ..media import ImageError, ImageStore
from ..predictions import load_mmie_predictions, load_opening_outputs, load_prediction_records
from ..types import ImageRef, Interleaved, Prediction, Segment
from .base import GenerationOutput, GenerationSettings
from .families import FamilySpec

ReplayFormat = Literal["mmie", "opening", "jsonl"]
FORMATS: tuple[ReplayFormat, ...] = ("mmie", "opening", "jsonl")


def detect_format(path: Path) -> ReplayFormat:
    """``.json`` file: MMIE; ``.jsonl`` file or a folder with ``predictions.jsonl``: ours; any
    other folder: OpenING outputs."""
    if path.is_file():
        if path.suffix == ".json":
            return "mmie"
        if path.suffix == ".jsonl":
            return "jsonl"
    elif path.is_dir():
        return "jsonl" if (path / "predictions.jsonl").is_file() else "opening"
    raise DataError(
        f"{path}: not a predictions source (an MMIE .json, a predictions.jsonl or run folder, "
        "or an OpenING <MODEL>_output/ folder)"
    )


class ReplayAdapter:
    """A ModelAdapter (family ``replay``) whose answers come from files, looked up by sample id.

    ``data`` (the benchmark being run) is needed for OpenING folders and ``predictions.jsonl``,
    whose readers pair files with samples; an MMIE answers file carries its own samples.
    ``problems`` lists what was wrong with the source (bad rows, images that could not be copied).
    """

    family = "replay"

    def __init__(
        self,
        source: str | os.PathLike[str],
        data: BenchmarkData | None = None,
        *,
        format: ReplayFormat | None = None,
        model_id: str | None = None,
    ) -> None:
        self.source = Path(source)
        if not self.source.exists():
            raise DataError(f"{self.source}: no such file or folder")
        self.format = format or detect_format(self.source)
        if self.format not in FORMATS:
            raise ValueError(f"unknown replay format {self.format!r}; one of {', '.join(FORMATS)}")
        preds, self.problems = self._read(data)
        self._preds: dict[str, Prediction] = {p.sample_id: p for p in preds}
        models = Counter(p.model for p in preds if p.error is None and p.model != "unknown")
        self.model = models.most_common(1)[0][0] if models else "unknown"
        self.model_id = model_id or f"replay:{self.model}"

    def _read(self, data: BenchmarkData | None) -> tuple[list[Prediction], list[Problem]]:
        if self.format == "mmie":
            _, preds, problems = load_mmie_predictions(self.source)
            return preds, problems
        if data is None:
            raise ValueError(
                f"replaying {self.format} predictions needs the benchmark's samples: "
                "ReplayAdapter(source, data=load_benchmark(...))"
            )
        path = self.source
        if self.format == "jsonl" and path.is_dir():
            path = path / "predictions.jsonl"
        reader = load_opening_outputs if self.format == "opening" else load_prediction_records
        _, preds, problems = reader(path, data)
        return preds, problems

    @property
    def sample_ids(self) -> list[str]:
        """Every id with a replayable answer (errors included: they replay as errors)."""
        return list(self._preds)

    def describe(self) -> dict[str, Any]:
        """What a run manifest records."""
        return {"family": self.family, "source": str(self.source), "format": self.format}

    def generate(
        self,
        prompts: list[Interleaved],
        settings: GenerationSettings,
        store: ImageStore,
        *,
        return_trace: bool = False,
    ) -> list[GenerationOutput]:
        raise TypeError(
            "ReplayAdapter looks answers up by sample id, which generate(prompts) does not carry; "
            "call outputs_for(sample_ids, store) instead"
        )

    def outputs_for(
        self, sample_ids: Sequence[str], store: ImageStore | None = None
    ) -> list[GenerationOutput]:
        """The recorded answer of each sample, in order; an id without one is an error output.

        With a ``store``, every referenced image is copied into it (the reference then names the
        store copy and keeps the original as ``source``); an image that cannot be copied becomes a
        ``missing`` reference and a problem, never a silently dropped segment.
        """
        outs: list[GenerationOutput] = []
        for sid in sample_ids:
            pred = self._preds.get(sid)
            if pred is None:
                outs.append(
                    GenerationOutput(
                        Interleaved(), error=f"no prediction for {sid} in {self.source}"
                    )
                )
                continue
            output = pred.output if store is None else self._copy_images(sid, pred.output, store)
            seconds = float(pred.timing.get("seconds") or 0.0)
            outs.append(GenerationOutput(output, error=pred.error, seconds=seconds))
        return outs

    def _copy_images(self, sid: str, output: Interleaved, store: ImageStore) -> Interleaved:
        segments: list[Segment] = []
        for seg in output:
            if seg.image is None or seg.image.missing:
                segments.append(seg)
                continue
            ref = seg.image
            origin = ref.source or ref.path
            try:
                stored = store.put_file(self._locate(ref))
            except ImageError as e:
                self.problems.append(Problem(sid, "output.image", str(e)))
                stored = ImageRef(sha256=ref.sha256, source=origin, missing=True)
            else:
                stored = dataclasses.replace(stored, source=origin)
            segments.append(Segment.of_image(stored))
        return Interleaved(segments)

    def _locate(self, ref: ImageRef) -> Path:
        """The file behind a recorded reference. The readers already confined every path to the
        source's own folder (refusing the rest), so only their resolved path, or the source
        run's store by content hash, is ever read: never a path as the file wrote it."""
        if ref.path is not None and Path(ref.path).is_file():
            return Path(ref.path)
        if ref.sha256 is not None:
            base = self.source if self.source.is_dir() else self.source.parent
            if (found := ImageStore(base / "images").find(ref.sha256)) is not None:
                return found
        raise ImageError(f"image {ref.source or ref.path or ref.sha256} not found")


FAMILY = FamilySpec(
    name="replay",
    adapter="interleave_bench.models.loading:load_replay",
    folder=False,
    capabilities={"generate": "interleave_bench.models.replay:ReplayAdapter.generate"},
    description="outputs another tool already produced, read from files",
)
