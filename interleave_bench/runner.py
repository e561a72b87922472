"""``ibench eval``: generate -> store -> score -> aggregate, resumable and sharded.

Generation runs batch by batch on a worker thread while judging of finished predictions goes on
concurrently on the event loop. Every prediction and judgment is appended to the run folder the
moment it exists, so a run killed at any point resumes without repeating a generation or a judge
call (the judge cache covers calls in flight), and its results equal an uninterrupted run's.
Under ``torchrun``/``accelerate launch`` each rank takes ``samples[rank::world]`` and writes its own
files; rank 0 waits for the others (bounded) and merges.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .benchmarks import load_benchmark
from .config import JudgeSpec, PipelineSpec, from_yaml
from .media import ImageStore
from .models.base import GenerationSettings
from .models.prompts import build_prompt, load_templates, templates_sha256
from .runs import JsonlLog, RunFolder, dist_info, read_jsonl
from .scoring import (
    ScoreConfig,
    aggregate,
    build_engine,
    build_scorer,
    is_missing,
    missing_judgment,
    not_scored,
    protocol_spec,
)
from .types import Judgment, Prediction, Result, RunResults, Sample


@dataclass
class EvalConfig:
    """One ``ibench eval`` run; the CLI builds exactly this object."""

    model: str
    bench: str
    out: Path
    model_type: str | None = None
    data: Path | None = None
    limit: int | None = None
    scorers: list[str] = field(default_factory=lambda: ["structure"])
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    device: str = "auto"
    dtype: str | None = None
    templates: Path | None = None
    fail_fast: bool = False
    report: bool = True
    judge: JudgeSpec = field(default_factory=JudgeSpec)  # for judge protocols
    protocol_file: Path | None = None
    allow_unofficial: bool = False
    pipeline: PipelineSpec = field(default_factory=PipelineSpec)  # chat endpoint + image generator
    wait_for_ranks: float = 3600.0

    @classmethod
    def from_yaml(
        cls, path: Path, overrides: Mapping[str, Any] | Iterable[str] | None = None
    ) -> EvalConfig:
        """The config of a YAML file (keys as here; ``settings``, ``judge`` and ``pipeline``
        nested) with dotted overrides such as ``judge.concurrency=4``."""
        return from_yaml(cls, path, overrides)


@dataclass
class Hooks:
    on_start: Callable[[int, int], None] | None = None  # (to generate, to judge)
    on_generated: Callable[[Prediction], None] | None = None
    on_judged: Callable[[Judgment, Any], None] | None = None


class GenerationFailed(RuntimeError):
    """Raised with --fail-fast after the failing prediction was recorded."""


def _seeded(settings: GenerationSettings, sample_id: str) -> GenerationSettings:
    """A per-sample seed, so sampled answers do not depend on batch order or on a resume."""
    import zlib

    return replace(
        settings, seed=(settings.seed * 1_000_003 + zlib.crc32(sample_id.encode())) % 2**31
    )


def _takes_seeds(adapter: Any) -> bool:
    """Whether the adapter's ``generate`` takes one seed per prompt (the batched families)."""
    import inspect

    try:
        return "seeds" in inspect.signature(adapter.generate).parameters
    except (TypeError, ValueError):
        return False


def _torch_threads() -> int | None:
    """The caller's torch intra-op thread count (it is per thread, so the generation thread
    must be told, or a tiny model on a busy CPU runs several times slower)."""
    torch = sys.modules.get("torch")
    return None if torch is None else int(torch.get_num_threads())


def _same_torch_threads(n: int | None) -> None:
    if n is not None:
        import torch

        torch.set_num_threads(n)


def _rank_suffix(rank: int, world: int) -> str:
    return "" if world == 1 else f".rank{rank}"


def load_done(out: Path) -> tuple[dict[str, Prediction], dict[tuple[str, str], Judgment]]:
    preds: dict[str, Prediction] = {}
    for f in sorted(out.glob("predictions*.jsonl")):
        for rec in read_jsonl(f):
            p = Prediction.from_dict(rec)
            preds[p.sample_id] = p
    judgments: dict[tuple[str, str], Judgment] = {}
    for f in sorted(out.glob("judgments*.jsonl")):
        for rec in read_jsonl(f):
            j = Judgment.from_dict(rec)
            judgments[(j.scorer, j.sample_id)] = j
    return preds, judgments


class EvalRun:
    def __init__(self, cfg: EvalConfig, hooks: Hooks | None = None) -> None:
        self.cfg = cfg
        self.hooks = hooks or Hooks()
        self.rank, self.world = dist_info()
        self.data = load_benchmark(cfg.bench, cfg.data, cfg.limit, download=cfg.data is None)
        self.samples: list[Sample] = list(self.data)
        self.templates = load_templates(cfg.templates)
        self.store = ImageStore(cfg.out / "images")
        self.engines: list[Any] = []

    # ------------------------------------------------------------------------------ setup
    def identity(self) -> dict[str, Any]:
        cfg = self.cfg
        settings = {k: v for k, v in cfg.settings.to_dict().items() if k != "batch_size"}
        judge = {
            "judge_model": cfg.judge.judge_model,
            "judge_base_url": cfg.judge.judge_base_url,
            "protocol_file": None if cfg.protocol_file is None else str(cfg.protocol_file),
            "allow_unofficial": cfg.allow_unofficial,
        }
        if cfg.judge.judge_local is not None:  # only then: older run folders keep their identity
            judge["judge_local"] = str(cfg.judge.judge_local)
        for key in ("judge_system_prompt", "judge_local_backend"):  # likewise, only when set
            if key in cfg.judge.identity():
                judge[key] = cfg.judge.identity()[key]
        return {
            "model": cfg.model,
            "model_type": cfg.model_type,
            "bench": cfg.bench,
            "dataset_revision": self.data.info.revision,
            "limit": cfg.limit,
            "scorers": cfg.scorers,
            "settings": settings,
            "judge": judge,
            # only this benchmark's wording: a plugin adding another benchmark changes nothing
            "templates_sha256": templates_sha256(
                {b: self.templates.get(b, {}) for b in sorted({s.benchmark for s in self.samples})}
            ),
        }

    def claim(self, scorers: tuple[Any, ...] | list[Any] = ()) -> None:
        """Write the manifest: only once prompts, judges and the model are ready, so a start
        that fails (a download, a judge, a model) leaves nothing that refuses the fixed command.
        Each judge scorer's entry says how its judge computes (path, system message, tiles)."""
        from .judges.local_backends import judge_setup

        setups = {sc.name: setup for sc in scorers if (setup := judge_setup(sc))}
        RunFolder(self.cfg.out, "eval").claim(
            self.identity(),
            {
                "dataset": self.data.info.to_dict(),
                "settings": self.cfg.settings.to_dict(),
                "templates": self.templates,
                "world_size": self.world,
                **({"judge_setup": setups} if setups else {}),
            },
        )

    def scorer_objects(self) -> list[Any]:
        scorers = []
        for name in self.cfg.scorers:
            opts = ScoreConfig(
                bench=self.cfg.bench,
                predictions=Path("-"),
                protocol=name,
                out=self.cfg.out,
                protocol_file=self.cfg.protocol_file,
                allow_unofficial=self.cfg.allow_unofficial,
                judge=self.cfg.judge,
            )
            engine = build_engine(opts) if protocol_spec(name).uses_judge else None
            if engine is not None:
                self.engines.append(engine)
            scorers.append(build_scorer(opts, engine))
        return scorers

    # ------------------------------------------------------------------------------ run
    def run(self) -> list[Result]:
        """The run, holding the folder's lock: a second process on the same --out stops at once
        instead of duplicating records and paying for every judge call twice."""
        with RunFolder(self.cfg.out, "eval").lock(self.rank, self.world):
            return self._run()

    def _run(self) -> list[Result]:
        cfg = self.cfg
        folder = RunFolder(cfg.out, "eval")
        folder.check(self.identity())  # refuse another run's folder; claimed once it starts
        if self.rank == 0 and not (cfg.out / "samples.jsonl").exists():
            folder.write_jsonl("samples.jsonl", [s.to_dict() for s in self.samples])
        if self.rank == 0:  # what the loader refused or skipped: printed, and on the report
            from .report.run import write_problems

            write_problems(cfg.out, self.data.info.data_file, self.data.problems)
        shard = self.samples[self.rank :: self.world]
        suffix = _rank_suffix(self.rank, self.world)
        # opened first: a torn last line (a kill mid-write) is cut off before anything is read
        pred_log = folder.log(f"predictions{suffix}.jsonl")
        try:
            judg_log = folder.log(f"judgments{suffix}.jsonl")
        except BaseException:
            pred_log.close()
            raise
        try:
            done_preds, done_judgments = load_done(cfg.out)
            # failures are retried on resume (a judge outage or an OOM may be gone by now)
            done_preds = {k: p for k, p in done_preds.items() if not p.error}
            done_judgments = {k: j for k, j in done_judgments.items() if j.status != "error"}
            scorers = self.scorer_objects()
            asyncio.run(self._loop(shard, done_preds, done_judgments, scorers, pred_log, judg_log))
        finally:
            pred_log.close()
            judg_log.close()
        (cfg.out / f"done{suffix}").write_text("ok\n")
        if self.rank != 0:
            return []
        self._wait_for_ranks()
        return self.finish(scorers)

    async def _loop(
        self,
        shard: list[Sample],
        done_preds: dict[str, Prediction],
        done_judgments: dict[tuple[str, str], Judgment],
        scorers: list[Any],
        pred_log: JsonlLog,
        judg_log: JsonlLog,
    ) -> None:
        todo = [s for s in shard if s.id not in done_preds]
        to_judge = sum((sc.name, s.id) not in done_judgments for s in shard for sc in scorers)
        if self.hooks.on_start:
            self.hooks.on_start(len(todo), to_judge)
        tasks: list[asyncio.Task] = []
        sem = asyncio.Semaphore(256)

        async def judge(scorer: Any, sample: Sample, pred: Prediction) -> None:
            if is_missing(pred):  # a replay without this sample: no prediction, no failure
                js = [missing_judgment(scorer, pred)]
            else:
                async with sem:
                    js = await scorer.ascore([sample], [pred])
            for j in js:
                judg_log.append(j.to_dict())
                if self.hooks.on_judged:
                    self.hooks.on_judged(j, getattr(scorer, "engine", None))

        def schedule(sample: Sample, pred: Prediction) -> None:
            for sc in scorers:
                if (sc.name, sample.id) not in done_judgments:
                    tasks.append(asyncio.create_task(judge(sc, sample, pred)))

        for s in shard:  # predictions from an earlier, interrupted run
            if s.id in done_preds:
                schedule(s, done_preds[s.id])
        if to_judge and self.cfg.judge.preflight:
            for engine in self.engines:  # fail before hours of generation, not after
                await engine.backend.preflight()
        adapter = self._adapter() if todo else None
        self.claim(scorers)
        loop = asyncio.get_running_loop()
        bs = max(1, self.cfg.settings.batch_size)
        pool = ThreadPoolExecutor(
            max_workers=1, initializer=_same_torch_threads, initargs=(_torch_threads(),)
        )
        try:
            for start in range(0, len(todo), bs):
                batch = todo[start : start + bs]
                preds = await loop.run_in_executor(pool, self._generate, adapter, batch)
                for sample, pred in zip(batch, preds, strict=True):
                    pred_log.append(pred.to_dict())
                    if self.hooks.on_generated:
                        self.hooks.on_generated(pred)
                    if pred.error and self.cfg.fail_fast:
                        raise GenerationFailed(f"{sample.id}: {pred.error}")
                    schedule(sample, pred)
            await asyncio.gather(*tasks)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            for t in tasks:
                t.cancel()
            for sc in scorers:
                await sc.aclose()

    def _adapter(self) -> Any:
        from .models.loading import load_adapter

        return load_adapter(
            self.cfg.model,
            self.cfg.model_type,
            device=self.cfg.device,
            dtype=self.cfg.dtype,
            data=self.data,
            pipeline=self.cfg.pipeline.model_dump(),
        )

    def _generate(self, adapter: Any, batch: list[Sample]) -> list[Prediction]:
        """One batch on the worker thread; a failure is the prediction's error, not a crash."""
        # each sample draws from its own seed (from its id), so a sampled answer is the same
        # at every batch size and on a resume; adapters that decode rows together take the
        # seeds per row (other adapters draw a batch of several from the run's seed)
        own = [_seeded(self.cfg.settings, s.id) for s in batch]
        settings = own[0] if len(batch) == 1 else self.cfg.settings
        t0 = time.perf_counter()
        try:
            if hasattr(adapter, "outputs_for"):  # replays of other tools' outputs
                outs = adapter.outputs_for([s.id for s in batch], self.store)
            else:
                prompts = [build_prompt(s, self.templates) for s in batch]
                if len(batch) > 1 and _takes_seeds(adapter):
                    seeds = [o.seed for o in own]
                    outs = adapter.generate(prompts, settings, self.store, seeds=seeds)
                else:
                    outs = adapter.generate(prompts, settings, self.store)
                    own = [settings] * len(batch)
        except Exception as e:  # the adapter itself broke: every sample of the batch records it
            from .models.base import GenerationOutput
            from .types import Interleaved

            outs = [
                GenerationOutput(Interleaved(), error=f"{type(e).__name__}: {e}") for _ in batch
            ]
        per = (time.perf_counter() - t0) / max(1, len(batch))
        return [
            Prediction(
                s.id,
                getattr(adapter, "model_id", self.cfg.model),
                o.output,
                settings=st.to_dict(),
                timing={"seconds": round(o.seconds or per, 4)},
                error=o.error,
            )
            for s, o, st in zip(batch, outs, own, strict=True)
        ]

    # ------------------------------------------------------------------------------ finish
    def _wait_for_ranks(self) -> None:
        deadline = time.monotonic() + self.cfg.wait_for_ranks
        while True:
            missing = [
                r
                for r in range(1, self.world)
                if not (self.cfg.out / f"done{_rank_suffix(r, self.world)}").exists()
            ]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"ranks {missing} did not finish within "
                    f"{self.cfg.wait_for_ranks:.0f} s; rerun to resume"
                )
            time.sleep(0.2)

    def finish(self, scorers: list[Any]) -> list[Result]:
        """Merge rank files into canonical ones (sample order) and aggregate per scorer."""
        out = self.cfg.out
        preds, judgments = load_done(out)
        order = {s.id: i for i, s in enumerate(self.samples)}
        folder = RunFolder(out, "eval")
        if self.world > 1 or not (out / "predictions.jsonl").exists():
            merged = sorted(preds.values(), key=lambda p: order.get(p.sample_id, len(order)))
            folder.write_jsonl("predictions.jsonl", [p.to_dict() for p in merged])
            js = sorted(judgments.values(), key=lambda j: (j.scorer, order.get(j.sample_id, 0)))
            folder.write_jsonl("judgments.jsonl", [j.to_dict() for j in js])
        results = []
        for sc in scorers:
            js = [judgments[(sc.name, s.id)] for s in self.samples if (sc.name, s.id) in judgments]
            engine = getattr(sc, "engine", None)
            r = aggregate(sc, self.samples, js, engine)
            unjudged = len(self.samples) - len(js)  # cut off before a verdict was recorded
            causes = not_scored(js) | ({"not judged": unjudged} if unjudged else {})
            results.append(replace(r, metadata={**r.metadata, "not_scored": causes}))
        errors = sum(1 for p in preds.values() if p.error)
        folder.write_results(RunResults(results=results, generation_errors=errors))
        if self.cfg.report:
            try:
                from .report.html import write_report
            except ImportError:
                pass
            else:
                write_report(out)
        return results


def run_eval(cfg: EvalConfig, hooks: Hooks | None = None) -> list[Result]:
    return EvalRun(cfg, hooks).run()
