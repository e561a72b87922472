"""The one ``evaluate.Metric`` class behind every protocol: a thin wrapper over the registered
scorer, so ``compute`` and ``ibench score`` build the same scorer, judge engine, cache and
budget, and aggregate the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import datasets
import evaluate

from ..benchmarks.base import cache_home
from ..config import JudgeSpec
from ..hf import prediction_from_row, sample_from_row
from ..media import ImageStore
from ..types import Prediction, Sample

_INPUTS = """
Args:
    predictions: one per sample, aligned with ``references``: ``Prediction`` objects, their JSON
        form (``sample_id``, ``output``) or ``datasets`` rows with those columns.
    references: the samples: ``Sample`` objects, their JSON form, or rows of
        ``load_benchmark(...).to_hf()``.
    judge: a ``JudgeSpec`` (or its fields as a dict) for judge protocols; its fields may also be
        passed as keyword arguments (``judge_model=...``, ``judge_base_url=...``, ``max_cost=...``).
    cache_dir: folder of the judgment cache ``judgments.sqlite`` (default:
        ``cache_home()/metrics/<protocol>``); a rerun is answered from it.
    protocol_file, allow_unofficial, clip_model: as ``ibench score``'s options.
    predictions_b: a pairwise protocol's second model, aligned like ``predictions``.
    swap: a pairwise protocol also judges each pair in the other order (``--swap``).
Returns:
    the ``Result`` (``PairwiseResult`` for pairwise protocols) as a dict.
"""

_CITATION_HEADING = re.compile(r"^## Citation\s*$", re.M)


def citation_of(spec: Any) -> str:
    """The citation paragraph of the data card of the protocol's benchmark (a source checkout
    has the cards; an installed wheel does not, and says where to look)."""
    from ..benchmarks import get_benchmark_spec

    for bench in spec.benchmarks:
        card = get_benchmark_spec(bench).data_card
        file = Path(__file__).resolve().parents[2] / card if card else None
        if file is not None and file.is_file():
            text = file.read_text(encoding="utf-8")
            m = _CITATION_HEADING.search(text)
            if m:
                return text[m.end() :].split("\n## ", 1)[0].strip()
        if card:
            return f"see {card} in the interleave-bench repository"
    return "interleave-bench (this project's own scorer)"


class ProtocolMetric(evaluate.Metric):
    """``PROTOCOL`` names the registered protocol this module wraps."""

    PROTOCOL: ClassVar[str] = ""

    def _info(self) -> evaluate.MetricInfo:
        from ..protocols import get_protocol

        spec = get_protocol(self.PROTOCOL)
        official = ""
        if spec.prompt_source:
            hashes = ", ".join(f"{k}={v}" for k, v in sorted(spec.prompt_sha256.items()))
            official = f" Official protocol: {spec.prompt_source} (sha256: {hashes})."
        return evaluate.MetricInfo(
            description=(
                f"{spec.name} ({spec.kind}, scale {spec.scale}): {spec.description}. "
                f"Aggregation: {spec.aggregation}.{official}"
            ),
            citation=citation_of(spec),
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            codebase_urls=["https://github.com/interleave-bench/interleave-bench"],
            reference_urls=[spec.prompt_source] if spec.prompt_source else [],
        )

    # -- inputs: our records as JSON strings, images written into a store --------------------
    def _store(self) -> ImageStore:
        return ImageStore(cache_home() / "metrics" / "images")

    def _encode(self, values: Any, kind: str) -> Any:
        if values is None:
            return None
        store = self._store()
        out = []
        for i, v in enumerate(values):
            where = f"{kind}[{i}]"
            if isinstance(v, str):  # already encoded (evaluate passes batches back through)
                out.append(v)
                continue
            if kind == "references":
                rec = (
                    v
                    if isinstance(v, Sample)
                    else sample_from_row(_mapping(v, where), store, where)
                )
            else:
                rec = (
                    v
                    if isinstance(v, Prediction)
                    else prediction_from_row(_mapping(v, where), store, where)
                )
            out.append(json.dumps(rec.to_dict(), ensure_ascii=False))
        return out

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of predictions and samples (records, JSON form or ``datasets`` rows)."""
        return super().add_batch(
            predictions=self._encode(predictions, "predictions"),
            references=self._encode(references, "references"),
            **kwargs,
        )

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one prediction and its sample."""
        p = None if prediction is None else self._encode([prediction], "predictions")[0]
        r = None if reference is None else self._encode([reference], "references")[0]
        return super().add(prediction=p, reference=r, **kwargs)

    # -- the computation: the registered scorer, as ``ibench score`` runs it ----------------
    def _compute(
        self,
        predictions: Sequence[str],
        references: Sequence[str],
        judge: JudgeSpec | Mapping[str, Any] | None = None,
        cache_dir: str | Path | None = None,
        protocol_file: str | Path | None = None,
        allow_unofficial: bool = False,
        clip_model: str | Path | None = None,
        predictions_b: Sequence[Any] | None = None,
        swap: bool = False,
        **judge_settings: Any,
    ) -> dict[str, Any]:
        from .run import score_records

        samples = [
            Sample.from_dict(json.loads(r), f"references[{i}]") for i, r in enumerate(references)
        ]
        preds = [
            Prediction.from_dict(json.loads(p), f"predictions[{i}]")
            for i, p in enumerate(predictions)
        ]
        preds_b = None
        if predictions_b is not None:
            preds_b = [
                Prediction.from_dict(json.loads(p))
                for p in self._encode(predictions_b, "predictions_b")
            ]
        if isinstance(judge, JudgeSpec):
            spec = JudgeSpec(**{**judge.model_dump(), **judge_settings})
        else:
            spec = JudgeSpec(**{**dict(judge or {}), **judge_settings})
        out = Path(cache_dir) if cache_dir is not None else cache_home() / "metrics" / self.PROTOCOL
        return score_records(
            self.PROTOCOL,
            samples,
            preds,
            spec,
            out,
            protocol_file=None if protocol_file is None else Path(protocol_file),
            allow_unofficial=allow_unofficial,
            clip_model=None if clip_model is None else Path(clip_model),
            predictions_b=preds_b,
            swap=swap,
        )


def _mapping(v: Any, where: str) -> Mapping[str, Any]:
    from ..types import SchemaError

    if not isinstance(v, Mapping):
        raise SchemaError(where, f"expected a record or a row, got {type(v).__name__}")
    return v
