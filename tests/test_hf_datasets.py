"""Benchmarks as `datasets` and back: `to_hf()` round trips, `ibench data export`, and
`ibench score --predictions` reading a `datasets` folder of predictions."""

import json
import sys
from pathlib import Path

import datasets
import pytest
from helpers import cli_json, run_cli

from interleave_bench import load_benchmark
from interleave_bench.benchmarks import benchmark_names
from interleave_bench.hf import MissingExtra, need, sample_from_row, segments_row, undecoded
from interleave_bench.media import ImageStore
from interleave_bench.types import Interleaved, Prediction, Segment


def _image_bytes(items):
    return [
        None if s.image is None or s.image.missing else Path(s.image.path).read_bytes()
        for s in items or []
    ]


def _same(a, b):
    """Same sample: every field, the same text, the same image bytes in the same places."""
    assert (a.id, a.benchmark, a.category, a.task) == (b.id, b.benchmark, b.category, b.task)
    assert a.metadata == b.metadata
    for x, y in ((a.input, b.input), (a.gold, b.gold)):
        assert (x is None) == (y is None)
        if x is None:
            continue
        assert [(s.kind, s.text) for s in x] == [(s.kind, s.text) for s in y]
        assert [r.source for r in x.images] == [r.source for r in y.images]
        assert _image_bytes(x) == _image_bytes(y)


@pytest.mark.parametrize("bench", benchmark_names())
def test_to_hf_round_trip_every_mini_set(bench, tmp_path):
    data = load_benchmark(f"{bench}:sample")
    ds = data.to_hf()
    assert len(ds) == len(data) and ds.column_names[:3] == ["id", "benchmark", "category"]
    assert isinstance(ds.features["input"].feature["image"], datasets.Image)
    ds.save_to_disk(str(tmp_path / "ds"))
    back = undecoded(datasets.load_from_disk(str(tmp_path / "ds")))
    store = ImageStore(tmp_path / "store")
    samples = [sample_from_row(row, store) for row in back]
    assert [s.id for s in samples] == [s.id for s in data]
    for a, b in zip(data, samples, strict=True):
        _same(a, b)
    assert sum(len(s.input.images) for s in data) > 0  # the sets do carry images


def test_images_decode_lazily_as_pil(tmp_path):
    ds = load_benchmark("mmie:sample").to_hf()
    first = next(seg for seg in ds[0]["input"] if seg["type"] == "image")
    assert first["image"].size[0] > 0  # a PIL image, decoded on access


def test_data_export_writes_a_loadable_folder_and_refuses_a_used_one(tmp_path):
    to = tmp_path / "export"
    code, summary = cli_json("data", "export", "isg:sample", "--to", str(to))
    assert code == 0 and summary["rows"] == len(load_benchmark("isg:sample"))
    assert datasets.load_from_disk(str(to))[0]["benchmark"] == "isg"
    again = run_cli("data", "export", "isg:sample", "--to", str(to))
    assert again.exit_code == 2 and "not empty" in again.output
    assert datasets.load_from_disk(str(to)).num_rows == summary["rows"]  # nothing lost


def _score(preds, out):
    return cli_json(
        "score",
        "--bench",
        "interleavedbench:sample",
        "--predictions",
        str(preds),
        "--protocol",
        "structure",
        "--out",
        str(out),
    )


def test_score_reads_a_predictions_dataset_like_a_predictions_file(tmp_path):
    data = load_benchmark("interleavedbench:sample")
    # half the answers drop their images, so scores differ by sample
    store = ImageStore(tmp_path / "images")  # beside predictions.jsonl: images it may use

    def kept(seg):
        return seg if seg.image is None else Segment.of_image(store.put_file(seg.image.path))

    # odd samples lose all but their first segment, so scores differ by sample
    preds = [
        Prediction(s.id, "m", Interleaved(kept(g) for g in (s.gold if i % 2 else s.gold[:1])))
        for i, s in enumerate(data)
    ]
    jsonl = tmp_path / "predictions.jsonl"
    jsonl.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in preds))
    rows = [
        {"sample_id": p.sample_id, "model": p.model, "output": segments_row(p.output)}
        for p in preds
    ]
    rows.append({"sample_id": "bad", "model": "m", "output": [{"type": "video"}]})
    seg = {
        "type": datasets.Value("string"),
        "text": datasets.Value("string"),
        "image": datasets.Image(),
        "source": datasets.Value("string"),
    }
    features = datasets.Features(
        {
            "sample_id": datasets.Value("string"),
            "model": datasets.Value("string"),
            "output": datasets.List(seg),
        }
    )
    folder = tmp_path / "preds_ds"
    datasets.Dataset.from_list(rows, features=features).save_to_disk(str(folder))
    code_a, from_file = _score(jsonl, tmp_path / "a")
    code_b, from_ds = _score(folder, tmp_path / "b")
    assert code_a == code_b == 0
    assert 0 < from_ds["overall"] < 1
    for key in ("overall", "by_category", "counts", "invalid_reasons", "intervals"):
        assert from_ds[key] == from_file[key], key
    assert from_ds["metadata"]["problems"] == 1  # the bad row is named, the rest scored
    # the images judged are in the run's own store
    assert any((tmp_path / "b" / "images").rglob("*.jpg")) or any(
        (tmp_path / "b" / "images").rglob("*.png")
    )


def test_score_refuses_a_dataset_without_the_columns(tmp_path):
    folder = tmp_path / "ds"
    datasets.Dataset.from_list([{"id": "x", "answer": "y"}]).save_to_disk(str(folder))
    result = run_cli(
        "score",
        "--bench",
        "isg:sample",
        "--predictions",
        str(folder),
        "--protocol",
        "structure",
        "--out",
        str(tmp_path / "out"),
    )
    assert result.exit_code == 1
    assert "no sample_id and no output column" in result.output
    assert "Traceback" not in result.output


def test_missing_extra_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(MissingExtra, match=r"pip install 'interleave-bench\[hf\]'"):
        need("datasets")
    result = run_cli("data", "export", "isg:sample", "--to", str(tmp_path / "x"))
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "datasets is not installed" in lines[0]


def test_a_predictions_dataset_cannot_name_a_file_outside_the_run(tmp_path):
    """An image cell that names a file (a path, no bytes) is untrusted: a file outside the run's
    store is refused (the prediction is an error, never judged, and never read)."""
    from PIL import Image

    from interleave_bench.predictions import load_prediction_dataset

    secret = tmp_path / "secret" / "private.png"
    secret.parent.mkdir()
    Image.new("RGB", (4, 4), (9, 9, 9)).save(secret)
    data = load_benchmark("mmie:sample")
    first, second = list(data)[:2]
    # a plain struct, not datasets.Image (which would embed the file's bytes when saved):
    # the cell reaches the reader as a path alone, as a crafted dataset's would
    cell = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}
    seg = {"type": datasets.Value("string"), "text": datasets.Value("string"),
           "image": cell, "source": datasets.Value("string")}  # fmt: skip
    features = datasets.Features(
        {"sample_id": datasets.Value("string"), "output": datasets.List(seg)}
    )
    rows = [
        {"sample_id": first.id, "output": [
            {"type": "text", "text": "see", "image": None, "source": None},
            {"type": "image", "text": None, "image": {"bytes": None, "path": str(secret)},
             "source": None}]},
        {"sample_id": second.id, "output": [
            {"type": "text", "text": "fine", "image": None, "source": None}]},
    ]  # fmt: skip
    folder = tmp_path / "preds_ds"
    datasets.Dataset.from_list(rows, features=features).save_to_disk(str(folder))
    run_images = tmp_path / "run" / "images"
    _, preds, problems = load_prediction_dataset(folder, data, run_images)
    by_id = {p.sample_id: p for p in preds}
    bad = by_id[first.id]
    assert bad.error and bad.error.startswith("image refused")
    assert all(s.image is None or s.image.missing for s in bad.output)
    assert any(p.row == first.id and "outside" in p.message for p in problems)
    assert by_id[second.id].error is None and by_id[second.id].output.texts == ["fine"]
    assert not any(run_images.rglob("*.png"))  # the outside file was never copied in
