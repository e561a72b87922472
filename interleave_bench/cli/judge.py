"""``ibench judge``: how far a judge can be trusted, measured before its numbers are.

``agreement`` compares a judge with a reference (people, or another judge) on the same items,
``position-bias`` reads a ``--swap`` run, ``consistency`` re-judges a run's items several times.
Exit codes: 0 done; 1 bad data or nothing usable (one ``error:`` line names the file, row and
field); 2 usage; 3 consistency left items without a verdict (budget, judge errors)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ..config import JudgeSpec
from .errors import EXIT_CODES, INCOMPLETE, fail, incomplete_line
from .options import DataOpt, JsonOpt, judge_options
from .output import err, num, out, print_json, progress, usd

judge_app = typer.Typer(
    help="Check a judge before trusting it: agreement, position bias, self-consistency.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
)

FORMATS = ("opening-pairwise", "judgments")
ResamplesOpt = Annotated[
    int, typer.Option("--resamples", min=0, help="Bootstrap resamples for the intervals.")
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the bootstrap resampling.")]
HtmlOpt = Annotated[
    Path | None,
    typer.Option("--html", dir_okay=False, help="Also write the result as an HTML page here."),
]


def _check_html(path: Path | None) -> None:
    """Refuse an --html path whose folder is missing before any work (or any judge call)."""
    if path is not None and not path.parent.is_dir():
        raise fail(f"--html {path}: no folder {path.parent}; create it or choose another", 2)


def _write_html(path: Path | None, text: str) -> None:
    if path is not None:
        path.write_text(text, encoding="utf-8")
        err.print(f"html: {path}", markup=False, highlight=False)


def _ci(ci: Any) -> str:
    return "-" if not ci else f"[{num(ci[0])}, {num(ci[1])}]"


def _stats_table(title: str, stats: dict[str, Any]) -> Table:
    t = Table(title=title)
    t.add_column("statistic")
    t.add_column("value", justify="right")
    t.add_column("95% CI", justify="right")
    for name, v in stats.items():
        t.add_row(name, num(v["value"]), _ci(v["ci"]))
    return t


# --------------------------------------------------------------------------- agreement


@judge_app.command("agreement")
def agreement_cmd(
    reference: Annotated[
        Path,
        typer.Option(
            "--reference", exists=True, help="The verdicts trusted (people's, or a judge's)."
        ),
    ],
    candidate: Annotated[
        Path, typer.Option("--candidate", exists=True, help="The judge's verdicts to check.")
    ],
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="opening-pairwise: OpenING arena files (*_modelAB_results.json); judgments: "
            "two judgments.jsonl files (or run folders) of ibench.",
        ),
    ],
    unseen: Annotated[
        str | None,
        typer.Option(
            "--unseen",
            help="opening-pairwise: comma-separated model names counted as unseen (default: the "
            "official list anole, GPT-4+DALL-E3, SEED-LLaMA, NExT-GPT).",
        ),
    ] = None,
    scorer: Annotated[
        str | None,
        typer.Option(
            "--scorer", help="judgments: the scorer to compare in a file that holds several."
        ),
    ] = None,
    resamples: ResamplesOpt = 1000,
    seed: SeedOpt = 0,
    html: HtmlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Agreement of a judge with a reference on the same items."""
    from ..benchmarks.problems import DataError
    from ..judges.agreement import judgments_agreement, read_judgments
    from ..judges.arena_agreement import OFFICIAL_UNSEEN, opening_agreement, read_arena
    from ..report.judge_page import judgments_page, opening_page

    _check_html(html)
    if fmt not in FORMATS:
        raise fail(f"--format must be one of {', '.join(FORMATS)}", 2)
    if unseen is not None and fmt != "opening-pairwise":
        raise fail("--unseen is for --format opening-pairwise", 2)
    names = OFFICIAL_UNSEEN if unseen is None else tuple(x.strip() for x in unseen.split(","))
    if unseen is not None and not all(names):
        raise fail("--unseen: an empty model name; give names separated by commas", 2)
    try:
        if fmt == "opening-pairwise":
            for p in (reference, candidate):
                if p.is_dir():
                    raise fail(f"{p}: a folder; --format opening-pairwise reads a JSON file", 2)
            result = opening_agreement(read_arena(reference), read_arena(candidate), names)
            if result["with_tie"]["n"] == 0:
                raise DataError(
                    f"{candidate}: nothing usable: no comparison (data_id, model_A.name, "
                    f"model_B.name) of {reference.name} is in it"
                )
            page = opening_page(result, reference.name, candidate.name)
        else:
            result = judgments_agreement(
                read_judgments(reference, scorer),
                read_judgments(candidate, scorer),
                resamples=resamples,
                seed=seed,
            )
            if result["n"] == 0:
                raise DataError(
                    f"{reference} and {candidate}: nothing usable: no item scored ok in both "
                    f"({result['excluded']})"
                )
            page = judgments_page(result, reference.name, candidate.name)
    except DataError as e:
        raise fail(str(e)) from None
    _write_html(html, page)
    if as_json:
        print_json(result)
    elif fmt == "opening-pairwise":
        _print_opening(result)
    else:
        out.print(_stats_table(f"agreement on {result['n']} items", result["statistics"]))
        out.print(f"not compared: {result['excluded']}", markup=False, highlight=False)


def _print_opening(r: dict[str, Any]) -> None:
    t = Table(title="agreement with the reference (%), OpenING reading")
    for c in ("reading", "all", "n", "unseen", "n", "seen", "n", "harm."):
        t.add_column(c, justify="left" if c == "reading" else "right")
    for w in ("force_divide_tie", "with_tie", "without_tie"):
        t.add_row(
            w,
            f"{r[w]['agreement']:.2f}",
            str(r[w]["n"]),
            f"{r['unseen'][w]['agreement']:.2f}",
            str(r["unseen"][w]["n"]),
            f"{r['seen'][w]['agreement']:.2f}",
            str(r["seen"][w]["n"]),
            f"{r['harmonic_mean'][w]:.2f}",
        )
    out.print(t)
    h = r["honest"]
    out.print(
        f"honest count: {h['matched']} comparisons in both, {h['reference_only']} only in the "
        f"reference, {h['candidate_only']} only in the candidate; duplicates/conflicts/key "
        f"collisions: reference {tuple(h['reference'].values())}, candidate "
        f"{tuple(h['candidate'].values())}",
        markup=False,
        highlight=False,
    )
    out.print(f"unseen: {', '.join(r['unseen_list'])}", markup=False, highlight=False)


# --------------------------------------------------------------------------- position bias


@judge_app.command("position-bias")
def position_bias_cmd(
    run: Annotated[
        Path,
        typer.Argument(
            exists=True, help="A run folder of `ibench score --swap`, or its judgments.jsonl."
        ),
    ],
    resamples: ResamplesOpt = 1000,
    seed: SeedOpt = 0,
    html: HtmlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """How often a pairwise judge's verdict flips when the two answers swap places."""
    from ..benchmarks.problems import DataError
    from ..judges.arena_agreement import position_bias
    from ..report.judge_page import position_page
    from ..runs import RunFolderError, read_jsonl
    from ..types import Judgment, SchemaError

    _check_html(html)
    path = run / "judgments.jsonl" if run.is_dir() else run
    try:
        if not path.is_file():
            raise DataError(f"{run}: no judgments.jsonl in it")
        records = []
        for i, rec in enumerate(read_jsonl(path), 1):
            try:
                records.append(Judgment.from_dict(rec, where=f"line {i}"))
            except SchemaError as e:
                raise DataError(f"{path}: {e}") from None
        latest = {(j.scorer, j.sample_id, j.metadata.get("swapped")): j for j in records}
        result = position_bias(list(latest.values()), resamples=resamples, seed=seed)
        if result["n"] == 0:
            raise DataError(f"{path}: nothing usable: no pair has a valid verdict in both orders")
    except (DataError, RunFolderError) as e:
        raise fail(str(e)) from None
    _write_html(html, position_page(result, str(run.name)))
    if as_json:
        print_json(result)
        return
    out.print(_stats_table(f"position bias on {result['n']} pairs", result["statistics"]))
    out.print(f"not compared: {result['excluded']}", markup=False, highlight=False)


# --------------------------------------------------------------------------- consistency


@judge_app.command("consistency")
@judge_options
def consistency_cmd(
    run: Annotated[
        Path, typer.Argument(exists=True, file_okay=False, help="A run folder of `ibench score`.")
    ],
    repeats: Annotated[int, typer.Option("--repeats", min=2, help="Times each item is re-judged.")],
    sample: Annotated[int, typer.Option("--sample", min=1, help="Items re-judged.")],
    seed: Annotated[
        int,
        typer.Option(
            "--seed", help="Picks the items; repeat k sends request seed SEED+k (recorded)."
        ),
    ] = 1,
    predictions: Annotated[
        Path | None,
        typer.Option("--predictions", exists=True, help="Where the run's predictions are now."),
    ] = None,
    data: DataOpt = None,
    estimate: Annotated[
        bool,
        typer.Option("--estimate", help="Print the requests and cost range; send nothing."),
    ] = False,
    html: HtmlOpt = None,
    as_json: JsonOpt = False,
    judge: JudgeSpec | None = None,
) -> None:
    """Re-judge a sample of a run's items several times (no cache) and measure the spread.
    The judge is the run's own unless --judge-model or --judge-local names another."""
    from ..benchmarks.problems import DataError
    from ..judges.client import JudgeUnavailable
    from ..judges.consistency import ConsistencyConfig, run_consistency
    from ..judges.consistency import estimate as estimate_of
    from ..report.judge_page import consistency_page
    from ..scorers.protocol_files import ProtocolError
    from ..scoring import ScoreError

    _check_html(html)
    cfg = ConsistencyConfig(run, repeats, sample, seed, judge, predictions, data)
    known = (DataError, ProtocolError, ScoreError, JudgeUnavailable)
    if estimate:
        try:
            est = estimate_of(cfg)
        except known as e:
            raise fail(str(e)) from None
        if as_json:
            print_json(est)
            return
        out.print(
            f"{est['items']} items x {est['repeats']} repeats: {est['requests']} requests, "
            f"~{est['prompt_tokens']:,} input tokens, cost {usd(est['cost_input'])} (input) to "
            f"{usd(est['cost_max'])} (every reply at max_tokens); judge {est['judge']}",
            markup=False,
            highlight=False,
        )
        if not est["priced"]:
            err.print(f"{est['judge']} is not in the price table: pass --price-table", markup=False)
        return
    with progress(as_json, "re-judging") as bar:
        task = bar.add_task("", total=repeats * sample)
        try:
            result = run_consistency(cfg, lambda j: bar.update(task, advance=1))
        except known as e:
            raise fail(str(e)) from None
    _write_html(html, consistency_page(result))
    if as_json:
        print_json(result)
    else:
        _print_consistency(result)
    causes = result["not_scored"]
    if causes:
        total = result["repeats"] * len(result["items"])
        err.print(incomplete_line(causes, total), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(INCOMPLETE)


def _print_consistency(r: dict[str, Any]) -> None:
    t = Table(title=escape(f"self-consistency ({r['repeats']} repeats, judge {r['judge']})"))
    t.add_column("sample")
    t.add_column("scores")
    t.add_column("variance", justify="right")
    for it in r["items"]:
        t.add_row(
            escape(it["sample_id"]), " ".join(num(s) for s in it["scores"]), num(it["variance"])
        )
    out.print(t)
    out.print(
        f"changed: {num(r['share_changed'])} of {r['n']} items; mean variance "
        f"{num(r['mean_variance'])}; seeds {r['seeds']}; judgments {r['counts']}; cost "
        f"{usd(r['judge_stats']['cost'])}",
        markup=False,
        highlight=False,
    )
