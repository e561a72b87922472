"""The replay adapter: answers made by other tools, looked up by sample id, images copied into the
run's store."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import pytest
from helpers import write_opening_outputs

from interleave_bench import load_benchmark
from interleave_bench.benchmarks.base import MINISET_DIR
from interleave_bench.media import ImageStore
from interleave_bench.models.base import GenerationSettings
from interleave_bench.models.replay import ReplayAdapter
from interleave_bench.types import Interleaved, Prediction, Segment


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def mmie_answers(tmp_path, drop: str):
    """An MMIE-format answers file (the official scorer's input) with our own answers."""
    folder = tmp_path / "mmie_preds"
    folder.mkdir()
    with tarfile.open(MINISET_DIR / "mmie" / "images.tar.gz") as tf:
        tf.extractall(folder, filter="data")
    rows = json.loads((MINISET_DIR / "mmie" / "data.json").read_text())
    out = []
    for row in rows:
        if row["id"] == drop:
            continue
        pic = next((q["image"] for q in row["question"] if q["image"]), None)
        row["model"] = "MyModel"
        if row["id"].startswith("MSR"):
            row["answer"] = f"The answer to {row['id']} is 42."  # the plain-string form
        else:
            row["answer"] = [{"text": f"Answer to {row['id']}.", "image": pic}]
        out.append(row)
    (folder / "answers.json").write_text(json.dumps(out))
    return folder / "answers.json", {r["id"]: r for r in out}


def test_mmie_answers_replay_with_images_copied(tmp_path):
    path, rows = mmie_answers(tmp_path, drop="PBL-2001")
    store = ImageStore(tmp_path / "run" / "images")
    replay = ReplayAdapter(path)
    assert replay.family == "replay" and replay.model_id == "replay:MyModel"
    ids = ["SA-1000", "MSR-3002", "PBL-2001", "nope"]
    sa, msr, dropped, unknown = replay.outputs_for(ids, store)
    assert sa.error is None and sa.output.structure() == "TI"
    assert sa.output.texts == ["Answer to SA-1000."]
    ref = sa.output.images[0]
    original = path.parent / rows["SA-1000"]["answer"][0]["image"]
    assert ref.sha256 == sha(original) and store.find(ref.sha256) is not None
    assert ref.path.startswith(str(store.root)) and ref.source == "./images/SA-1000-q1.jpg"
    assert msr.error is None and msr.output.texts == ["The answer to MSR-3002 is 42."]
    for missing in (dropped, unknown):
        assert missing.error and "no prediction" in missing.error and len(missing.output) == 0
    # without a store the references stay where the other tool wrote them
    (plain,) = replay.outputs_for(["SA-1000"])
    assert plain.output.images[0].path == str(original.resolve())


def test_opening_output_folder_replays_the_gold(tmp_path):
    data = load_benchmark("opening:sample")
    folder = tmp_path / "gen_outputs" / "Gold_output"
    write_opening_outputs(folder, skip="0102011")
    store = ImageStore(tmp_path / "run" / "images")
    replay = ReplayAdapter(folder, data)
    assert replay.format == "opening" and replay.model_id == "replay:Gold"
    ids = [s.id for s in data]
    outs = replay.outputs_for(ids, store)
    for sample, out in zip(data, outs, strict=True):
        if sample.id == "0102011":
            assert out.error == "no output file"
            continue
        assert out.error is None
        assert out.output.structure() == sample.gold.structure()
        assert out.output.texts == sample.gold.texts
        copied = [store.find(r.sha256) for r in out.output.images]
        assert [sha(p) for p in copied] == [sha(r.path) for r in sample.gold.images]
    (unknown,) = replay.outputs_for(["9999999"], store)
    assert "no prediction for 9999999" in unknown.error
    with pytest.raises(ValueError, match="needs the benchmark's samples"):
        ReplayAdapter(folder)


def test_our_predictions_jsonl_from_a_moved_run(tmp_path):
    data = load_benchmark("isg:sample")
    first, second = data[0], data[1]
    src = tmp_path / "old_run"
    old_store = ImageStore(src / "images")
    pic = next(r for s in data for r in s.input.images if r.path)
    ref = old_store.put_file(pic.path)
    out = Interleaved([Segment.of_text("An answer."), Segment.of_image(ref)])
    records = [
        Prediction(first.id, "theirs", out, timing={"seconds": 2.5}),
        Prediction(second.id, "theirs", Interleaved(), error="CUDA out of memory"),
    ]
    (src / "predictions.jsonl").write_text("".join(json.dumps(p.to_dict()) + "\n" for p in records))
    moved = shutil.move(src, tmp_path / "moved_run")  # stored paths now point nowhere
    store = ImageStore(tmp_path / "new_run" / "images")
    replay = ReplayAdapter(moved, data)
    assert replay.format == "jsonl" and replay.model_id == "replay:theirs"
    a, b, c = replay.outputs_for([first.id, second.id, data[2].id], store)
    assert a.error is None and a.seconds == 2.5 and a.output.texts == ["An answer."]
    assert a.output.images[0].sha256 == ref.sha256 and store.find(ref.sha256) is not None
    assert b.error == "CUDA out of memory"
    assert c.error == "no prediction"


def test_unreadable_image_becomes_missing_and_a_problem(tmp_path):
    path, _ = mmie_answers(tmp_path, drop="")
    (path.parent / "images" / "SA-1001-q1.jpg").write_bytes(b"not an image")
    replay = ReplayAdapter(path)
    (out,) = replay.outputs_for(["SA-1001"], ImageStore(tmp_path / "store"))
    assert out.error is None and out.output.structure() == "TI"
    assert out.output.images[0].missing and out.output.images[0].source
    assert any(p.row == "SA-1001" for p in replay.problems)


def test_generate_points_to_outputs_for(tmp_path):
    path, _ = mmie_answers(tmp_path, drop="")
    with pytest.raises(TypeError, match="outputs_for"):
        ReplayAdapter(path).generate([], GenerationSettings(), ImageStore(tmp_path / "s"))
