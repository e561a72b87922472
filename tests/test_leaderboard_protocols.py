"""Submissions for each protocol, built without a model: judgments parsed from scripted judge
replies by the scorers' own rules and aggregated by the scorers' own code (as a run would be), so
the leaderboard's recomputation is checked against the real thing for MMIE (a comparable, full
run), InterleavedEval and OpenING."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

from test_leaderboard import REPO_BOARDS, lb_json

from interleave_bench import load_benchmark
from interleave_bench.aggregate import mean
from interleave_bench.scorers.interleaved_eval import (
    ASPECTS,
    TEXT_ASPECTS,
    InterleavedEvalScorer,
    aggregate_aspects,
    parse_aspects,
    text_aspects_apply,
)
from interleave_bench.scorers.mmie import MMIEScorer, parse_score
from interleave_bench.scorers.opening import CRITERIA, OpenINGScoreScorer, parse_criteria
from interleave_bench.scorers.protocol_files import MMIE_CONSTANTS, OPENING_FILES, PromptSet
from interleave_bench.scoring import aggregate
from interleave_bench.types import Judgment

ENGINE = SimpleNamespace(model="MMIE-Score", stats=SimpleNamespace(to_dict=dict))


def write_run(dest: Path, bench: str, data, judgments, result, declaration: dict) -> Path:
    dest.mkdir(parents=True)
    identity = {"bench": bench, "dataset_revision": data.info.revision, "limit": None}
    manifest = {"command": "eval", "identity": {**identity, "model": "/models/synthetic-7b"}}
    (dest / "manifest.json").write_text(json.dumps(manifest))
    (dest / "results.json").write_text(json.dumps({"results": [result.to_dict()]}))
    (dest / "judgments.jsonl").write_text(
        "".join(json.dumps(j.to_dict()) + "\n" for j in judgments)
    )
    (dest / "submission.json").write_text(json.dumps(declaration))
    return dest


def boards_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "boards"
    dest.mkdir()
    for f in REPO_BOARDS.glob("*.json"):
        shutil.copy(f, dest / f.name)
    return dest


def test_comparable_mmie_submission_on_a_full_copy(tmp_path, copy_miniset):
    root = copy_miniset("mmie")  # stands in for a full local copy of MMIE (`--data`)
    data = load_benchmark("mmie", root, download=False)
    samples = list(data)
    judgments = []
    for i, s in enumerate(samples):
        raw = f"### Feedback\nok\n### Score\n{i % 7}"
        score, _ = parse_score(raw)
        judgments.append(Judgment(s.id, "mmie", MMIEScorer.protocol_version, "ok", {"score": score}, score, raw=raw))  # fmt: skip
    official = PromptSet({}, "pinned", official=True, hashes=dict(MMIE_CONSTANTS))
    result = MMIEScorer(ENGINE, official).aggregate(samples, judgments)  # type: ignore[arg-type]
    assert result.comparable
    run = write_run(
        tmp_path / "run", "mmie", data, judgments, result, {"prompt_sha256": MMIE_CONSTANTS}
    )
    boards = boards_copy(tmp_path)
    args = ["--bench", "mmie", "--dir", str(boards), "--data", str(root), "--name", "Synthetic 7B"]
    code, outcome = lb_json("submit", str(run), *args)
    assert code == 0, outcome
    row = outcome["row"]
    assert (
        row["comparable"] is True
        and "subset" not in row
        and row["overall"] == result.overall_percent
    )
    code, rows = lb_json("show", "mmie", "--dir", str(boards))
    mine = next(r for r in rows if r["model"] == "Synthetic 7B")
    assert mine["comparable"] and mine["ci_overall"] is not None
    # the same run judged by another model may not claim to be comparable
    doc = json.loads((run / "results.json").read_text())
    doc["results"][0]["judge"] = "gpt-4o"
    (run / "results.json").write_text(json.dumps(doc))
    code, outcome = lb_json("submit", str(run), *args)
    assert (
        code == 1
        and "comparable: claimed, but the judge 'gpt-4o' is not MMIE-Score" in (outcome["problems"])
    )


def test_interleavedbench_submission_recomputes_the_aspect_average(tmp_path):
    data = load_benchmark("interleavedbench:sample")
    samples = list(data)
    judgments = []
    for i, s in enumerate(samples):
        with_text = text_aspects_apply(s.task)
        aspects = [a for a in ASPECTS if with_text or a not in TEXT_ASPECTS]
        reply = {a: {"score": (i + k) % 6, "explanation": "because"} for k, a in enumerate(aspects)}
        raw = json.dumps(reply)
        scores, _ = parse_aspects(raw, aspects)
        full = {a: scores.get(a) for a in ASPECTS}
        overall = mean(list(scores.values()))
        judgments.append(Judgment(s.id, "interleaved_eval", InterleavedEvalScorer.protocol_version, "ok", full, overall, raw=raw))  # fmt: skip
    result = aggregate_aspects(
        judgments,
        {s.id: s.task for s in samples},
        judge="gpt-4o-2024-08-06",
        protocol=InterleavedEvalScorer.protocol_version,
    )
    decl = {"prompt_sha256": {"rubric": "0" * 64}}
    run = write_run(tmp_path / "run", "interleavedbench:sample", data, judgments, result, decl)
    boards = boards_copy(tmp_path)
    args = ["--bench", "interleavedbench", "--dir", str(boards), "--subset", "mini"]
    code, outcome = lb_json("submit", str(run), *args)
    assert code == 0, outcome
    row = outcome["row"]
    assert row["overall"] == result.overall and row["scores"] == result.metadata["aspects"]
    assert row["table"] == "auto" and row["comparable"] is False
    # an aspect edited after judging no longer matches its reply; and no comparable claim holds
    lines = (run / "judgments.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["scores"]["helpfulness"] = 5.0 if first["scores"]["helpfulness"] != 5.0 else 4.0
    (run / "judgments.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    (run / "submission.json").write_text(json.dumps({**decl, "comparable": True}))
    code, outcome = lb_json("submit", str(run), *args)
    text = "\n".join(outcome["problems"])
    assert code == 1
    assert f"reply: judgments.jsonl line 1 ({first['sample_id']}): aspect scores differ" in text
    assert "comparable: claimed, but no official prompt SHA-256 is pinned for interleavedbench" in (
        text
    )


def test_opening_submission_uses_the_official_summary(tmp_path):
    data = load_benchmark("opening:sample")
    samples = list(data)
    judgments = []
    for i, s in enumerate(samples):
        raw = json.dumps(
            {c: {"Score": (i * 3 + k) % 11, "Justification": "j"} for k, c in enumerate(CRITERIA)}
        )
        scores, _ = parse_criteria(raw)
        judgments.append(
            Judgment(
                s.id, "opening_scores", OpenINGScoreScorer.protocol_version, "ok", dict(scores),
                sum(scores.values()) / len(scores), raw=raw, metadata={"model": "m"},
            )
        )  # fmt: skip
    prompt = PromptSet({}, "pinned", official=True, hashes={})
    scorer = OpenINGScoreScorer(SimpleNamespace(model="gpt-4o"), prompt)  # type: ignore[arg-type]
    result = aggregate(scorer, samples, judgments, SimpleNamespace(model="gpt-4o"))  # type: ignore[arg-type]
    pinned = {"detailed_score_system": OPENING_FILES["detailed_score_system"][1]}
    run = write_run(
        tmp_path / "run",
        "opening:sample",
        data,
        judgments,
        result,
        {"prompt_sha256": pinned, "comparable": True},  # run results never claim it for OpenING
    )
    boards = boards_copy(tmp_path)
    code, outcome = lb_json(
        "submit", str(run), "--bench", "opening", "--dir", str(boards), "--subset", "mini"
    )
    assert code == 0, outcome
    row = outcome["row"]
    summary = OpenINGScoreScorer.summary(judgments)["m"]
    assert row["overall"] == summary["Overall"] and row["scale"] == "0-10"
    assert row["scores"]["image_text_coherency"] == summary["Image-Text Coherency"]
    assert row["comparable"] is False and "subset 'mini'" in row["note"]  # a subset never is
