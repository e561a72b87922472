"""``ibench score``: score predictions made elsewhere with one protocol, into an output folder.

The folder holds ``judgments.sqlite`` (the judge cache: a rerun sends no request),
``judgments.jsonl`` (each judgment appended as it is produced), ``results.json`` and
``manifest.json``. No API key is ever written: only the name of the variable that holds it.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import __version__
from .aggregate import status_counts, summarize
from .benchmarks import DataError, Problem, load_benchmark
from .config import JudgeSpec, from_yaml
from .judges.cache import JudgmentCache
from .judges.client import JudgeConfig, OpenAIJudge
from .judges.engine import JudgeEngine
from .predictions import (
    load_mmie_predictions,
    load_opening_outputs,
    load_prediction_dataset,
    load_prediction_records,
)
from .protocols import ProtocolSpec, get_protocol, protocol_names
from .registry import UnknownNameError
from .runs import RunFolder, locks_run_folder
from .scorers.base import PairwiseScorer, Scorer, run_sync
from .types import (
    ImageRef,
    Interleaved,
    Judgment,
    PairwiseResult,
    Prediction,
    Result,
    RunResults,
    Sample,
    Segment,
)


class ScoreError(ValueError):
    """A bad combination of options or inputs, reported before any judge call."""


@dataclass
class ScoreConfig:
    """One ``ibench score`` run: inputs, protocol, output folder and the judge that answers.
    ``ScoreConfig.from_yaml(path, overrides)`` and ``ibench score`` build the same object."""

    bench: str
    predictions: Path
    protocol: str
    out: Path
    data: Path | None = None
    protocol_file: Path | None = None
    allow_unofficial: bool = False
    judge: JudgeSpec = field(default_factory=JudgeSpec)
    predictions_b: Path | None = None
    swap: bool = False
    clip_model: Path | None = None
    limit: int | None = None  # score the first N samples only (a quick look before a full run)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_yaml(
        cls, path: Path, overrides: Mapping[str, Any] | Iterable[str] | None = None
    ) -> ScoreConfig:
        return from_yaml(cls, path, overrides)


def load_inputs(opts: ScoreConfig) -> tuple[list[Sample], list[Prediction], list[Problem], str]:
    """Samples paired with predictions, whatever form the predictions come in."""
    p = opts.predictions
    bench = opts.bench.partition(":")[0]
    from .hf import is_saved_dataset, looks_like_hub_id

    if is_saved_dataset(p) or (not p.exists() and looks_like_hub_id(str(p))):
        data = load_benchmark(opts.bench, opts.data, download=opts.data is None)
        samples, preds, problems = load_prediction_dataset(p, data, opts.out / "images")
        return samples, preds, problems, data.info.revision
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if p.is_file() and p.suffix == ".json" and bench == "mmie":
        samples, preds, problems = load_mmie_predictions(p)
        if opts.data is None:
            return samples, preds, problems, f"sha256 of {p.name}"
        copy = load_benchmark(opts.bench, opts.data, download=False)
        samples, preds = match_answers(p, samples, preds, list(copy))
        return samples, preds, problems + copy.problems, copy.info.revision
    data = load_benchmark(opts.bench, opts.data, download=opts.data is None)
    if p.is_dir() and (p / "predictions.jsonl").is_file():
        p = p / "predictions.jsonl"
    if p.is_file() and p.suffix == ".jsonl":
        samples, preds, problems = load_prediction_records(p, data)
    elif p.is_dir() and bench == "opening":
        samples, preds, problems = load_opening_outputs(p, data)
    else:
        raise ScoreError(
            f"{p}: not a predictions file this command reads for {bench} (MMIE JSON, "
            "a predictions.jsonl, or an OpenING <MODEL>_output/ folder)"
        )
    return samples, preds, problems, data.info.revision


def _question(s: Sample) -> list[tuple[str, str | None]]:
    return [(g.kind, g.text if g.image is None else g.image.source) for g in s.input]


def match_answers(
    path: Path, answered: list[Sample], preds: list[Prediction], trusted: list[Sample]
) -> tuple[list[Sample], list[Prediction]]:
    """With ``--data``: the benchmark copy's samples, each paired with its answer from the MMIE
    answers file ``path``, so the run is on that copy's revision; a row whose id, question or
    reference answer is not the copy's is refused (answers made on another revision)."""
    by_id = {s.id: s for s in trusted}
    for s in answered:
        t = by_id.get(s.id)
        if t is None:
            raise DataError(f"{path.name} row {s.id}: id: not in the --data copy of the benchmark")
        for field_name, mine, theirs in (
            ("question", _question(t), _question(s)),
            ("gt_answer", t.metadata.get("gt_answer"), s.metadata.get("gt_answer")),
        ):
            if mine != theirs:
                raise DataError(
                    f"{path.name} row {s.id}: {field_name}: differs from the --data copy; pass "
                    "the copy the answers were made from"
                )
    answer = {p.sample_id: p for p in preds}
    model = preds[0].model if preds else "unknown"
    return trusted, [
        answer.get(t.id) or Prediction(t.id, model, Interleaved(), error="no prediction")
        for t in trusted
    ]


def save_predictions(out: Path, preds: list[Prediction]) -> None:
    """Write ``out/predictions.jsonl`` with every output image copied into ``out/images`` by
    content hash, so the run folder alone holds what was judged (a leaderboard audit re-judges
    from it) and no path of this machine is written."""
    from .media import ImageError, ImageStore, ref_path

    store = ImageStore(out / "images")

    def keep(ref: ImageRef) -> ImageRef:
        try:
            if ref.missing:
                raise ImageError("missing")
            return ImageRef(sha256=store.put_file(ref_path(ref)).sha256, source=ref.source)
        except (ImageError, OSError):
            return ImageRef(sha256=ref.sha256, source=ref.source or "unavailable", missing=True)

    lines = []
    for p in preds:
        segs = [Segment.of_image(keep(g.image)) if g.image is not None else g for g in p.output]
        lines.append(json.dumps(replace(p, output=Interleaved(segs)).to_dict(), ensure_ascii=False))
    tmp = out / ".predictions.jsonl.tmp"
    tmp.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    tmp.replace(out / "predictions.jsonl")


NO_PREDICTION = "no prediction"
_MISSING = ("no prediction", "no output file")  # the loaders' and replays' words for it


def is_missing(pred: Prediction) -> bool:
    """The predictions had no answer for this sample (not a generation that failed)."""
    return bool(pred.error) and str(pred.error).startswith(_MISSING)


def missing_judgment(scorer: Any, pred: Prediction) -> Judgment:
    """The verdict on a sample the predictions do not answer: an ``error`` labelled as such."""
    return Judgment(
        pred.sample_id, scorer.name, scorer.protocol_version, "error", reason=NO_PREDICTION
    )


def pairwise_result(
    scorer: Any,
    engine: Any,
    models: list[str],
    judgments: list[Judgment],
    *,
    swap: bool = False,
    **metadata: Any,
) -> PairwiseResult:
    """A pairwise run's result: win rates, counts by status, the reasons of what was not valid,
    the judge's request statistics (``ibench score`` and the ``evaluate`` metric share it)."""
    counts, reasons = status_counts(judgments)
    return PairwiseResult(
        protocol=scorer.protocol_version,
        judge=engine.model,
        comparable=bool(scorer.comparable),
        models=models,
        win_rates=scorer.rates(judgments),
        counts=counts,
        invalid_reasons=reasons,
        swap=swap,
        metadata={
            "judge_stats": engine.stats.to_dict(),
            **metadata,
            "not_scored": not_scored(judgments),
        },
    )


def not_scored(judgments: Iterable[Judgment]) -> dict[str, int]:
    """Items without a score, by cause: what a rerun (or the user) can still finish. Invalid
    judge replies are the protocol's result, not missing work, so they are not counted."""
    causes: Counter[str] = Counter()
    for j in judgments:
        if j.status != "error":
            continue
        why = f"{j.reason or ''} {j.metadata.get('detail') or ''}"
        if why.startswith(NO_PREDICTION):
            causes["no prediction"] += 1
        elif why.startswith("generation failed"):
            causes["generation failed"] += 1
        elif "past the budget" in why:
            causes["over the --max-cost budget"] += 1
        elif "deadline exceeded" in why:
            causes["past the --deadline"] += 1
        else:
            causes["judge error"] += 1
    return dict(sorted(causes.items()))


def require_usable(opts: ScoreConfig, samples: list[Sample], preds: list[Prediction]) -> None:
    """Refuse predictions that answer no sample (wrong keys, another benchmark's ids): exit 1
    with the reason, instead of an "overall None" from nothing."""
    if samples and any(not is_missing(p) for p in preds):
        return
    raise ScoreError(
        f"{opts.predictions}: nothing usable: no prediction answers a sample of {opts.bench} "
        f"({len(samples)} samples); check the file's sample_id values and --bench"
    )


def check_clip(opts: ScoreConfig) -> None:
    """clip_score without a CLIP folder: say so before any work, naming the option."""
    import os

    from .scorers.similarity import CLIP_PATH_ENV

    if getattr(opts, "clip_model", None) is None and not os.environ.get(CLIP_PATH_ENV):
        raise ScoreError(
            f"clip_score needs a local CLIP folder: pass --clip-model PATH (or set ${CLIP_PATH_ENV})"
        )


def protocol_spec(name: str) -> ProtocolSpec:
    """The registered protocol ``name``; unknown: a ``ScoreError`` with a "did you mean"."""
    try:
        return get_protocol(name)
    except UnknownNameError as e:
        raise ScoreError(str(e)) from None


def build_scorer(opts: ScoreConfig, engine: JudgeEngine | None) -> Scorer | PairwiseScorer:
    """The scorer of ``opts.protocol``, made by its registered spec's builder."""
    spec = protocol_spec(opts.protocol)
    if spec.name == "clip_score":
        check_clip(opts)
    scorer = spec.build(opts, engine)
    want = PairwiseScorer if spec.kind == "pairwise" else Scorer
    if not isinstance(scorer, want):
        raise TypeError(
            f"protocol {spec.name!r} ({spec.kind}) built {scorer!r}, not a {want.__name__}"
        )
    return scorer


def build_engine(opts: ScoreConfig, *, with_cache: bool = True) -> JudgeEngine | None:
    if not protocol_spec(opts.protocol).uses_judge:
        return None
    if with_cache:  # a real run (an estimate sends nothing and needs no key)
        check_judge_key(opts.judge)
    cache = JudgmentCache(opts.out / "judgments.sqlite") if with_cache else None
    return engine_for(opts.judge, cache)


def check_judge_key(spec: JudgeSpec) -> None:
    """The default endpoint (api.openai.com) without its API key would refuse every request:
    say so before anything is sent, naming the variable. A ``--judge-base-url`` (or
    ``OPENAI_BASE_URL``) server may need no key, so nothing is checked there."""
    import os

    if spec.judge_local is not None or spec.judge_base_url or os.environ.get("OPENAI_BASE_URL"):
        return
    if not os.environ.get(spec.judge_key_env):
        raise ScoreError(
            f"{spec.judge_key_env} is not set: the default judge endpoint (api.openai.com) "
            "needs an API key; export it, or pass --judge-base-url for another server"
        )


def engine_for(spec: JudgeSpec, cache: JudgmentCache | None) -> JudgeEngine:
    """The judge ``spec`` describes, answering through ``cache``."""
    if spec.judge_local is not None:
        from .judges.local_backends import local_judge

        try:
            backend: Any = local_judge(
                str(spec.judge_local),
                trust_remote_code=spec.trust_remote_code,
                backend=spec.judge_local_backend,
            )
        except ValueError as e:  # e.g. an InternVL checkpoint without --trust-remote-code
            raise ScoreError(f"--judge-local {spec.judge_local}: {e}") from None
        return JudgeEngine(backend, cache)
    if not spec.judge_model:
        raise ScoreError("--judge-model is required for a judge protocol (or --judge-local PATH)")
    config = JudgeConfig(
        model=spec.judge_model,
        base_url=spec.judge_base_url,
        api_key_env=spec.judge_key_env,
        concurrency=spec.concurrency,
        requests_per_minute=spec.requests_per_minute,
        tokens_per_minute=spec.tokens_per_minute,
        max_retries=spec.max_retries,
        deadline=spec.deadline,
        max_retry_wait=spec.max_retry_wait,
        timeout=spec.judge_timeout,
        transport=spec.judge_transport,
    )
    if spec.price_table is not None:
        table = json.loads(spec.price_table.read_text())
        config.prices.update({k: (float(v[0]), float(v[1])) for k, v in table.items()})
    return JudgeEngine(OpenAIJudge(config), cache, max_cost=spec.max_cost)


def aggregate(
    scorer: Scorer, samples: list[Sample], judgments: list[Judgment], engine: JudgeEngine | None
) -> Result:
    agg = getattr(scorer, "aggregate", None)
    if agg is not None:
        return agg(samples, judgments)
    return summarize(
        judgments,
        {s.id: s.category for s in samples},
        benchmark=samples[0].benchmark if samples else "",
        scorer=scorer.name,
        protocol=scorer.protocol_version,
        judge=None if engine is None else engine.model,
        scale=get_protocol(scorer.name).scale if scorer.name in protocol_names() else "",
        comparable=False,
    )


def _judgment_key(j: Judgment) -> tuple[str, str, Any]:
    return (j.scorer, j.sample_id, j.metadata.get("swapped"))


class _Appender:
    """Appends each judgment not already in ``judgments.jsonl`` (a rerun, served by the cache,
    adds nothing; a retried error adds its new verdict, which readers take as the last)."""

    def __init__(self, folder: RunFolder, engine: JudgeEngine | None, on_progress: Any) -> None:
        self.done = {
            _judgment_key(j): j
            for j in map(Judgment.from_dict, folder.read("judgments.jsonl"))
            if j.status != "error"
        }
        self.log = folder.log("judgments.jsonl")
        self.engine = engine
        self.on_progress = on_progress
        self.reported: set[tuple[str, str, Any]] = set()

    def __call__(self, j: Judgment) -> None:
        key = _judgment_key(j)
        if key not in self.done:
            self.log.append(j.to_dict())
        self.reported.add(key)
        if self.on_progress is not None:
            self.on_progress(j, self.engine)


@locks_run_folder("score")  # a second process on the same --out stops at once
def run_score(
    opts: ScoreConfig,
    on_progress: Callable[[Judgment, JudgeEngine | None], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> tuple[Result, list[Judgment], list[Problem], JudgeEngine | None]:
    folder = RunFolder(opts.out, "score")
    folder.check(score_identity(opts))  # refuse another run's folder; write nothing yet
    samples, preds, problems, revision = load_inputs(opts)
    samples, preds = samples[: opts.limit], preds[: opts.limit]
    require_usable(opts, samples, preds)
    engine = build_engine(opts)
    scorer = build_scorer(opts, engine)
    if not isinstance(scorer, Scorer):
        raise ScoreError(f"{opts.protocol} compares two models: run it with run_pairwise")
    finished = (opts.out / "results.json").is_file()
    if engine is not None and opts.judge.preflight and not finished:
        run_sync(preflight(engine))
    # the run starts only now: a failed download, input or judge above leaves no manifest
    claimed = folder.claim(score_identity(opts))
    save_predictions(opts.out, preds)
    if on_start is not None:
        on_start(len(samples))
    t0 = time.time()
    emit = _Appender(folder, engine, on_progress)
    try:
        scorer.on_judgment = emit
        answered = [(s, p) for s, p in zip(samples, preds, strict=True) if not is_missing(p)]
        missing = [missing_judgment(scorer, p) for p in preds if is_missing(p)]
        for j in missing:
            emit(j)
        judgments = missing + scorer.score([a[0] for a in answered], [a[1] for a in answered])
        for j in judgments:  # scorers that return a batch at once report here
            if _judgment_key(j) not in emit.reported:
                emit(j)
    finally:
        emit.log.close()
    result = aggregate(scorer, samples, judgments, engine)
    meta = {
        **result.metadata,
        "problems": len(problems),
        "seconds": round(time.time() - t0, 3),
        "not_scored": not_scored(judgments),
    }
    if engine is not None:
        meta["judge_stats"] = engine.stats.to_dict()
    result = replace(result, metadata=meta)
    folder.write_results(RunResults(results=[result]))
    folder.write_manifest({**claimed, **manifest(opts, revision, scorer)})
    return result, judgments, problems, engine


async def preflight(engine: JudgeEngine) -> None:
    """Probe the judge once on a short-lived loop, closing its connections after."""
    try:
        await engine.backend.preflight()
    finally:
        await engine.aclose()


def score_identity(opts: ScoreConfig) -> dict[str, Any]:
    """What makes two `score` commands the same run (so a rerun resumes, a change refuses)."""
    return {
        "bench": opts.bench,
        "predictions": str(opts.predictions),
        "predictions_b": None if opts.predictions_b is None else str(opts.predictions_b),
        "swap": opts.swap,
        "protocol": opts.protocol,
        "protocol_file": None if opts.protocol_file is None else str(opts.protocol_file),
        "allow_unofficial": opts.allow_unofficial,
        **opts.judge.identity(),
        **({} if opts.limit is None else {"limit": opts.limit}),
        **({"extra": dict(opts.extra)} if opts.extra else {}),  # a protocol's own settings
    }


def manifest(opts: ScoreConfig, revision: str, scorer: Scorer) -> dict[str, Any]:
    from .judges.local_backends import judge_setup

    prompts = getattr(scorer, "prompts", None) or getattr(scorer, "prompt", None)
    return {
        "interleave_bench": __version__,
        "python": sys.version.split()[0],
        "command": "score",
        "argv": sys.argv[1:],
        "bench": opts.bench,
        "predictions": str(opts.predictions),
        "dataset_revision": revision,
        "protocol": opts.protocol,
        "protocol_version": scorer.protocol_version,
        "comparable": bool(scorer.comparable),
        "prompt_source": getattr(prompts, "source", None),
        "prompt_sha256": getattr(prompts, "hashes", None),
        "judge": {**opts.judge.describe(), **judge_setup(scorer)},
    }


def pair_inputs(
    opts: ScoreConfig,
) -> tuple[
    list[Sample],
    list[Prediction],
    list[Prediction],
    tuple[list[Problem], list[Problem], str, list[str]],
]:
    """The samples both ``--predictions`` (A) and ``--predictions-b`` (B) answered, aligned; then
    the problems of each side, the data revision and the two models' names."""
    if opts.predictions_b is None:
        raise ScoreError(f"{opts.protocol} compares two models: pass --predictions-b too")
    samples, preds_a, problems, revision = load_inputs(opts)
    _, preds_b, problems_b, _ = load_inputs(replace(opts, predictions=opts.predictions_b))
    by_b = {p.sample_id: p for p in preds_b}
    missing = ("no output file", "no prediction")  # not answered by one side: not a match
    models = sorted({preds_a[0].model if preds_a else "A", preds_b[0].model if preds_b else "B"})
    kept = [
        (s, a, by_b[s.id])
        for s, a in zip(samples, preds_a, strict=True)
        if s.id in by_b and a.error not in missing and by_b[s.id].error not in missing
    ]
    return (
        [k[0] for k in kept],
        [k[1] for k in kept],
        [k[2] for k in kept],
        (problems, problems_b, revision, models),
    )


@locks_run_folder("score")
def run_pairwise(
    opts: ScoreConfig,
    on_progress: Callable[[Judgment, JudgeEngine | None], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> tuple[PairwiseResult, list[Judgment], list[Problem], JudgeEngine | None]:
    """A pairwise protocol's arena between the models of ``--predictions`` (A) and
    ``--predictions-b`` (B) on the samples both answered; win rates as the protocol counts them,
    unreadable verdicts counted as invalid."""
    if protocol_spec(opts.protocol).kind != "pairwise":
        raise ScoreError(f"{opts.protocol} is not a pairwise protocol")
    folder = RunFolder(opts.out, "score")
    folder.check(score_identity(opts))
    samples, preds_a, preds_b, (problems, problems_b, revision, models) = pair_inputs(opts)
    if not samples:
        raise ScoreError(
            f"{opts.predictions} and {opts.predictions_b}: nothing usable: no sample of "
            f"{opts.bench} is answered by both; check their sample_id values and --bench"
        )
    pairs = list(zip(samples, preds_a, preds_b, strict=True))
    engine = build_engine(opts)
    scorer = build_scorer(opts, engine)
    assert isinstance(scorer, PairwiseScorer) and engine is not None
    if opts.judge.preflight and not (opts.out / "results.json").is_file():
        run_sync(preflight(engine))
    claimed = folder.claim(score_identity(opts))
    if on_start is not None:
        on_start(len(pairs) * (2 if opts.swap else 1))
    emit = _Appender(folder, engine, on_progress)
    scorer.on_judgment = emit

    async def go() -> list[Judgment]:
        try:
            return await scorer.ascore_pairs(
                [p[0] for p in pairs], [p[1] for p in pairs], [p[2] for p in pairs]
            )
        finally:
            await scorer.aclose()

    try:
        judgments = run_sync(go())
    finally:
        emit.log.close()
    result = pairwise_result(
        scorer,
        engine,
        models,
        judgments,
        swap=opts.swap,
        pairs=len(pairs),
        problems=len(problems) + len(problems_b),
    )
    folder.write_results(RunResults(pairwise=[result]))
    folder.write_manifest({**claimed, **manifest(opts, revision, scorer)})
    return result, judgments, problems + problems_b, engine
