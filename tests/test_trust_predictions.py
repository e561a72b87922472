"""Predictions are untrusted input: the images they name are read only from their own folder (or
their run's store), and JSON nested absurdly deep is a one-line error naming the file."""

from __future__ import annotations

import base64
import json
import os
import tarfile

from fake_openai import FakeOpenAI, Reply, image_urls
from helpers import png_bytes, run_cli, write_opening_outputs

from interleave_bench import load_benchmark
from interleave_bench.benchmarks.base import MINISET_DIR
from interleave_bench.media import ImageStore
from interleave_bench.models.replay import ReplayAdapter
from interleave_bench.predictions import load_mmie_predictions
from interleave_bench.types import ImageRef, Interleaved, Prediction, Segment

ASPECTS = ("text_quality", "perceptual_quality", "image_coherence", "text_image_coherence")
REPLY = json.dumps({a: {"score": 4, "explanation": "ok"} for a in (*ASPECTS, "helpfulness")})
SECRET = png_bytes(20, 20, (250, 1, 2))  # lives outside the predictions' folder
LEGIT = png_bytes(24, 16, (3, 4, 250))
DEEP = "[" * 100_000


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def one_line(text: str) -> str:
    return " ".join(text.split())


def hostile_predictions(tmp_path):
    """predictions.jsonl whose first four samples name: a legit relative image, an absolute path
    outside, a ``..`` escape and a symlink leading outside; the rest answer with text only."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(SECRET)
    folder = tmp_path / "preds"
    (folder / "pics").mkdir(parents=True)
    (folder / "pics" / "ok.png").write_bytes(LEGIT)
    os.symlink(outside / "secret.png", folder / "pics" / "link.png")
    data = load_benchmark("interleavedbench:sample")
    paths = ["pics/ok.png", str(outside / "secret.png"), "../outside/secret.png", "pics/link.png"]
    lines = []
    for k, s in enumerate(data):
        segs = [Segment.of_text(f"Answer {k}.")]
        if k < len(paths):
            segs.append(Segment.of_image(ImageRef(path=paths[k])))
        lines.append(json.dumps(Prediction(s.id, "m", Interleaved(segs)).to_dict()) + "\n")
    (folder / "predictions.jsonl").write_text("".join(lines))
    return folder, [s.id for s in data]


def test_score_refuses_images_outside_the_predictions_folder(tmp_path, monkeypatch):
    folder, ids = hostile_predictions(tmp_path)
    # relative paths used to be opened from the working folder: stand where that would leak
    monkeypatch.chdir(folder)
    with FakeOpenAI(lambda body: Reply(content=REPLY)) as server:
        r = run_cli(
            "score",
            "--bench",
            "interleavedbench:sample",
            "--predictions",
            str(folder / "predictions.jsonl"),
            "--protocol",
            "interleaved_eval",
            "--judge-base-url",
            server.url,
            "--judge-model",
            "judge",
            "--out",
            str(tmp_path / "out"),
            "--json",
        )
        sent = [u for body in server.requests for u in image_urls(body)]
        bodies = json.dumps(server.requests)
    assert r.exit_code == 3, r.stderr  # the refused items are counted as not scored
    assert b64(SECRET) not in bodies  # the judge never saw the outside file's bytes
    assert any(b64(LEGIT) in u for u in sent)  # a legit relative image still goes through
    stderr = one_line(r.stderr)
    for sid, what in zip(ids[1:4], ("absolute image path", "escapes", "symlink"), strict=True):
        assert f"problem: row {sid!r}, field output[1].image: predictions.jsonl:" in stderr
        assert what in stderr
    result = json.loads(r.stdout)
    assert result["counts"]["error"] == 3 and result["counts"]["total"] == len(ids)
    judgments = [json.loads(x) for x in (tmp_path / "out" / "judgments.jsonl").open()]
    refused = {j["sample_id"]: j for j in judgments if "image refused" in (j.get("reason") or "")}
    assert set(refused) == set(ids[1:4])
    assert all(j["status"] == "error" and j["overall"] is None for j in refused.values())


def test_run_store_by_hash_and_absolute_paths_inside_are_accepted(tmp_path):
    data = load_benchmark("isg:sample")
    folder = tmp_path / "run"
    ref = ImageStore(folder / "images").put_bytes(LEGIT)  # an absolute path inside the folder
    moved = ImageRef(sha256=ref.sha256, path=str(tmp_path / "gone" / "x.png"))  # found by hash
    preds = [
        Prediction(data[0].id, "m", Interleaved([Segment.of_image(ref)])),
        Prediction(data[1].id, "m", Interleaved([Segment.of_image(moved)])),
    ]
    (folder / "predictions.jsonl").write_text(
        "".join(json.dumps(p.to_dict()) + "\n" for p in preds)
    )
    replay = ReplayAdapter(folder, data)
    store = ImageStore(tmp_path / "new" / "images")
    a, b = replay.outputs_for([data[0].id, data[1].id], store)
    assert a.error is None and b.error is None and not replay.problems
    assert store.find(ref.sha256) is not None


def test_replay_never_copies_an_outside_image_into_the_run(tmp_path, monkeypatch):
    folder, ids = hostile_predictions(tmp_path)
    monkeypatch.chdir(folder)
    replay = ReplayAdapter(folder / "predictions.jsonl", load_benchmark("interleavedbench:sample"))
    store = ImageStore(tmp_path / "run" / "images")
    outs = replay.outputs_for(ids[:4], store)
    assert outs[0].error is None and store.find(outs[0].output.images[0].sha256) is not None
    for out in outs[1:]:
        assert out.error and out.error.startswith("image refused")
        assert all(r.missing for r in out.output.images)
    secret_sha = ImageStore(tmp_path / "x").put_bytes(SECRET).sha256
    assert store.find(secret_sha) is None
    assert {p.row for p in replay.problems} >= set(ids[1:4])


def test_mmie_answers_with_a_refused_image_are_errors_not_judged(tmp_path):
    folder = tmp_path / "mmie"
    folder.mkdir()
    with tarfile.open(MINISET_DIR / "mmie" / "images.tar.gz") as tf:
        tf.extractall(folder, filter="data")
    (tmp_path / "secret.png").write_bytes(SECRET)
    rows = json.loads((MINISET_DIR / "mmie" / "data.json").read_text())
    rows[0]["answer"] = [{"text": "See.", "image": str(tmp_path / "secret.png")}]
    (folder / "answers.json").write_text(json.dumps(rows))
    _, preds, problems = load_mmie_predictions(folder / "answers.json")
    first = next(p for p in preds if p.sample_id == rows[0]["id"])
    assert first.error and "refused" in first.error
    assert all(p.error is None for p in preds if p.sample_id != rows[0]["id"])
    assert any(
        p.row == rows[0]["id"] and p.field == "answer[0].image" and "answers.json" in p.message
        for p in problems
    )


# --------------------------------------------------------------------------- nested JSON


def score(tmp_path, bench: str, predictions) -> object:
    out = tmp_path / f"out-{len(list(tmp_path.iterdir()))}"
    args = ["--bench", bench, "--predictions", str(predictions), "--protocol", "structure"]
    return run_cli("score", *args, "--out", str(out))


def assert_one_line_error(r, name: str) -> None:
    assert r.exit_code == 1, r.stderr
    assert "Traceback" not in r.stderr and "RecursionError" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and name in lines[0], r.stderr
    assert "nested too deeply" in lines[0]


def test_deeply_nested_opening_output_file(tmp_path):
    folder = tmp_path / "X_output"
    folder.mkdir()
    (folder / "0102010.json").write_text(DEEP)
    assert_one_line_error(score(tmp_path, "opening:sample", folder), "0102010.json")
    # beside readable outputs it is a problem naming the file, and the rest is still scored
    other = tmp_path / "Y_output"
    write_opening_outputs(other, limit=2)
    (other / "0102010.json").write_text(DEEP)
    r = score(tmp_path, "opening:sample", other)
    assert r.exit_code == 3 and "Traceback" not in r.stderr  # 2 outputs: the rest not scored
    assert "problem: row '0102010.json', field <file>: JSON nested too deeply" in one_line(r.stderr)


def test_deeply_nested_mmie_answers_file(tmp_path):
    path = tmp_path / "answers.json"
    path.write_text(DEEP)
    assert_one_line_error(score(tmp_path, "mmie", path), "answers.json")


def test_deeply_nested_predictions_jsonl(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text(DEEP + "\n")
    assert_one_line_error(score(tmp_path, "isg:sample", path), "predictions.jsonl")
    # balanced and valid, but deeper than any record needs: refused the same way, not parsed on
    rec = Prediction("x", "m", Interleaved()).to_dict()
    rec["settings"] = {"a": json.loads("[" * 500 + "]" * 500)}
    path.write_text(json.dumps(rec) + "\n")
    assert_one_line_error(score(tmp_path, "isg:sample", path), "predictions.jsonl")


# --------------------------------------------------------------------------- eval --data problems


def test_eval_prints_records_and_reports_the_loaders_problems(tmp_path, copy_miniset):
    root = copy_miniset("opening")
    data_file = root / "OpenING-benchmark" / "test_data.jsonl"
    lines = data_file.read_text().splitlines()
    first = json.loads(lines[0])
    first["conversations"][1]["output"][0]["image"] = "../<b>x</b>.jpg"  # climbs out, and HTML
    dup = json.loads(lines[1])
    data_file.write_text("\n".join([json.dumps(first), *lines[1:], json.dumps(dup)]) + "\n")
    folder = tmp_path / "Gold_output"
    write_opening_outputs(folder)
    out = tmp_path / "run"
    r = run_cli(
        *("eval", "--model", str(folder), "--model-type", "replay", "--bench", "opening"),
        *("--data", str(root), "--out", str(out)),
    )
    assert r.exit_code == 0, r.stderr
    stderr = one_line(r.stderr)
    assert f"problem: row {dup['total_uid']!r}, field id: duplicate id" in stderr
    assert "problem: row '0102010', field conversations[1].output[0].image:" in stderr
    assert "'../<b>x</b>.jpg' escapes the data root" in stderr
    recorded = json.loads((out / "problems.json").read_text())
    assert {(p["row"], p["field"]) for p in recorded["problems"]} == {
        (dup["total_uid"], "id"),
        ("0102010", "conversations[1].output[0].image"),
    }
    page = (out / "report.html").read_text()
    assert "Data problems (2)" in page and "duplicate id" in page
    assert "&#x27;../&lt;b&gt;x&lt;/b&gt;.jpg&#x27; escapes" in page and "<b>x</b>" not in page
