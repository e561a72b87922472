"""``ibench leaderboard build``: a static site, one page per benchmark plus an index.

Each page holds one sortable table per board table (the order without JavaScript is overall, high
first) whose rows are ranked (comparable, full set, published or verified), then a table of the
other rows of that board table, unranked, under its own heading; an inline-SVG bar chart of the overall score with 95% whiskers where a row carries an
interval, and links to sample reports. Every string from a board file is escaped; the CSP is the
report's (no network, the one hashed script); a report file is copied only when it opens with the
exact head our renderer writes, so its own CSP stops any script added after it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .. import __version__
from ..report.assets import JS as REPORT_JS
from ..report.assets import content_security_policy
from ..report.html import esc
from ..report.svg import bar_chart, fmt_num
from .schema import Board, safe_url
from .show import OTHER_TITLE, Section, is_ranked, row_status, sections
from .site_assets import CSS, JS
from .store import board_names, load_board, submissions_dir

MAX_REPORT_BYTES = 256 * 1024**2


def _head(title: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(content_security_policy(JS))}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<meta name="generator" content="interleave_bench {esc(__version__)}">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
    )


def _page(title: str, body: str) -> str:
    return f"{_head(title)}{body}</main><script>{JS}</script></body></html>\n"


def _report_prefix() -> bytes:
    """How every page our report renderer writes begins (see report.html.render_report)."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" '
        f'content="{esc(content_security_policy(REPORT_JS))}">'
    ).encode()


def overall_chart(rows: list[dict[str, Any]], scale: str, label: str, width: int = 900) -> str:
    """Horizontal bars of the overall score, one per row, with the interval as a whisker
    (non-comparable rows drawn in their own colour)."""
    bars = []
    for r in rows:
        if not isinstance(r.get("overall"), (int, float)):
            continue
        m = float(r["overall"])
        ci = (r.get("ci") or {}).get("overall")
        shown = fmt_num(m, 2) + (f" [{fmt_num(ci[0], 2)}, {fmt_num(ci[1], 2)}]" if ci else "")
        bars.append((str(r["model"]), m, ci, shown, "bar" if r["comparable"] else "bar nc"))
    return bar_chart(
        bars,
        scale=scale,
        title=f"{label} by model",
        width=width,
        label_w=240,
        value_w=140,
        bar_h=16,
        gap=5,
        max_label=34,
    )


def _th(key: str, label: str, kind: str) -> str:
    return (
        f'<th data-key="{esc(key)}" data-type="{kind}"><button type="button">{esc(label)}'
        "</button></th>"
    )


def _num_td(v: Any) -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return '<td class="num" data-v="">–</td>'
    return f'<td class="num" data-v="{esc(repr(float(v)))}">{esc(fmt_num(v, 2))}</td>'


def _model_td(row: dict[str, Any], report_href: str | None) -> str:
    bits = [esc(row["model"])]
    if row.get("subset"):
        bits.append(f' <span class="badge st-none">subset: {esc(row["subset"])}</span>')
    if row["provenance"] != "published":
        bits.append(f' <span class="badge st-none">{esc(row["provenance"])}</span>')
    if report_href:
        bits.append(f' <a href="{esc(report_href)}" rel="noopener noreferrer">samples</a>')
    return f'<td class="model" data-v="{esc(row["model"])}">{"".join(bits)}</td>'


def _status_td(row: dict[str, Any]) -> str:
    status = row_status(row)
    audit = row.get("audit") or {}
    title = (
        f"{audit.get('agreed')} of {audit.get('n')} re-judged items agree (seed "
        f"{audit.get('seed')}, judge {audit.get('judge_model')})"
        if status == "verified"
        else "not audited: its judgments are the submitter's own"
        if status == "self-reported"
        else ""
    )
    cls = {"verified": "yes", "self-reported": "no"}.get(status, "")
    return f'<td data-v="{esc(status)}" title="{esc(title)}" class="{cls}">{esc(status)}</td>'


def _table(board: Board, sec: Section, reports: dict[int, str]) -> str:
    rows = sec.rows
    head = [_th("rank", "#", "num"), _th("model", "Model", "text")]
    head += [_th(c.key, c.label, "num") for c in board.columns]
    head += [
        _th("overall", board.overall_label, "num"),
        "<th>95% CI</th>",
        _th("n", "n", "num"),
        _th("comparable", "Comparable", "text"),
        _th("status", "Status", "text"),
        _th("coverage", "Coverage %", "num"),
        _th("date", "Date", "text"),
        "<th>Source</th>",
    ]
    body = []
    for i, r in enumerate(rows):
        ci = (r.get("ci") or {}).get("overall")
        ci_s = f"[{fmt_num(ci[0], 2)}, {fmt_num(ci[1], 2)}]" if ci else "–"
        comp = "yes" if r["comparable"] else "no"
        source = esc(r["source"])
        if safe_url(r.get("source_url")):
            source = f'<a href="{esc(r["source_url"])}" rel="noopener noreferrer">{source}</a>'
        cells = [_num_td(sec.rank_of(r)), _model_td(r, reports.get(id(r)))]
        cells += [_num_td(r["scores"].get(c.key)) for c in board.columns]
        cells += [
            _num_td(r.get("overall")),
            f"<td>{esc(ci_s)}</td>",
            _num_td(r.get("n")),
            f'<td data-v="{comp}" title="{esc(r.get("note") or "")}" class="{comp}">{comp}</td>',
            _status_td(r),
            _num_td(r.get("coverage")),
            f'<td class="date" data-v="{esc(r["date"])}">{esc(r["date"])}</td>',
            f"<td>{source}</td>",
        ]
        body.append(f'<tr data-i="{i}">{"".join(cells)}</tr>')
    return (
        f'<table class="lb" id="t-{esc(sec.key)}"><thead><tr>{"".join(head)}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _copy_report(root: Path, out: Path, bench: str, row: dict[str, Any], warnings: list[str]):
    """The href of the row's report inside the site (copied when local and safe), or None."""
    report = row.get("report")
    if not report:
        return None
    if safe_url(report):
        return report
    src = submissions_dir(root) / bench / report
    if src.is_symlink() or not src.is_file() or src.stat().st_size > MAX_REPORT_BYTES:
        warnings.append(f"{src}: report missing, a link or too large; not linked")
        return None
    with open(src, "rb") as f:
        if f.read(len(_report_prefix())) != _report_prefix():
            warnings.append(f"{src}: not a report written by interleave_bench; not linked")
            return None
    dest = out / "reports" / bench / report
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return f"reports/{quote(bench)}/{quote(report)}"


def board_page(board: Board, root: Path, out: Path, warnings: list[str]) -> str:
    off = board.official
    hashes = off.get("prompt_sha256") or {}
    info = [
        ("Official protocol", off.get("protocol")),
        ("Judge", off.get("judge")),
        ("Scale", off.get("scale")),
        ("Prompt source", off.get("prompt_source")),
        (
            "Pinned prompt SHA-256",
            ", ".join(f"{k}: {v[:12]}…" for k, v in hashes.items()) or "none",
        ),
    ]
    parts = [
        '<nav><a href="index.html">All leaderboards</a></nav>',
        f"<h1>{esc(board.title)} leaderboard</h1><p>{esc(board.description)}</p>",
        '<div class="result"><table>'
        + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v or '–')}</td></tr>" for k, v in info)
        + '</table><p class="legend">Comparable: judged with the official protocol, judge and '
        "prompts on the whole benchmark. Grey bars are not comparable. Intervals are 95% "
        "bootstrap intervals, shown only where per-sample judgments were checked. Status of a "
        "submission: verified (a seeded-random sample re-judged with the same judge agreed) or "
        "self-reported (not audited). Coverage: percent of the samples validly judged; "
        f"under {board.min_coverage:g}% a row is not comparable. Ranked (#): comparable rows "
        "on the full benchmark, published or verified; every other row is listed under "
        f"&quot;{esc(OTHER_TITLE)}&quot;.</p></div>",
    ]
    for sec in sections(board):
        rows = sec.rows
        reports = {
            id(r): h for r in rows if (h := _copy_report(root, out, board.benchmark, r, warnings))
        }
        scale = rows[0]["scale"]
        parts.append(
            f'<h2 id="h-{esc(sec.key)}">{esc(sec.title(board))}</h2>'
            f"{_table(board, sec, reports)}{overall_chart(rows, scale, board.overall_label)}"
        )
    return _page(f"{board.title} leaderboard", "".join(parts))


def index_page(boards: list[Board]) -> str:
    items = []
    for b in boards:
        comparable = [r for r in b.rows if is_ranked(b, r) and r.get("overall") is not None]
        best = max(comparable, key=lambda r: r["overall"], default=None)
        top = f"{best['model']} ({fmt_num(best['overall'], 2)})" if best else "–"
        items.append(
            f'<tr><td><a href="{esc(quote(b.benchmark))}.html">{esc(b.title)}</a></td>'
            f'<td class="num">{len(b.rows)}</td><td class="num">{len(comparable)}</td>'
            f"<td>{esc(top)}</td></tr>"
        )
    body = (
        "<h1>interleave_bench leaderboards</h1><p>Published results with their provenance and "
        "submissions whose per-sample judgments recompute to their claims. Ranked and best: "
        "comparable rows on the full benchmark, published or verified (self-reported, partial "
        "and subset rows are listed on each page, unranked).</p>"
        "<table><tr><th>Benchmark</th><th>Rows</th><th>Ranked</th>"
        f"<th>Best ranked</th></tr>{''.join(items)}</table>"
    )
    return _page("interleave_bench leaderboards", body)


def build_site(root: Path, out: Path) -> tuple[list[Path], list[str]]:
    """Write ``index.html`` and ``<bench>.html`` for every board under ``root`` into ``out``;
    returns (written pages, warnings about skipped submission or report files)."""
    out.mkdir(parents=True, exist_ok=True)
    boards = [load_board(name, root) for name in board_names(root)]
    warnings = [p for b in boards for p in b.problems]
    written = []
    for b in boards:
        path = out / f"{b.benchmark}.html"
        _write(path, board_page(b, root, out, warnings))
        written.append(path)
    _write(out / "index.html", index_page(boards))
    return [out / "index.html", *written], warnings


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
