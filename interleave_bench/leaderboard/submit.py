"""``ibench leaderboard submit``: accept a run only when its per-sample evidence recomputes to
its claim, and list every problem otherwise.

Checks, in order, all of them run where their inputs exist: the files and their schema (and the
safety of the folder or archive); the benchmark and dataset revision; coverage of every sample id
of the benchmark (or of an explicit, labelled subset); no duplicate judgments; no judge or
generation errors; every score finite and inside the protocol's scale and equal to what the
protocol's parse rule reads from the raw reply; the claimed aggregate equal to the recomputed one;
protocol, judge and prompt-template hashes declared, and official ones for a comparable claim.
The samples come from our own loader, never from the submission.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..benchmarks import DataError, load_benchmark
from ..types import Judgment, Result, Sample
from . import intake
from .audit import AuditRequest, run_audit
from .intake import Limits, open_submission
from .runfiles import RunFiles, read_run, run_identity
from .schema import BoardError, clean_text, validate_row
from .specs import SPECS, BoardSpec
from .store import leaderboards_dir, load_board, write_submission

MAX_REPORT_SAMPLES = 1000
_SHOW = 5


@dataclass
class Outcome:
    ok: bool
    problems: list[str] = field(default_factory=list)
    row: dict[str, Any] | None = None
    written: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problems": self.problems,
            "row": self.row,
            "written": [str(p) for p in self.written],
            "notes": self.notes,
        }


def _ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_SHOW])
    return shown + (f" and {len(ids) - _SHOW} more" if len(ids) > _SHOW else "")


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(float(a) - float(b)) <= 1e-9


def compare_results(claimed: Result, recomputed: Result) -> list[str]:
    """Where the claimed aggregate differs from the one the judgments give."""
    out: list[str] = []
    for name in ("overall", "overall_percent"):
        mine = getattr(recomputed, name)
        if mine is None and name == "overall_percent":
            continue
        theirs = getattr(claimed, name)
        if not _close(theirs, mine):
            out.append(
                f"aggregate: results.json claims {name} {theirs} but the per-sample judgments "
                f"recompute to {mine}"
            )
    for key in ("valid", "invalid", "error", "total"):
        if claimed.counts.get(key) != recomputed.counts.get(key):
            out.append(
                f"aggregate: results.json claims counts.{key} {claimed.counts.get(key)} but the "
                f"judgments give {recomputed.counts.get(key)}"
            )
    for cat in sorted(set(claimed.by_category) | set(recomputed.by_category)):
        a, b = claimed.by_category.get(cat), recomputed.by_category.get(cat)
        if a is None or b is None:
            out.append(f"aggregate: category {cat!r} is {'missing' if a is None else 'extra'}")
            continue
        for k in ("mean", "n"):
            if not _close(a.get(k), b.get(k)):
                out.append(
                    f"aggregate: by_category[{cat!r}].{k} claimed {a.get(k)}, recomputed {b.get(k)}"
                )
    aspects_a, aspects_b = claimed.metadata.get("aspects"), recomputed.metadata.get("aspects")
    if isinstance(aspects_b, dict):
        for k, v in aspects_b.items():
            mine = aspects_a.get(k) if isinstance(aspects_a, dict) else None
            if not _close(mine, v):
                out.append(f"aggregate: aspect {k} claimed {mine}, recomputed {v}")
    return out


def _coverage(
    spec: BoardSpec, ident: dict[str, Any], subset: str | None, data: Path | None
) -> tuple[list[Sample] | None, list[str], str | None]:
    """The trusted samples the run must cover, problems, and the subset label."""
    bench = ident["bench"]
    if bench is None:
        return None, ["manifest.json: no benchmark recorded (identity.bench)"], None
    base, _, variant = bench.partition(":")
    if base != spec.bench:
        return None, [f"benchmark: the run is on {bench!r}, not {spec.bench!r}"], None
    partial = bool(variant) or ident["limit"] is not None
    problems: list[str] = []
    if partial and subset is None:
        what = f"the bundled mini set {bench}" if variant else f"only a part of {base}"
        if ident["limit"] is not None:
            what += f", limited to its first {ident['limit']} samples (--limit)"
        problems.append(
            f"coverage: the run covers {what}, not the full {spec.bench} benchmark; pass "
            "--subset NAME to submit it as an explicit, labelled subset"
        )
    try:
        loaded = load_benchmark(bench, None if variant else data, ident["limit"], download=False)
    except (DataError, ValueError) as e:
        problems.append(f"coverage: cannot load {bench} to check coverage ({e}); pass --data PATH")
        return None, problems, subset
    if ident["dataset_revision"] is None:
        problems.append("manifest.json: the dataset revision is not recorded")
    elif ident["dataset_revision"] != loaded.info.revision:
        problems.append(
            f"dataset revision: the run used {ident['dataset_revision']} but {bench} here is "
            f"{loaded.info.revision}"
        )
    return list(loaded), problems, subset


def _check_judgments(
    spec: BoardSpec, samples: list[Sample], judged: list[tuple[int, Judgment]], label: str
) -> tuple[list[Judgment], list[str]]:
    """Coverage, duplicates, errors, scale and re-parsing; returns judgments in sample order."""
    problems: list[str] = []
    by_id: dict[str, list[tuple[int, Judgment]]] = {}
    for n, j in judged:
        by_id.setdefault(j.sample_id, []).append((n, j))
    dups = []
    for sid, entries in by_id.items():
        # a resumed run appends a retry after a failed judgment: only that supersession is allowed
        if len(entries) > 1 and any(j.status != "error" for _, j in entries[:-1]):
            dups.append(f"{sid} (lines {', '.join(str(n) for n, _ in entries)})")
    if dups:
        problems.append(f"duplicates: more than one {spec.scorer} judgment for {_ids(dups)}")
    wanted = [s.id for s in samples]
    missing = [sid for sid in wanted if sid not in by_id]
    if missing:
        problems.append(
            f"coverage: {len(missing)} of {len(wanted)} sample ids of {label} have no "
            f"{spec.scorer} judgment: {_ids(missing)}"
        )
    known = set(wanted)
    extra = sorted(sid for sid in by_id if sid not in known)
    if extra:
        problems.append(f"coverage: judgments for ids that are not in {label}: {_ids(extra)}")
    sample_of = {s.id: s for s in samples}
    final = [(by_id[sid][-1]) for sid in wanted if sid in by_id]
    errors = [f"{j.sample_id} ({j.reason})" for _, j in final if j.status == "error"]
    if errors:
        problems.append(
            f"errors: {len(errors)} judgment(s) failed: {_ids(errors)}; rerun the same "
            "`ibench eval` command to retry them (a row is never built on failed samples)"
        )
    lo, hi = spec.item_scale
    for n, j in final:
        where = f"judgments.jsonl line {n} ({j.sample_id})"
        values = [("overall", j.overall), *((f"scores.{k}", v) for k, v in j.scores.items())]
        for name, v in values:
            if v is None:
                continue
            if not lo <= v <= hi:
                problems.append(
                    f"scale: {where}: {name} {v} is outside the protocol scale {lo:g}-{hi:g}"
                )
            elif spec.integer_scores and v != int(v):
                problems.append(f"scale: {where}: {name} {v} is not a whole number")
        if j.protocol_version != spec.protocol:
            problems.append(f"protocol: {where}: protocol_version {j.protocol_version!r}")
        if (why := spec.reparse(sample_of[j.sample_id], j)) is not None:
            problems.append(f"reply: {where}: {why}")
    return [j for _, j in final], problems


def _declared(spec: BoardSpec, run: RunFiles, result: Result) -> tuple[dict[str, Any], list[str]]:
    """Protocol, judge, prompt hashes and the comparable claim, with every missing one named."""
    decl = run.declaration
    problems: list[str] = []
    hashes = (
        decl.get("prompt_sha256")
        or result.metadata.get("prompt_sha256")
        or run.manifest.get("prompt_sha256")
    )
    if not isinstance(hashes, dict) or not hashes:
        problems.append(
            'declaration: no prompt-template SHA-256 declared (add "prompt_sha256": {name: '
            "hex} to submission.json in the run folder)"
        )
        hashes = {}
    if not result.judge:
        problems.append("declaration: results.json names no judge")
    elif decl.get("judge") and decl["judge"] != result.judge:
        problems.append(
            f"declaration: submission.json says judge {decl['judge']!r}, the run used "
            f"{result.judge!r}"
        )
    if result.protocol != spec.protocol:
        problems.append(
            f"protocol: results.json says {result.protocol!r}; the {spec.bench} leaderboard takes "
            f"{spec.protocol!r}"
        )
    elif decl.get("protocol") and decl["protocol"] != result.protocol:
        problems.append(f"declaration: submission.json says protocol {decl['protocol']!r}")
    claim = bool(decl.get("comparable", result.comparable))
    if claim:
        why = []
        if result.judge and not spec.judge_matches(result.judge):
            why.append(f"the judge {result.judge!r} is not {spec.judge}")
        if not spec.prompt_sha256:
            why.append(f"no official prompt SHA-256 is pinned for {spec.bench}")
        elif not hashes:
            why.append("official prompt hashes are required and none are declared")
        else:
            bad = sorted(k for k, v in spec.prompt_sha256.items() if hashes.get(k) != v)
            if bad:
                why.append(
                    f"the declared prompt hashes are not the official ones ({', '.join(bad)})"
                )
        for w in why:
            problems.append(f"comparable: claimed, but {w}")
    return {"prompt_sha256": hashes, "claim": claim}, problems


def _model_name(name: str | None, run: RunFiles, ident: dict[str, Any], problems: list[str]) -> str:
    chosen = name or run.declaration.get("model") or Path(ident.get("model") or "").name
    if not chosen or not chosen.strip():
        problems.append("model: no name (pass --name NAME)")
        return "unnamed"
    return chosen.strip()


def _digest(js: Sequence[Judgment]) -> str:
    blob = "\n".join(json.dumps(j.to_dict(), sort_keys=True) for j in js)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def validate_submission(
    path: Path,
    bench: str,
    *,
    name: str | None = None,
    subset: str | None = None,
    data: Path | None = None,
    limits: Limits | None = None,
    leaderboards: Path | None = None,
    write: bool = True,
    report: bool = True,
    audit: AuditRequest | None = None,
) -> Outcome:
    """Validate ``path`` for ``bench``; on success build the row and (``write``) add it to
    ``leaderboards/submissions/<bench>/``. With ``audit``, a seeded-random sample of the judged
    items is re-judged first and the row is ``verified`` only when every one agrees; without
    it the row is ``self-reported``."""
    spec = SPECS.get(bench)
    if spec is None:
        return Outcome(False, [f"no leaderboard accepts submissions for {bench!r}"])
    try:
        board = load_board(bench, leaderboards_dir(leaderboards), submissions=False)
    except BoardError as e:
        return Outcome(False, [str(e)])
    if subset is not None and (why := clean_text(subset, 200)) is not None:
        return Outcome(False, [f"--subset {why}"])
    limits = limits or intake.DEFAULT_LIMITS  # read at call time: tests and callers may swap it
    with open_submission(path, limits) as (root, problems):
        if root is None:
            return Outcome(False, problems)
        run = read_run(root, limits)
        problems += run.problems
        if run.fatal:
            return Outcome(False, problems)
        ident = run_identity(run.manifest)
        result = next((r for r in run.results if r.scorer == spec.scorer), None)
        if result is None:
            problems.append(
                f"results.json has no result for the {spec.scorer} scorer (the {spec.bench} "
                f"protocol); run `ibench eval --protocol {spec.scorer}` or `ibench score`"
            )
        samples, found, label = _coverage(spec, ident, subset, data)
        problems += found
        judged = [(n, j) for n, j in run.judgments if j.scorer == spec.scorer]
        if not judged:
            problems.append(f"judgments.jsonl holds no {spec.scorer} judgment")
        if samples is None or result is None:
            return Outcome(False, problems)
        js, found = _check_judgments(spec, samples, judged, ident["bench"])
        problems += found
        problems += compare_results(result, spec.recompute(samples, js, result))
        declared, found = _declared(spec, run, result)
        problems += found
        model = _model_name(name, run, ident, problems)
        if problems:
            return Outcome(False, problems)
        record = None
        if audit is not None:
            record, problems = run_audit(
                spec,
                audit,
                bench=ident["bench"],
                samples=samples,
                judgments=js,
                predictions=run.predictions,
                root=root,
                judge=result.judge,
                declared_hashes=declared["prompt_sha256"],
            )
            if problems:
                return Outcome(False, problems)
        declared["min_coverage"] = board.min_coverage
        row = _row(spec, run, ident, result, samples, js, model, label, declared)
        row["status"] = "verified" if record is not None else "self-reported"
        if record is not None:
            row["audit"] = record
        problems = validate_row(row, board.column_keys, board.tables, "row")
        if problems:  # a declared source_url, date or note that the schema refuses
            return Outcome(False, problems)
        outcome = Outcome(True, row=row)
        html = None
        if report and run.predictions and len(samples) <= MAX_REPORT_SAMPLES:
            from .reports import regenerate_report

            html = regenerate_report(root, samples, run, result, model)
        elif report and run.predictions:
            outcome.notes.append(f"no sample report: more than {MAX_REPORT_SAMPLES} samples")
        if write:
            outcome.written = write_submission(leaderboards_dir(leaderboards), bench, row, html)
            if html is not None:
                row["report"] = outcome.written[1].name
        return outcome


def _row(
    spec: BoardSpec,
    run: RunFiles,
    ident: dict[str, Any],
    result: Result,
    samples: list[Sample],
    js: list[Judgment],
    model: str,
    subset: str | None,
    declared: dict[str, Any],
) -> dict[str, Any]:
    scores, overall, ci = spec.row_scores(samples, js)
    counts = Counter(j.status for j in js)
    # invalid, error and missing items all count against coverage: none can be dropped
    coverage = round(100.0 * counts.get("ok", 0) / len(samples), 2) if samples else 0.0
    enough = coverage >= declared["min_coverage"]
    comparable = declared["claim"] and subset is None and enough
    decl = run.declaration
    if comparable:
        note = "Submission: official protocol, judge and prompts; every sample judged."
    elif declared["claim"] and subset is not None:
        note = f"Submission on the subset {subset!r}: not comparable with full-benchmark rows."
    elif declared["claim"]:
        note = (
            f"Submission judged validly on {coverage:g}% of the samples, under this board's "
            f"{declared['min_coverage']:g}% threshold: not comparable."
        )
    else:
        note = "Submission not claimed comparable: prompts, judge or protocol not all official."
    row: dict[str, Any] = {
        "model": model,
        "table": spec.table,
        "scores": scores,
        "overall": overall,
        "n": counts.get("ok", 0),
        "scale": spec.row_scale,
        "protocol": result.protocol,
        "judge": result.judge,
        "source": decl.get("source") or "ibench leaderboard submit",
        "date": decl.get("date") or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
        "comparable": comparable,
        "coverage": coverage,
        "provenance": "submission",
        "note": (decl.get("note") + " " if decl.get("note") else "") + note,
        "evidence": {
            "run_command": ident["command"],
            "bench": ident["bench"],
            "limit": ident["limit"],
            "dataset_revision": ident["dataset_revision"],
            "run_identity_sha256": ident["identity_sha256"],
            "samples": len(samples),
            "counts": {
                "valid": counts.get("ok", 0),
                "invalid": counts.get("invalid", 0),
                "total": len(js),
            },
            "invalid_reasons": dict(result.invalid_reasons),
            "judgments_sha256": _digest(js),
            "prompt_sha256": declared["prompt_sha256"],
            "made_with": ident["version"],
            "validated_with": __version__,
        },
    }
    if ci is not None:
        row["ci"] = {"overall": ci}
    if subset is not None:
        row["subset"] = subset
    if decl.get("source_url"):
        row["source_url"] = decl["source_url"]
    return row
