import json
import os
import shutil

import pytest
from PIL import Image

from interleave_bench import load_benchmark
from interleave_bench.benchmarks import DataError, get_benchmark
from interleave_bench.benchmarks.base import RowContext
from interleave_bench.benchmarks.paths import DataRoot


def test_mmie_bundled_counts_and_mapping():
    data = load_benchmark("mmie:sample")
    assert len(data) == 15
    assert data.by_category() == {
        "multi_step_reasoning": 4,
        "project_based_learning": 6,
        "situational_analysis": 5,
    }
    assert data.missing_images == 1
    assert data.problems == []
    plain = next(s for s in data if s.metadata["answer_format"] == "string")
    assert plain.gold.structure() == "T"
    msr = next(s for s in data if s.category == "multi_step_reasoning")
    assert msr.metadata["gt_answer"]
    assert data.info.source == "bundled mini set" and data.info.revision.startswith("sha256:")


def test_interleavedbench_bundled_placeholders_in_order():
    data = load_benchmark("interleavedbench:sample")
    assert len(data) == 12
    first = data[0]
    assert first.task == "wikihow_next_step" and first.category == "context-based"
    assert first.input.structure() == "TITIT"
    assert [r.source for r in first.input.images] == [
        "wiki_images_test/480000_0_0.png",
        "wiki_images_test/480000_0_1.png",
    ]
    assert [r.source for r in first.gold.images] == [
        "wiki_images_test/480000_0_2.png",
        "wiki_images_test/480000_0_3.png",
    ]
    assert all(os.path.isfile(r.path) for s in data for r in s.input.images + s.gold.images)
    free = [s for s in data if s.category == "context-free"]
    assert len(free) == 6 and all(not s.input.images for s in free)


def test_opening_bundled_begin_and_image_markers():
    data = load_benchmark("opening:sample")
    assert len(data) == 12
    s = data[1]
    assert s.category == "Multimodal Brainstorming"
    assert s.task == "Party Planning Brainstorming"
    assert "<BEGIN>" not in s.input.text and "<image>" not in s.gold.text
    assert s.input.structure() == "TI" and s.gold.structure() == "TITI"


def test_isg_bundled_from_zip():
    data = load_benchmark("isg:sample")
    assert len(data) == 12 and data.problems == []
    s = next(x for x in data if x.category == "HowTo")
    assert s.gold.structure() == "TITI"
    assert s.metadata["group"] == "Image-Text Complementation"
    assert all(os.path.isfile(r.path) for r in s.gold.images)


def test_limit_filters_and_determinism():
    a = load_benchmark("mmie:sample")
    b = load_benchmark("mmie:sample")
    assert [s.to_dict() for s in a] == [s.to_dict() for s in b]
    assert [s.id for s in load_benchmark("mmie:sample", limit=3)] == [s.id for s in a][:3]
    only = load_benchmark("mmie:sample", categories=["multi_step_reasoning"])
    assert {s.category for s in only} == {"multi_step_reasoning"} and len(only) == 4
    tasks = load_benchmark("interleavedbench:sample", tasks=["education_generation"])
    assert len(tasks) == 2


def test_loading_decodes_no_image(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("an image was opened during load")

    monkeypatch.setattr(Image, "open", refuse)
    for name in ("mmie", "interleavedbench", "opening", "isg"):
        assert len(load_benchmark(f"{name}:sample")) > 0


def test_readonly_root_extracts_into_the_cache(copy_miniset, monkeypatch):
    root = copy_miniset("interleavedbench")
    monkeypatch.setattr("interleave_bench.benchmarks.base.os.access", lambda *a, **k: False)
    data = load_benchmark("interleavedbench", root)
    assert data.info.source == "local folder"
    assert not (root / "zipped_images" / "wiki_images_test").exists()
    cache = os.environ["IBENCH_HOME"]
    paths = [r.path for s in data for r in s.input.images]
    assert paths and all(p.startswith(cache) and os.path.isfile(p) for p in paths)


def test_local_mmie_tar_extracted_into_root(copy_miniset):
    root = copy_miniset("mmie")
    data = load_benchmark("mmie", root)
    assert (root / "images").is_dir()
    assert data.missing_images == 1


def test_opening_accepts_parent_folder(copy_miniset):
    root = copy_miniset("opening")
    assert len(load_benchmark("opening", root)) == 12
    assert len(load_benchmark("opening", root / "OpenING-benchmark")) == 12


def test_missing_folder_and_unknown_variant(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        load_benchmark("mmie", tmp_path / "nope")
    with pytest.raises(DataError, match="file not found"):
        load_benchmark("mmie", tmp_path)
    with pytest.raises(DataError, match="only variant"):
        load_benchmark("mmie:full")


def test_no_local_copy_offline_is_clear():
    with pytest.raises(DataError, match="HF_HUB_OFFLINE"):
        load_benchmark("mmie")
    with pytest.raises(DataError, match="not on the Hugging Face Hub"):
        load_benchmark("opening")


# ----------------------------------------------------------------------- the reference's real rows


def _parse(name, row, root):
    bench, _ = get_benchmark(name)
    return bench.parse_row(row, RowContext(DataRoot([root]), 0))


def test_real_mmie_row(tmp_path):
    img = "./images/v4-460px-Double-Space-in-Word-2007-Step-1-Version-2.jpg"
    (tmp_path / "images").mkdir()
    shutil.copy(next((get_minisets() / "mmie").glob("*.json")), tmp_path / "unused.json")
    (tmp_path / img).write_bytes(b"not decoded at load")
    row = {
        "id": "PBL-2896694",
        "question": [
            {"text": "How to Double Space in Word 2007?", "image": None},
            {"text": "Method 1: Using the Right-Click Menu", "image": None},
            {
                "text": "Step 1: Double-click an existing Microsoft Word document to open it.\n",
                "image": img,
            },
        ],
        "answer": [{"text": "Step 2: ...", "image": None}],
        "model": "gt",
        "gt_answer": [{"text": None, "image": None}],
    }
    s = _parse("mmie", row, tmp_path)
    assert s.category == "project_based_learning"
    assert s.input.structure() == "TTTI"
    assert s.input[2].text.endswith("open it.\n")
    assert s.input.images[0].source == img and not s.input.images[0].missing


def test_real_interleavedbench_row(tmp_path):
    paths = [f"wiki_images_test/489157_0_{k}.png" for k in range(5)]
    row = {
        "id": "wikihow_next_step_0_489157",
        "image": paths,
        "task_name": "wikihow_next_step",
        "conversations": [
            {"from": "human", "value": "<BEGIN> Goal. <image> Step one. <image> Next?"},
            {"from": "gpt", "value": ". Step two. <image> Step three. <image> <image>"},
        ],
    }
    s = _parse("interleavedbench", row, tmp_path)
    assert s.input.structure() == "TITIT" and s.input.texts[0] == "Goal."
    assert [r.source for r in s.gold.images] == paths[2:]
    assert s.gold.texts[0] == "Step two."


def test_real_opening_row(tmp_path):
    row = {
        "total_uid": "1502046",
        "meta_task_id": "15",
        "meta_task_name": "Multimodal Brainstorming",
        "subtask_id": "02",
        "subtask_name": "Academic Scenarios Brainstorming",
        "data_id": "46",
        "conversations": [
            {
                "input": [
                    {"image": None, "text": "<BEGIN> Brainstorm ideas."},
                    {
                        "image": "./images/Academic Scenarios Brainstorming/46-i-1.jpg",
                        "text": " <image>",
                    },
                ]
            },
            {
                "output": [
                    {
                        "image": "./images/Academic Scenarios Brainstorming/46-o-1.jpg",
                        "text": "Idea one. <image>",
                    }
                ]
            },
        ],
    }
    s = _parse("opening", row, tmp_path)
    assert s.id == "1502046" and s.input.structure() == "TI" and s.gold.structure() == "TI"
    assert s.input.texts == ["Brainstorm ideas."]
    assert s.metadata == {"meta_task_id": "15", "subtask_id": "02", "data_id": "46"}


def test_real_isg_row(tmp_path):
    row = {
        "id": "0000",
        "Category": "Art Style Transfer",
        "Query": [
            {"type": "text", "content": "Restyle."},
            {"type": "image", "content": "images/0000_q1.png"},
        ],
        "Golden": [{"type": "image", "content": "images/0000_g1.png"}],
        "predict": {"structural": {}},
    }
    s = _parse("isg", row, tmp_path)
    assert s.id == "0000_Art Style Transfer" and s.gold.structure() == "I"
    assert s.metadata["source_id"] == "0000"


def get_minisets():
    from interleave_bench.benchmarks.base import MINISET_DIR

    return MINISET_DIR


def test_bundled_sets_parse_as_json():
    for f in get_minisets().rglob("*.json*"):
        text = f.read_text(encoding="utf-8")
        if f.suffix == ".jsonl":
            assert all(json.loads(line) for line in text.splitlines())
        else:
            assert json.loads(text)
