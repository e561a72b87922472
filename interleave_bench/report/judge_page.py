"""A small HTML page for the judge checks (agreement, position bias, consistency): tables and one
bar chart, one file that opens offline. Every string from the inputs (model names, sample ids,
file names) passes through ``esc``; the page has no script at all, and its Content-Security-Policy
allows none."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import __version__
from .assets import CSS
from .html import esc
from .svg import bar_chart, fmt_num

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

Row = Sequence[Any]


def _table(caption: str, head: Sequence[str], rows: Sequence[Row]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return f'<td class="num">{esc(fmt_num(v, 4))}</td>'
        return f"<td>{esc(v)}</td>"

    return (
        f"<table><caption>{esc(caption)}</caption><tr>"
        + "".join(f"<th>{esc(h)}</th>" for h in head)
        + "</tr>"
        + "".join("<tr>" + "".join(cell(v) for v in r) + "</tr>" for r in rows)
        + "</table>"
    )


def _ci(ci: Any) -> str:
    return "–" if not ci else f"[{fmt_num(ci[0], 4)}, {fmt_num(ci[1], 4)}]"


def page(
    title: str,
    subtitle: str,
    tables: Sequence[tuple[str, Sequence[str], Sequence[Row]]],
    bars: Sequence[tuple[str, float, Any]],
    scale: str,
    chart_title: str,
    notes: Sequence[str] = (),
) -> str:
    """The whole page: heading, notes, one chart of ``bars`` (label, value, [lo, hi] or None),
    then the tables."""
    chart = bar_chart(
        [
            (name, v, ci, fmt_num(v, 4) + ("" if not ci else f" {_ci(ci)}"), "bar")
            for name, v, ci in bars
        ],
        scale=scale,
        title=chart_title,
        width=720,
        label_w=220,
        value_w=170,
        bar_h=18,
        gap=6,
        max_label=32,
    )
    notes_html = "".join(f'<p class="muted">{esc(n)}</p>' for n in notes)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">'
        f'<meta name="generator" content="interleave_bench {esc(__version__)}">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
        f'<h1>{esc(title)}</h1><p class="muted">{esc(subtitle)}</p>{notes_html}'
        f'<div class="result">{chart}</div>'
        + "".join(_table(*t) for t in tables)
        + "</main></body></html>\n"
    )


# --------------------------------------------------------------------------- the three checks


def opening_page(result: dict[str, Any], reference: str, candidate: str) -> str:
    """OpenING arena agreement: the official table, the honest counts, a chart of the splits."""
    ways = ("force_divide_tie", "with_tie", "without_tie")
    rows = [
        (
            w,
            result[w]["agreement"],
            result[w]["n"],
            result["unseen"][w]["agreement"],
            result["unseen"][w]["n"],
            result["seen"][w]["agreement"],
            result["seen"][w]["n"],
            result["harmonic_mean"][w],
        )
        for w in ways
    ]
    head = ("reading", "agreement %", "n", "unseen %", "n", "seen %", "n", "harmonic %")
    honest = result["honest"]
    counts = [
        (k, v) for k, v in honest.items() if isinstance(v, int) and not isinstance(v, bool)
    ] + [(f"{side} {k}", v) for side in ("reference", "candidate") for k, v in honest[side].items()]
    ht = honest["table"]
    honest_rows = [(w, ht[w]["agreement"], ht[w]["n"]) for w in ways]
    return page(
        "Judge agreement: OpenING arena",
        f"reference: {reference} · candidate: {candidate}",
        [
            ("official reading (calculate_agreement.py)", head, rows),
            ("honest counts", ("what", "count"), counts),
            (
                "honest reading (comparisons kept by identity)",
                ("reading", "agreement %", "n"),
                honest_rows,
            ),
        ],
        [
            (
                f"{w} {part}",
                result[part][w]["agreement"] if part != "all" else result[w]["agreement"],
                None,
            )
            for w in ways
            for part in ("all", "unseen", "seen")
        ],
        "0-100",
        "agreement (%) by reading and split",
        [f"unseen models: {', '.join(result['unseen_list'])}"],
    )


def judgments_page(result: dict[str, Any], reference: str, candidate: str) -> str:
    stats = result["statistics"]
    rows = [(k, v["value"], _ci(v["ci"])) for k, v in stats.items()]
    excluded = list(result["excluded"].items())
    bars = [
        (k, v["value"], v["ci"])
        for k, v in stats.items()
        if k != "mean_abs_diff" and v["value"] is not None
    ]
    return page(
        "Judge agreement: judgments",
        f"reference: {reference} · candidate: {candidate} · {result['n']} items scored by both",
        [
            ("statistics (95% bootstrap interval)", ("statistic", "value", "95% CI"), rows),
            ("items not compared", ("why", "items"), excluded),
            ("score pairs", ("reference", "candidate", "items"), result["table"]),
        ],
        bars,
        "-1-1",
        "agreement statistics with 95% intervals",
    )


def position_page(result: dict[str, Any], source: str) -> str:
    stats = result["statistics"]
    rows = [(k, v["value"], _ci(v["ci"])) for k, v in stats.items()]
    bars = [(k, v["value"], v["ci"]) for k, v in stats.items() if v["value"] is not None]
    return page(
        "Judge position bias",
        f"{source} · {result['n']} pairs judged in both orders",
        [
            ("statistics (95% bootstrap interval)", ("statistic", "value", "95% CI"), rows),
            ("pairs not compared", ("why", "pairs"), list(result["excluded"].items())),
        ],
        bars,
        "0-1",
        "shares with 95% intervals",
    )


def consistency_page(result: dict[str, Any]) -> str:
    items = result["items"]
    rows = [
        (
            it["sample_id"],
            " ".join(fmt_num(s) for s in it["scores"]),
            it["original"] if it["original"] is not None else "–",
            it["variance"] if it["variance"] is not None else "–",
            {True: "yes", False: "no", None: "–"}[it["changed"]],
        )
        for it in items
    ]
    summary = [
        ("items with two valid scores or more", result["n"]),
        (
            "share of items whose score changed",
            result["share_changed"] if result["share_changed"] is not None else "–",
        ),
        ("mean variance", result["mean_variance"] if result["mean_variance"] is not None else "–"),
        ("seeds", " ".join(str(s) for s in result["seeds"])),
        *((f"judgments {k}", v) for k, v in result["counts"].items()),
    ]
    bars = [(it["sample_id"], it["variance"], None) for it in items if it["variance"] is not None]
    return page(
        "Judge self-consistency",
        f"{result.get('run', '')} · {result['repeats']} repeats · judge {result.get('judge', '')}",
        [
            ("summary", ("what", "value"), summary),
            ("items", ("sample", "scores by repeat", "run's score", "variance", "changed"), rows),
        ],
        bars,
        "",
        "score variance per item across repeats",
    )
