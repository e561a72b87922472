"""`ibench eval` and `ibench report`: generating, scoring and reporting runs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import typer

from ..config import JudgeSpec, PipelineSpec
from ..registry import models as _families
from .errors import (
    debugging,
    describe_error,
    fail,
    finish_run,
    not_scored_total,
    print_error,
)
from .options import (
    AllowUnofficialOpt,
    DataOpt,
    JsonOpt,
    ProtocolFileOpt,
    judge_options,
    number,
)
from .output import err, judge_line, judging_status, out, print_json, print_result, progress
from .registry_options import bench_help, check_protocol, live_option, protocol_help

# --------------------------------------------------------------------------- eval

_DTYPES = ("auto", "float32", "bfloat16", "float16")


def _default_out(model: str, bench: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(model.rstrip("/")).name or model)
    return Path("runs") / f"{name}__{bench.replace(':', '_')}"


def _check_model_type(model_type: str | None) -> None:
    """An unregistered family is a usage error (exit 2) with a "did you mean"."""
    from ..models.base import UNSUPPORTED
    from ..registry import UnknownNameError, models

    known = models.names()
    if model_type is not None and model_type.lower() not in (*known, *UNSUPPORTED):
        raise fail(f"--model-type: {UnknownNameError('model family', model_type, known)}", 2)


def _check_cuda(device: str) -> None:
    """``--device cuda`` where torch has no CUDA: a usage error naming the fix, before a model
    loads (torch's own error is an AssertionError deep in the load)."""
    if not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no GPU is visible"
        raise fail(f"--device {device}: {why}; pass --device cpu (or auto)", 2)


def _check_templates(path: Path | None) -> None:
    """Read ``--templates`` before a model loads: a bad file is exit 1 naming it."""
    if path is None:
        return
    from ..models.prompts import load_templates

    try:
        load_templates(path)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise fail(f"--templates {path}: invalid JSON ({e})") from None
    except ValueError as e:  # its message names the file
        raise fail(str(e)) from None


@judge_options
def eval_cmd(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="Model folder, Hub id, or tiny:janus / tiny:emu3 / tiny:text (built on the spot); "
            "with --model-type replay, outputs of another tool.",
        ),
    ] = "tiny:janus",
    bench: Annotated[
        str,
        live_option("--bench", help_of=bench_help),
    ] = "mmie:sample",
    model_type: Annotated[
        str | None,
        typer.Option(
            "--model-type",
            help=f"Model family: {', '.join(_families.names())} (default: from config.json).",
        ),
    ] = None,
    data: DataOpt = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help="Run only the first N samples of each benchmark."),
    ] = None,
    scorers: Annotated[
        str,
        live_option("--scorers", help_of=protocol_help("offline", lead="Comma list of: ")),
    ] = "structure",
    protocol: Annotated[
        str | None,
        live_option("--protocol", help_of=protocol_help("judge", lead="Judge protocol: ")),
    ] = None,
    protocol_file: ProtocolFileOpt = None,
    allow_unofficial: AllowUnofficialOpt = False,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            file_okay=False,
            help="Run folder (default runs/<model>__<bench>; rerun to resume).",
        ),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str | None, typer.Option("--dtype", help="e.g. bfloat16.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 1,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1)] = 256,
    temperature: Annotated[
        float, typer.Option("--temperature", parser=number(0.0), help=">= 0 (0: greedy).")
    ] = 0.0,
    top_p: Annotated[
        float, typer.Option("--top-p", parser=number(0.0, above=True, high=1.0), help="In (0, 1].")
    ] = 1.0,
    cfg_scale: Annotated[
        float, typer.Option("--cfg-scale", parser=number(0.0), help="Image guidance, >= 0.")
    ] = 5.0,
    image_size: Annotated[int | None, typer.Option("--image-size", min=1)] = None,
    max_images: Annotated[int, typer.Option("--max-images", min=0)] = 3,
    max_image_tokens: Annotated[int | None, typer.Option("--max-image-tokens", min=1)] = None,
    seed: Annotated[int, typer.Option("--seed", min=0)] = 0,
    chat_base_url: Annotated[
        str | None, typer.Option("--chat-base-url", help="Pipeline: the chat model's endpoint.")
    ] = None,
    image_generator: Annotated[
        str | None,
        typer.Option("--image-generator", help="Pipeline: openai:MODEL or diffusers:PATH."),
    ] = None,
    image_base_url: Annotated[
        str | None, typer.Option("--image-base-url", help="Pipeline: Images API endpoint.")
    ] = None,
    templates: Annotated[
        Path | None,
        typer.Option(
            "--templates",
            exists=True,
            dir_okay=False,
            help="JSON {bench: {category: instruction}}.",
        ),
    ] = None,
    fail_fast: Annotated[
        bool, typer.Option("--fail-fast", help="Stop at the first failed generation.")
    ] = False,
    report: Annotated[bool, typer.Option("--report/--no-report")] = True,
    as_json: JsonOpt = False,
    judge: JudgeSpec | None = None,
) -> None:
    """Generate interleaved answers with a model, score them, and write a report (resumable).
    Several benchmarks (--bench mmie:sample,isg:sample) run one after another, one run folder
    each: <out>/<bench> with --out, else the default folder of each."""
    judge = judge or JudgeSpec()
    benches = [b.strip() for b in bench.split(",") if b.strip()]
    if len(benches) > 1:
        return _eval_each(dict(locals()), benches)
    from ..benchmarks import DataError
    from ..judges.client import JudgeUnavailable
    from ..models.base import GenerationSettings, ModelError
    from ..protocols import protocol_names
    from ..runner import EvalConfig, GenerationFailed, Hooks, run_eval
    from ..runs import RunFolderError
    from ..scorers.protocol_files import ProtocolError
    from ..scoring import ScoreError

    names = [s.strip() for s in scorers.split(",") if s.strip()]
    offline = protocol_names("offline")
    bad = [n for n in names if n not in offline]
    if bad:
        raise fail(
            f"unknown offline scorer(s) {', '.join(bad)}; choose from "
            f"{', '.join(offline)} (judges go in --protocol)",
            2,
        )
    if protocol is not None:
        check_protocol(protocol, "judge")
        names.append(protocol)
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise fail(f"--device {device!r}: expected auto, cpu, cuda or cuda:N", 2)
    _check_cuda(device)
    if dtype is not None and dtype.removeprefix("torch.") not in _DTYPES:
        raise fail(f"--dtype {dtype!r}: expected one of {', '.join(_DTYPES)}", 2)
    _check_model_type(model_type)
    _check_templates(templates)
    out_dir = out_dir or _default_out(model, bench)
    settings = GenerationSettings(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        cfg_scale=cfg_scale,
        image_size=image_size,
        max_images=max_images,
        max_image_tokens=max_image_tokens,
        seed=seed,
        batch_size=batch_size,
    )
    cfg = EvalConfig(
        model=model,
        bench=bench,
        out=out_dir,
        model_type=model_type,
        data=data,
        limit=limit,
        scorers=names,
        settings=settings,
        device=device,
        dtype=dtype,
        templates=templates,
        pipeline=PipelineSpec(
            chat_base_url=chat_base_url,
            image_generator=image_generator,
            image_base_url=image_base_url,
            api_key_env=judge.judge_key_env,
        ),
        fail_fast=fail_fast,
        report=report,
        judge=judge,
        protocol_file=protocol_file,
        allow_unofficial=allow_unofficial,
    )
    counts = {"invalid": 0, "error": 0, "gen_errors": 0}
    engines: dict[int, object] = {}  # the judges that answered, for the summary at the end
    with progress(as_json) as bar:
        gen = bar.add_task("", total=None, label="generating")
        jud = bar.add_task("", total=None, label="judging   ")

        def on_start(n_gen: int, n_judge: int) -> None:
            from ..report.run import problem_lines  # the loader's, recorded by the runner

            for line in problem_lines(out_dir):
                err.print(line, markup=False, highlight=False)
            bar.update(gen, total=n_gen)
            bar.update(jud, total=n_judge)

        def on_generated(p) -> None:
            counts["gen_errors"] += bool(p.error)
            bar.update(gen, advance=1, description=f"errors {counts['gen_errors']}")

        def on_judged(j, engine) -> None:
            if engine is not None:
                engines[id(engine)] = engine
            bar.update(jud, advance=1, description=judging_status(counts, j, engine))

        try:
            results = run_eval(cfg, Hooks(on_start, on_generated, on_judged))
        except KeyboardInterrupt:
            err.print(
                f"interrupted: everything finished so far is saved in {out_dir}; rerun the "
                "same command to resume",
                markup=False,
                soft_wrap=True,
            )
            raise typer.Exit(130) from None
        except (
            DataError,
            ModelError,
            RunFolderError,
            ProtocolError,
            ScoreError,
            JudgeUnavailable,
            GenerationFailed,
            TimeoutError,
        ) as e:
            raise fail(str(e)) from None
    causes, _ = not_scored_total(results)
    if as_json:
        print_json(
            {
                "out": str(out_dir),
                "results": [r.to_dict() for r in results],
                "generation_errors": counts["gen_errors"],
                "complete": not causes,
                "not_scored": causes,
            }
        )
        return finish_run(results)
    for r in results:
        print_result(r)
    if engines:
        stats = [e.stats.to_dict() for e in engines.values()]  # type: ignore[attr-defined]
        err.print(judge_line({k: sum(s[k] for s in stats) for k in stats[0]}), markup=False)
    report_path = out_dir / "report.html"
    out.print(
        f"run folder: {out_dir}" + (f"   report: {report_path}" if report_path.exists() else ""),
        markup=False,
    )
    finish_run(results)  # exit 3 with a one-line banner when items were not scored


def _eval_each(args: dict, benches: list[str]) -> None:
    """Run ``eval`` once per benchmark of a comma list; ``--out`` becomes their parent folder."""
    judge, parent = args.pop("judge"), args.pop("out_dir")
    args = {k: v for k, v in args.items() if k not in ("bench", "benches")}
    worst = 0  # every benchmark runs; the command exits with the worst code (3 incomplete, 1)
    for b in benches:
        out_dir = None if parent is None else parent / b.replace(":", "_")
        if not args["as_json"]:
            out.print(f"== {b}", markup=False)
        try:
            eval_cmd(**args, bench=b, out_dir=out_dir, **judge.model_dump())
        except typer.Exit as e:
            worst = max(worst, e.exit_code)
        except Exception as e:  # one benchmark's error, reported as the root handler would
            if debugging():
                raise
            message, code, _ = describe_error(e)
            print_error(f"{b}: {message}")
            worst = max(worst, code)
    if worst:
        raise typer.Exit(worst)


def report_cmd(
    run: Annotated[
        Path, typer.Argument(exists=True, file_okay=False, help="A run folder made by ibench eval.")
    ],
    to: Annotated[
        Path | None, typer.Option("--out", dir_okay=False, help="Where to write the page.")
    ] = None,
) -> None:
    """(Re)write the self-contained HTML report of a run folder."""
    from ..report.html import write_report

    if not (run / "manifest.json").exists():
        raise fail(f"{run}: not a run folder (no manifest.json)")
    out.print(f"report: {write_report(run, to)}", markup=False)
