"""The run report: one self-contained HTML page of scores, charts and every sample's input, output,
gold answer and judgments.

Every untrusted string (model output, questions, judge replies, category names, model ids,
manifest values) passes through ``esc``; data for the script travels in a JSON block whose ``<``,
``>`` and ``&`` are escaped, so no string can close the block or open a tag. The page shows all
content with JavaScript off; the script only filters and sorts.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from .. import __version__
from ..types import ImageRef, Interleaved, Judgment, Prediction, Result, Sample
from .assets import CSS, JS, content_security_policy
from .run import ImageLoader, load_run, readable_mode, run_image_loader
from .svg import category_chart, fmt_num

STATUSES = ("ok", "invalid", "error", "none")
MAX_NOTES = 30


def esc(value: Any) -> str:
    """Escape anything for HTML text or a quoted attribute value."""
    return escape("" if value is None else str(value), quote=True)


def json_for_script(data: Any) -> str:
    """JSON that is inert inside ``<script type="application/json">``: ``</script>``, ``<!--``
    and entities cannot appear, whatever the strings hold."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


class _Images:
    """Memoised thumbnails: an image shown in several cards is encoded once."""

    def __init__(self, loader: ImageLoader) -> None:
        self.loader = loader
        self.cache: dict[ImageRef, tuple[str | None, str]] = {}

    def get(self, ref: ImageRef) -> tuple[str | None, str]:
        if ref not in self.cache:
            try:
                url = self.loader(ref)
                ok = isinstance(url, str) and url.startswith("data:image/")
                self.cache[ref] = (url, "") if ok else (None, "the loader gave no data URL")
            except Exception as e:  # any unusable image becomes a labelled placeholder
                self.cache[ref] = (None, str(e) or type(e).__name__)
        return self.cache[ref]


def _segments(seq: Interleaved, images: _Images, label: str) -> str:
    parts: list[str] = []
    n_img = 0
    for seg in seq:
        if seg.text is not None:
            parts.append(f'<div class="seg-text">{esc(seg.text)}</div>')
        elif seg.image is not None:
            n_img += 1
            name = seg.image.source or seg.image.path or seg.image.sha256 or ""
            url, why = (None, "marked missing") if seg.image.missing else images.get(seg.image)
            alt = f"{label} image {n_img}"
            if url is None:
                parts.append(
                    f'<div class="missing" role="img" aria-label="{esc(alt)}: missing">'
                    f"<span>image missing: {esc(alt)}<br><small>{esc(why)}</small></span></div>"
                )
            else:
                parts.append(
                    f'<figure><img src="{esc(url)}" alt="{esc(alt)}" loading="lazy">'
                    f"<figcaption>{esc(os.path.basename(name) or alt)}</figcaption></figure>"
                )
    return "".join(parts) or '<p class="muted">(empty)</p>'


def _badge(status: str, text: str) -> str:
    cls = status if status in STATUSES else "none"
    return f'<span class="badge st-{cls}">{esc(text)}</span>'


def _judgment_rows(js: Sequence[Judgment]) -> str:
    if not js:
        return '<p class="muted">No judgment recorded.</p>'
    rows = []
    raws = []
    for j in js:
        aspects = ", ".join(f"{k}={fmt_num(v)}" for k, v in j.scores.items())
        rows.append(
            f"<tr><td>{esc(j.scorer)}</td><td>{_badge(j.status, j.status)}</td>"
            f'<td class="num">{esc(fmt_num(j.overall))}</td><td>{esc(aspects)}</td>'
            f"<td>{esc(j.reason or '')}</td>"
            f'<td class="num">{esc(fmt_num(j.cost, 5) if j.cost is not None else "")}</td></tr>'
        )
        if j.raw:
            raws.append(
                f"<details><summary>Raw judge reply: {esc(j.scorer)}</summary>"
                f"<pre>{esc(j.raw)}</pre></details>"
            )
    head = (
        "<tr><th>Scorer</th><th>Status</th><th>Overall</th><th>Aspects</th>"
        "<th>Reason</th><th>Cost</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>{''.join(raws)}"


def _card(
    idx: int,
    sid: str,
    sample: Sample | None,
    preds: Sequence[Prediction],
    js: Sequence[Judgment],
    images: _Images,
) -> str:
    cat = sample.category if sample else None
    task = sample.task if sample and sample.task and sample.task != cat else None
    head = [f'<h3><a href="#s{idx}">#{idx + 1}</a> <code>{esc(sid)}</code></h3>']
    if cat is not None:
        head.append(f'<span class="badge st-none">category: {esc(cat)}</span>')
    if task is not None:
        head.append(f'<span class="badge st-none">task: {esc(task)}</span>')
    for j in js:
        shown = fmt_num(j.overall) if j.status == "ok" else j.status
        head.append(_badge(j.status, f"{j.scorer}: {shown}"))
    cols = []
    if sample is not None:
        cols.append(f"<section><h4>Input</h4>{_segments(sample.input, images, 'input')}</section>")
    else:
        cols.append('<section><h4>Input</h4><p class="muted">Sample not recorded.</p></section>')
    for p in preds or [None]:
        if p is None:
            cols.append('<section><h4>Output</h4><p class="muted">No prediction.</p></section>')
            continue
        err = f'<p class="perr">generation error: {esc(p.error)}</p>' if p.error else ""
        out = _segments(p.output, images, "output") if len(p.output) or not p.error else ""
        cols.append(f"<section><h4>Output · {esc(p.model)}</h4>{err}{out}</section>")
    if sample is not None and sample.gold is not None:
        cols.append(f"<section><h4>Gold</h4>{_segments(sample.gold, images, 'gold')}</section>")
    return (
        f'<article class="card" id="s{idx}" data-idx="{idx}"><header>{"".join(head)}</header>'
        f'<div class="cols">{"".join(cols)}</div><section><h4>Judgments</h4>'
        f"{_judgment_rows(js)}</section></article>"
    )


PART_KEYS = (("criteria", "Criterion"), ("aspects", "Aspect"))
"""Per-part means a protocol's result carries (OpenING's 7 criteria, InterleavedEval's 5
aspects), in ``metadata`` for the whole run and in each ``by_category`` entry."""


def _parts_of(r: Result) -> tuple[str, str, dict[str, Any]] | None:
    """(metadata key, column label, {part: mean}) of the result's per-part means, if any."""
    for key, label in PART_KEYS:
        parts = r.metadata.get(key)
        if isinstance(parts, Mapping) and parts:
            return key, label, dict(parts)
    return None


def _parts_table(r: Result) -> str:
    found = _parts_of(r)
    if found is None:
        return ""
    _, label, parts = found
    rows = "".join(
        f'<tr><td>{esc(k)}</td><td class="num">{esc(fmt_num(v))}</td></tr>'
        for k, v in parts.items()
    )
    return (
        f'<table class="parts"><tr><th>{esc(label)}</th><th>Mean ({esc(r.scale or "?")})</th>'
        f"</tr>{rows}</table>"
    )


def _result_section(r: Result) -> str:
    ci = r.intervals.get("overall")
    overall = fmt_num(r.overall) + (f" [{fmt_num(ci[0])}, {fmt_num(ci[1])}]" if ci else "")
    if r.overall_percent is not None:
        overall += f" ({fmt_num(r.overall_percent, 2)}%)"
    comp = '<span class="yes">yes</span>' if r.comparable else '<span class="no">no</span>'
    c = r.counts
    reasons = "; ".join(f"{k}: {v}" for k, v in r.invalid_reasons.items()) or "none"
    info = [
        ("Benchmark", esc(r.benchmark)),
        ("Protocol", esc(r.protocol)),
        ("Judge", esc(r.judge or "none (offline scorer)")),
        ("Scale", esc(r.scale or "unspecified")),
        ("Overall (95% CI)", f"<strong>{esc(overall)}</strong>"),
        (
            "Judgments",
            esc(
                f"{c.get('valid', 0)} valid · {c.get('invalid', 0)} invalid · "
                f"{c.get('error', 0)} error · {c.get('total', 0)} total"
            ),
        ),
        ("Invalid/error reasons", esc(reasons)),
        ("Leaderboard-comparable", comp),
    ]
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in info)
    cats = ""
    found = _parts_of(r)
    part_key, part_names = (found[0], list(found[2])) if found else ("", [])
    if r.by_category:
        from ..frames import category_rows  # the rows `read_run(...).results_frame()` gives

        rows = []
        for c in category_rows(r):
            name = c["category"]
            e = r.by_category.get(name)
            e = e if isinstance(e, Mapping) else {}
            has_ci = c["low"] is not None and c["high"] is not None
            ci_s = f"[{fmt_num(c['low'])}, {fmt_num(c['high'])}]" if has_ci else ""
            per = e.get(part_key) if part_key else None
            per = per if isinstance(per, Mapping) else {}
            extra = "".join(f'<td class="num">{esc(fmt_num(per.get(k)))}</td>' for k in part_names)
            n = "" if c["n"] is None else c["n"]
            rows.append(
                f'<tr><td>{esc(name)}</td><td class="num">{esc(fmt_num(c["mean"]))}</td>'
                f'<td class="num">{esc(n)}</td><td>{esc(ci_s)}</td>{extra}</tr>'
            )
        heads = "".join(f"<th>{esc(k)}</th>" for k in part_names)
        cats = (
            "<table><tr><th>Category</th><th>Mean</th><th>n</th><th>95% CI</th>"
            f"{heads}</tr>{''.join(rows)}</table>{category_chart(r)}"
        )
    return (
        f'<div class="result"><h3>{esc(r.scorer)}</h3><table>{table}</table>'
        f"{_parts_table(r)}{cats}</div>"
    )


def _manifest(manifest: Mapping[str, Any]) -> str:
    if not manifest:
        return '<p class="muted">No manifest.json.</p>'
    rows = []
    for k, v in manifest.items():
        shown = v if isinstance(v, str) else json.dumps(v, indent=1, ensure_ascii=False)
        cell = f"<pre>{esc(shown)}</pre>" if "\n" in shown else esc(shown)
        rows.append(f"<tr><th>{esc(k)}</th><td>{cell}</td></tr>")
    return f"<details open><summary>manifest.json</summary><table>{''.join(rows)}</table></details>"


def _controls(categories: Sequence[str], has_uncategorised: bool, scorers: Sequence[str]) -> str:
    def opts(pairs: Iterable[tuple[str, str]]) -> str:
        return "".join(f'<option value="{esc(v)}">{esc(t)}</option>' for v, t in pairs)

    cat_opts = [("", "all"), *((str(i), c) for i, c in enumerate(categories))]
    if has_uncategorised:
        cat_opts.append(("none", "(no category)"))
    status_opts = [("", "any"), *((s, s if s != "none" else "no judgment") for s in STATUSES)]
    scorer_opts = [("", "all scorers"), *((s, s) for s in scorers)]
    sort_opts = [
        ("orig", "original order"),
        ("desc", "score, high first"),
        ("asc", "score, low first"),
    ]
    return (
        '<div id="ib-controls" hidden>'
        f'<label>Category <select id="ib-cat">{opts(cat_opts)}</select></label>'
        f'<label>Status <select id="ib-status">{opts(status_opts)}</select></label>'
        f'<label>Scorer <select id="ib-scorer">{opts(scorer_opts)}</select></label>'
        f'<label>Sort <select id="ib-sort">{opts(sort_opts)}</select></label>'
        '<label>Search <input id="ib-q" type="search" placeholder="text in sample"></label>'
        '<span id="ib-count" class="muted"></span></div>'
    )


def _data_problems(problems: Sequence[str]) -> str:
    """The loader's problems (refused paths, duplicate ids): rows the results do not include."""
    if not problems:
        return ""
    shown = [esc(p) for p in problems[:MAX_NOTES]]
    if len(problems) > MAX_NOTES:
        shown.append(f"… and {len(problems) - MAX_NOTES} more (all in problems.json)")
    return (
        f'<h2 id="data-problems">Data problems ({len(problems)})</h2><div class="notes">'
        "<p>Refused or skipped by the benchmark loader: a bad row or a duplicate id is left "
        "out of the results; a refused image is missing from its sample.</p><ul>"
        + "".join(f"<li>{p}</li>" for p in shown)
        + "</ul></div>"
    )


def render_report(
    samples: Sequence[Sample],
    predictions: Sequence[Prediction],
    judgments: Sequence[Judgment],
    results: Sequence[Result],
    manifest: Mapping[str, Any],
    *,
    image_loader: ImageLoader,
    notes: Sequence[str] = (),
    data_problems: Sequence[str] = (),
    title: str | None = None,
) -> str:
    """The whole page as a string. ``image_loader`` turns an ImageRef into a ``data:image/`` URL
    (or raises: the image then shows as a labelled placeholder); ``notes`` are read problems;
    ``data_problems`` are what the benchmark loader refused or skipped in the run's data."""
    images = _Images(image_loader)
    by_id = {s.id: s for s in samples}
    preds: dict[str, list[Prediction]] = {}
    for p in predictions:
        preds.setdefault(p.sample_id, []).append(p)
    judged: dict[str, dict[str, Judgment]] = {}
    for j in judgments:  # a resumed run may repeat a judgment: the last one wins
        judged.setdefault(j.sample_id, {})[j.scorer] = j
    ids = list(dict.fromkeys([*by_id, *preds, *judged]))
    scorers = list(dict.fromkeys([*(r.scorer for r in results), *(j.scorer for j in judgments)]))
    categories = sorted({s.category for s in samples if s.category is not None})
    uncategorised = any(by_id.get(i) is None or by_id[i].category is None for i in ids)

    cards, index = [], []
    for idx, sid in enumerate(ids):
        s = by_id.get(sid)
        js = list(judged.get(sid, {}).values())
        ps = preds.get(sid, [])
        cards.append(_card(idx, sid, s, ps, js, images))
        texts = [sid, s.category or "", s.task or "", s.input.text] if s else [sid]
        if s and s.gold is not None:
            texts.append(s.gold.text)
        texts += [t for p in ps for t in (p.model, p.output.text, p.error or "")]
        texts += [j.reason or "" for j in js]
        index.append(
            {
                "idx": idx,
                "category": s.category if s else None,
                "status": {j.scorer: j.status for j in js},
                "scores": {j.scorer: j.overall for j in js if j.overall is not None},
                "search": "\n".join(texts).lower(),
            }
        )
    models = list(dict.fromkeys(p.model for p in predictions))
    benches = list(
        dict.fromkeys([*(r.benchmark for r in results), *(s.benchmark for s in samples)])
    )
    heading = title or "interleave_bench report"
    sub = " · ".join(
        x
        for x in (
            f"benchmark: {', '.join(benches)}" if benches else "",
            f"model: {', '.join(models)}" if models else "",
            f"{len(ids)} samples",
        )
        if x
    )
    shown_notes = list(notes[:MAX_NOTES])
    if len(notes) > MAX_NOTES:
        shown_notes.append(f"… and {len(notes) - MAX_NOTES} more")
    notes_html = (
        '<div class="notes"><strong>Read problems</strong><ul>'
        + "".join(f"<li>{esc(n)}</li>" for n in shown_notes)
        + "</ul></div>"
        if shown_notes
        else ""
    )
    data_html = _data_problems(data_problems)
    summary = "".join(_result_section(r) for r in results) or (
        '<p class="muted">No aggregated results.</p>'
    )
    data = {"cards": index, "categories": categories, "scorers": scorers}
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(content_security_policy(JS))}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<meta name="generator" content="interleave_bench {esc(__version__)}">'
        f"<title>{esc(heading)}</title><style>{CSS}</style></head><body><main>"
        f'<h1>{esc(heading)}</h1><p class="muted">{esc(sub)}</p>{notes_html}'
        f"{data_html}<h2>Summary</h2>{summary}<h2>Run</h2>{_manifest(manifest)}"
        f"<h2>Samples</h2>{_controls(categories, uncategorised, scorers)}"
        f'<div id="ib-cards">{"".join(cards)}</div></main>'
        f'<script type="application/json" id="ib-data">{json_for_script(data)}</script>'
        f"<script>{JS}</script></body></html>\n"
    )


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Render ``run_dir`` into ``out`` (default ``run_dir/report.html``), written atomically so a
    reader never sees half a page."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "report.html"
    run = load_run(run_dir)
    page = render_report(
        run.samples,
        run.predictions,
        run.judgments,
        run.results,
        run.manifest,
        image_loader=run_image_loader(run_dir),
        notes=run.problems,
        data_problems=run.data_problems,
        title=f"interleave_bench report: {run_dir.name}",
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".report-", suffix=".tmp")
    try:
        os.fchmod(fd, readable_mode())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
