"""Verified submissions: an MMIE answers file scored by the real `ibench score --data` against a
fake MMIE-Score on 127.0.0.1 is submitted, audited by re-judging through the same scorer and
judge (verified), and a fabricated copy of it (every reply "### Score\\n6") is accepted only as
self-reported and rejected by an audit that names each disagreeing sample with both scores."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI, Reply, user_text
from helpers import cli_json, run_cli
from test_leaderboard import lb, lb_json
from test_leaderboard_protocols import boards_copy
from test_score_cli import mmie_predictions

from interleave_bench import load_benchmark
from interleave_bench.benchmarks.base import MINISET_DIR
from interleave_bench.leaderboard.audit import choose
from interleave_bench.leaderboard.specs import SPECS
from interleave_bench.scorers.mmie import MMIEScorer
from interleave_bench.scorers.protocol_files import MMIE_CONSTANTS
from interleave_bench.types import Judgment

JUDGE = "MMIE-Score"


def judge_reply(body: dict) -> Reply:
    """A deterministic judge: the score (0-5, never 6) follows from what it was shown."""
    score = hashlib.sha256(user_text(body).encode()).digest()[0] % 6
    return Reply(f"### Feedback\nSeen.\n### Score\n{score}")


@pytest.fixture(scope="module")
def honest(tmp_path_factory) -> dict:
    """A real score run: our own answers to the MMIE copy at ``data`` (not the copy's own file),
    scored with `--data`; returns the paths and the judge's score per sample."""
    base = tmp_path_factory.mktemp("audit")
    data = base / "mmie-copy"
    shutil.copytree(MINISET_DIR / "mmie", data)
    answers, prompts = mmie_predictions(base)
    rows = json.loads(answers.read_text())
    for i, row in enumerate(rows):  # the model's answers: text of its own, the first image kept
        if isinstance(row["answer"], list):
            row["answer"] = [{"text": f"My answer {i}.", "image": row["answer"][0]["image"]}]
        else:
            row["answer"] = f"My answer {i}."
    answers.write_text(json.dumps(rows))
    with pytest.MonkeyPatch.context() as mp, FakeOpenAI(judge_reply) as srv:
        mp.setenv("OPENAI_API_KEY", "sk-test")
        code, result = cli_json(
            "score", "--bench", "mmie", "--data", str(data), "--predictions", str(answers),
            "--protocol", "mmie", "--protocol-file", str(prompts), "--allow-unofficial",
            "--judge-base-url", srv.url, "--judge-model", JUDGE, "--out", str(base / "run"),
        )  # fmt: skip
    assert code == 0, result
    assert result["counts"]["valid"] == 15
    lines = (base / "run" / "judgments.jsonl").read_text().splitlines()
    scores = {r["sample_id"]: r["overall"] for r in map(json.loads, lines)}
    return {"run": base / "run", "data": data, "prompts": prompts, "scores": scores}


@pytest.fixture
def boards(tmp_path) -> Path:
    return boards_copy(tmp_path)


def submit(run: Path, boards: Path, data: Path, *extra: str) -> tuple[int, dict]:
    args = ["--bench", "mmie", "--dir", str(boards), "--data", str(data), *extra]
    return lb_json("submit", str(run), *args)


def audit_args(url: str, prompts: Path, n: int = 5, seed: int = 7) -> list[str]:
    return [
        "--audit", str(n), "--audit-seed", str(seed), "--judge-base-url", url,
        "--judge-model", JUDGE, "--protocol-file", str(prompts), "--allow-unofficial",
    ]  # fmt: skip


def fabricate(
    src: Path,
    dest: Path,
    data: Path,
    statuses: dict[str, str] | None = None,
    official: bool = True,
) -> Path:
    """A copy of ``src`` whose judgments the submitter wrote: "### Score\\n6" everywhere (or an
    unparseable reply where ``statuses`` says invalid), with a results.json that recomputes and
    the judge declared; ``official``: the public official prompt hashes too, claiming comparable
    (else the run's own prompt hashes stand, which an offline audit can re-judge with)."""
    run = Path(shutil.copytree(src, dest))
    samples = list(load_benchmark("mmie", data, download=False))
    js = []
    for s in samples:
        if (statuses or {}).get(s.id) == "invalid":
            js.append(Judgment(s.id, "mmie", MMIEScorer.protocol_version, "invalid", {}, None, reason="no score", raw="### Feedback\nhm"))  # fmt: skip
        else:
            js.append(Judgment(s.id, "mmie", MMIEScorer.protocol_version, "ok", {"score": 6.0}, 6.0, raw="### Score\n6"))  # fmt: skip
    claimed = SPECS["mmie"].recompute(samples, js, _judge_result())
    (run / "judgments.jsonl").write_text("".join(json.dumps(j.to_dict()) + "\n" for j in js))
    (run / "results.json").write_text(json.dumps(claimed.to_dict()))
    decl: dict = {"judge": JUDGE, "model": "Fabricated"}
    if official:
        decl.update(prompt_sha256=dict(MMIE_CONSTANTS), comparable=True)
    (run / "submission.json").write_text(json.dumps(decl))
    return run


def _judge_result():
    from types import SimpleNamespace

    return SimpleNamespace(judge=JUDGE)


def test_honest_score_data_run_is_accepted_then_verified_by_audit(honest, boards):
    run, data, prompts = honest["run"], honest["data"], honest["prompts"]
    code, outcome = submit(run, boards, data, "--name", "Honest")
    assert code == 0, outcome  # the --data revision is the copy's: the honest path is accepted
    row = outcome["row"]
    assert row["status"] == "self-reported" and "audit" not in row and row["coverage"] == 100.0
    with FakeOpenAI(judge_reply) as srv:
        code, outcome = submit(run, boards, data, "--name", "Honest", *audit_args(srv.url, prompts))
        sent = list(srv.requests)
    assert code == 0, outcome
    row = outcome["row"]
    assert row["status"] == "verified"
    audit = row["audit"]
    assert audit["n"] == 5 and audit["seed"] == 7 and audit["agreed"] == 5
    assert audit["judge_model"] == JUDGE and audit["tolerance"] == 0
    assert len(sent) == 5 and len(audit["sample_ids"]) == 5  # no preflight, one call per item
    # the same seed draws the same items, from the judged ids whatever their order
    js = [Judgment(s, "mmie", "v", "ok", {"score": 1.0}, 1.0) for s in sorted(honest["scores"])]
    assert [j.sample_id for j in choose(js[::-1], 5, 7)] == audit["sample_ids"]
    code, rows = lb_json("show", "mmie", "--dir", str(boards))
    mine = next(r for r in rows if r["model"] == "Honest")
    assert mine["status"] == "verified" and mine["coverage"] == 100.0
    assert mine["audit"]["agreed"] == 5


def test_fabricated_submission_is_self_reported_and_fails_an_audit(honest, boards, tmp_path):
    data, prompts = honest["data"], honest["prompts"]
    run = fabricate(honest["run"], tmp_path / "fake", data)
    code, outcome = submit(run, boards, data, "--name", "Fabricated")
    assert code == 0, outcome
    row = outcome["row"]
    # without an audit the claim stands only as self-reported: never comparable-and-verified
    assert row["overall"] == 100.0 and row["comparable"] is True
    assert row["status"] == "self-reported"
    args = ["--bench", "mmie", "--dir", str(boards), "--data", str(data), "--name", "Fabricated"]
    plain = lb("submit", str(run), *args)
    assert plain.exit_code == 0, plain.stderr
    assert "comparable: True, self-reported: not audited" in plain.stdout
    table = lb("show", "mmie", "--dir", str(boards))
    line = next(x for x in table.stdout.splitlines() if "Fabricated" in x)
    assert "self-reported" in line and "verified" not in line
    site = tmp_path / "site"
    assert lb("build", "--out", str(site), "--dir", str(boards)).exit_code == 0
    page = (site / "mmie.html").read_text("utf-8")
    assert '<td data-v="self-reported"' in page and "Fabricated" in page
    assert "Fabricated" not in (site / "index.html").read_text("utf-8")  # not the best comparable
    # audited against the run's own judge, every drawn item disagrees: rejected, nothing written
    # (offline the official prompts cannot be fetched: this copy keeps the prompts it was run with)
    run = fabricate(honest["run"], tmp_path / "fake2", data, official=False)
    before = sorted((boards / "submissions" / "mmie").iterdir())
    with FakeOpenAI(judge_reply) as srv:
        code, outcome = submit(run, boards, data, *audit_args(srv.url, prompts, n=4, seed=11))
    assert code == 1 and outcome["row"] is None
    text = "\n".join(outcome["problems"])
    assert f"audit failed (seed 11, judge {JUDGE}, tolerance 0): 4 of 4 re-judged items" in text
    drawn = choose([Judgment(s, "mmie", "v", "ok", {}, 1.0) for s in honest["scores"]], 4, 11)
    for j in drawn:
        assert f"{j.sample_id}: submitted 6, re-judged {honest['scores'][j.sample_id]:g}" in text
    assert sorted((boards / "submissions" / "mmie").iterdir()) == before


def test_coverage_counts_invalid_items_and_gates_comparable(honest, boards, tmp_path):
    data = honest["data"]
    ids = sorted(honest["scores"])
    run = fabricate(honest["run"], tmp_path / "fake", data, {ids[0]: "invalid"})
    code, outcome = submit(run, boards, data, "--name", "Dropper")
    assert code == 0, outcome
    row = outcome["row"]
    assert row["coverage"] == 93.33 and row["comparable"] is False  # 14 of 15, under 99%
    assert "under this board's 99% threshold" in row["note"]
    code, rows = lb_json("show", "mmie", "--dir", str(boards))
    assert next(r for r in rows if r["model"] == "Dropper")["coverage"] == 93.33
    assert "93.33%" in lb("show", "mmie", "--dir", str(boards)).stdout
    # the threshold is the board's to set
    board = json.loads((boards / "mmie.json").read_text())
    board["official"]["min_coverage"] = 90
    (boards / "mmie.json").write_text(json.dumps(board))
    code, outcome = submit(run, boards, data, "--name", "Dropper")
    assert code == 0 and outcome["row"]["comparable"] is True
    board["official"]["min_coverage"] = 150
    (boards / "mmie.json").write_text(json.dumps(board))
    code, outcome = submit(run, boards, data, "--name", "Dropper")
    assert code == 1 and "official.min_coverage: expected a percent" in outcome["problems"][0]


def test_audit_usage_errors_are_clear(honest, boards):
    result = lb(
        "submit", str(honest["run"]), "--bench", "mmie", "--dir", str(boards), "--audit", "3"
    )
    assert result.exit_code == 2 and "--audit needs --judge-model" in result.stderr
    with FakeOpenAI(judge_reply) as srv:
        args = audit_args(srv.url, honest["prompts"])
        args[args.index(JUDGE)] = "gpt-4o"
        code, outcome = submit(honest["run"], boards, honest["data"], "--name", "H", *args)
        assert srv.requests == []
    assert code == 1
    assert (
        "audit: --judge-model 'gpt-4o' is not the judge the run used ('MMIE-Score')"
        in (outcome["problems"][0])
    )


def test_score_data_refuses_answers_to_another_revision(honest, tmp_path):
    answers, prompts = mmie_predictions(tmp_path)
    rows = json.loads(answers.read_text())
    rows[2]["question"][0]["text"] = "A question the benchmark copy does not ask."
    answers.write_text(json.dumps(rows))
    with pytest.MonkeyPatch.context() as mp, FakeOpenAI(judge_reply) as srv:
        mp.setenv("OPENAI_API_KEY", "sk-test")
        result = run_cli(
            "score", "--bench", "mmie", "--data", str(honest["data"]), "--predictions",
            str(answers), "--protocol", "mmie", "--protocol-file", str(prompts),
            "--allow-unofficial", "--judge-base-url", srv.url, "--judge-model", JUDGE,
            "--out", str(tmp_path / "run"),
        )  # fmt: skip
        assert srv.requests == []
    assert result.exit_code == 1
    assert f"data.json row {rows[2]['id']}: question: differs from the --data copy" in (
        " ".join(result.stderr.split())
    )


def test_audit_takes_images_only_from_the_submission_store(tmp_path):
    from helpers import png_bytes

    from interleave_bench.leaderboard.audit import confined
    from interleave_bench.media import ImageStore
    from interleave_bench.types import ImageRef, Interleaved, Prediction, Segment

    outside = tmp_path / "secret.png"
    outside.write_bytes(png_bytes(color=(1, 2, 3)))
    stored = ImageStore(tmp_path / "run" / "images").put_bytes(png_bytes())
    pred = Prediction(
        "SA-1",
        "m",
        Interleaved(
            [
                Segment.of_text("hi"),
                Segment.of_image(ImageRef(path=str(outside), source="x.png")),
                Segment.of_image(ImageRef(sha256=stored.sha256, path=str(outside))),
            ]
        ),
    )
    out = confined(pred, tmp_path / "run" / "images")
    refs = [s.image for s in out.output if s.image is not None]
    assert refs[0].missing and refs[0].path is None  # a submitted path is never opened
    assert refs[1].path == str(Path(stored.path).resolve()) and not refs[1].missing
    assert out.output[0].text == "hi"
