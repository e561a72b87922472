"""The paper's warm-up sources in their published layouts (ActivityNet Captions + keyframes,
GenHowTo, OpenStory++, EMOVA, JourneyDB): each bundled mini set loads into the right example
kind with the right content, a bad row stops the load with one line naming file, row and field,
the mix defaults to the paper's 0.3M:1M:1M and draws by seed, and a warm-up recipe trains on
all five formats through the CLI."""

from __future__ import annotations

import csv
import json
import shutil
import tarfile
from pathlib import Path

import pytest
import tomllib

from interleave_bench.train.warmup_data import (
    KINDS,
    PAPER_MIX,
    MixSampler,
    WarmupDataError,
    counts,
    load_sources,
)
from interleave_bench.train.warmup_sources import LOADERS, MINISETS, load_source

REPO = Path(__file__).resolve().parent.parent


def _texts(inter) -> list[str]:
    return [s.text for s in inter if s.text is not None]


def _images(inter) -> list[str]:
    return [Path(s.image.path).name for s in inter if s.image is not None]


@pytest.fixture
def copy_of(tmp_path):
    """A writable copy of one format's mini set, to corrupt."""

    def _copy(fmt: str) -> Path:
        dest = tmp_path / "src" / fmt
        shutil.copytree(MINISETS / fmt, dest)
        return dest

    return _copy


def test_activitynet_captions_become_caption_keyframe_stories(tmp_path):
    ex = load_source({"format": "activitynet_captions", "miniset": True}, tmp_path)
    released = json.loads((MINISETS / "activitynet_captions" / "train.json").read_text())
    assert [e.sample.id for e in ex] == [f"activitynet_captions:{v}" for v in released]
    for e, (vid, row) in zip(ex, released.items(), strict=True):
        assert e.kind == "interleaved"
        assert e.sample.gold.structure() == "TI" * len(row["sentences"])
        assert _texts(e.sample.gold) == [s.strip() for s in row["sentences"]]
        assert _images(e.sample.gold) == [f"{k}.jpg" for k in range(len(row["sentences"]))]
        assert all(f"keyframes/{vid}/" in s.image.path for s in e.sample.gold if s.image)


def test_genhowto_rows_become_state_action_result_triplets(tmp_path):
    ex = load_source({"format": "genhowto", "miniset": True}, tmp_path)
    first = ex[0].sample
    assert [e.kind for e in ex] == ["interleaved", "interleaved"]
    # input: the initial state (FRAME_S1 = 3 s); gold: action (21 s), prompt, result (40 s)
    assert first.input.structure() == "TI" and _images(first.input) == ["3.jpg"]
    assert first.gold.structure() == "ITI" and _images(first.gold) == ["21.jpg", "40.jpg"]
    assert _texts(first.gold) == ["a red square cut into a blue stripe"]
    # an actions file: its prompt describes the action frame, so it comes before it
    rows = list(csv.reader((MINISETS / "genhowto" / "states.train.txt").open()))
    rows[0][rows[0].index("FRAME_S2_PROMPT")] = "FRAME_AC_PROMPT"
    src = tmp_path / "gh"
    shutil.copytree(MINISETS / "genhowto" / "frames", src / "frames")
    with (src / "actions.train.txt").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    (act,) = load_source({"format": "genhowto", "path": str(src / "actions.train.txt"),
                          "limit": 1}, tmp_path)  # fmt: skip
    assert act.sample.gold.structure() == "TII" and _images(act.sample.gold) == ["21.jpg", "40.jpg"]


def test_openstory_shards_become_stories_in_time_order_without_override_repeats(tmp_path):
    ex = load_source({"format": "openstory", "miniset": True}, tmp_path)
    assert [e.sample.gold.structure() for e in ex] == ["TITITI", "TITI"]
    assert _texts(ex[0].sample.gold) == [
        "A red box sits alone on a table.",
        "A blue ribbon is placed beside the red box.",
        "A green ball rolls towards the box and the ribbon.",
    ]
    # frames come from the shard's .jpg members (the .png is the instance mask), stored once
    assert all((tmp_path / "data" / "images") in Path(s.image.path).parents
               for e in ex for s in e.sample.gold if s.image)  # fmt: skip
    # max_frames splits a long video; a lone remainder is no story
    split = load_source({"format": "openstory", "miniset": True, "max_frames": 2}, tmp_path)
    assert [e.sample.gold.structure() for e in split] == ["TITI", "TITI"]


def test_emova_rounds_keep_images_where_marked_and_leave_out_text_only_rows(tmp_path):
    ex = load_source({"format": "emova", "miniset": True}, tmp_path)
    assert [e.kind for e in ex] == ["understanding"] * 3
    assert [e.sample.id for e in ex] == ["emova:mini-0:0", "emova:mini-1:0", "emova:mini-1:1"]
    assert ex[0].sample.input.structure() == "IT"  # "<image>\nWhat shape..."
    assert ex[1].sample.input.structure() == "TI"  # "What colour...\n<image>"
    assert _texts(ex[2].sample.input) == [
        "What colour is the stripe?",
        "It is blue.",
        "Is it horizontal?",
    ]
    assert _texts(ex[2].sample.gold) == ["Yes, it runs across the picture."]


def test_journeydb_uses_the_caption_or_on_request_the_prompt(tmp_path):
    ex = load_source({"format": "journeydb", "miniset": True}, tmp_path)
    assert [e.kind for e in ex] == ["t2i"] * 3
    assert _texts(ex[0].sample.input) == ["A single red dot on a light grey background."]
    assert _images(ex[0].sample.gold) == ["mini0000.jpg"]
    prompts = load_source({"format": "journeydb", "miniset": True, "text": "prompt"}, tmp_path)
    assert _texts(prompts[0].sample.input) == ["a red dot, flat, minimal --ar 1:1"]


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _bad_activitynet(root: Path) -> tuple[dict, str]:
    _edit_json(root / "train.json", lambda d: d["v_mini000002"]["timestamps"].pop())
    return {"path": str(root / "train.json")}, "train.json video v_mini000002: field timestamps:"


def _missing_keyframe(root: Path) -> tuple[dict, str]:
    (root / "keyframes" / "v_mini000001" / "1.jpg").unlink()
    return {"path": str(root / "train.json")}, "video v_mini000001: field timestamps[1] keyframe:"


def _bad_genhowto(root: Path) -> tuple[dict, str]:
    path = root / "states.train.txt"
    path.write_text(path.read_text().replace(",5,33,12,", ",5,33,soon,"))
    return {"path": str(path)}, "states.train.txt line 3: field FRAME_AC:"


def _bad_openstory(root: Path) -> tuple[dict, str]:
    shard = root / "shards" / "000000.tar"
    bad = root / "bad.tar"
    with tarfile.open(shard) as src, tarfile.open(bad, "w") as dst:
        for m in src:
            data = src.extractfile(m).read()
            if m.name == "miniVideo02_keyframe_0-00-15-000.json":
                data = b'{"origin_caption": "x"}'
            m.size = len(data)
            dst.addfile(m, __import__("io").BytesIO(data))
    bad.replace(shard)
    return {"path": str(root / "shards")}, "member miniVideo02_keyframe_0-00-15-000: field caption:"


def _bad_emova(root: Path) -> tuple[dict, str]:
    path = root / "annotations" / "emova-mini.json"
    _edit_json(path, lambda d: d[1]["conversations"][2].update(value="<image> and again?"))
    return {"path": str(path)}, "emova-mini.json row 1: field conversations: 2 <image> marks"


def _bad_journeydb(root: Path) -> tuple[dict, str]:
    path = root / "train_anno_realease_repath.jsonl"
    lines = path.read_text().splitlines()
    row = json.loads(lines[1])
    del row["Task2"]
    lines[1] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")
    return {"path": str(path)}, "train_anno_realease_repath.jsonl line 2: field Task2:"


@pytest.mark.parametrize(
    ("fmt", "corrupt"),
    [
        ("activitynet_captions", _bad_activitynet),
        ("activitynet_captions", _missing_keyframe),
        ("genhowto", _bad_genhowto),
        ("openstory", _bad_openstory),
        ("emova", _bad_emova),
        ("journeydb", _bad_journeydb),
    ],
)
def test_a_bad_row_is_one_line_naming_file_row_and_field(fmt, corrupt, copy_of, tmp_path):
    root = copy_of(fmt)
    spec, expected = corrupt(root)
    with pytest.raises(WarmupDataError) as err:
        load_sources([{"format": fmt, **spec}], tmp_path / "work")
    message = str(err.value)
    assert expected in message and "\n" not in message
    assert str(root) in message  # the file, as the user can open it


def test_missing_images_can_be_skipped_per_source(copy_of, tmp_path):
    root = copy_of("activitynet_captions")
    _missing_keyframe(root)
    spec = {"format": "activitynet_captions", "path": str(root / "train.json"), "missing": "skip"}
    (kept,) = load_source(spec, tmp_path)
    assert kept.sample.id == "activitynet_captions:v_mini000002"


def test_unknown_format_and_missing_path_are_clear(tmp_path):
    with pytest.raises(WarmupDataError, match="expected one of activitynet_captions, genhowto"):
        load_source({"format": "vist", "path": "x"}, tmp_path)
    with pytest.raises(WarmupDataError, match="no such file or folder .*nowhere.json"):
        load_source({"format": "emova", "path": str(tmp_path / "nowhere.json")}, tmp_path)


def test_mix_defaults_to_the_papers_proportions_and_draws_by_seed():
    from interleave_bench.train.warmup import WarmupConfig

    assert WarmupConfig(model="m", output_dir="o").mix == PAPER_MIX
    sizes = {k: 7 for k in KINDS}
    sampler = MixSampler(sizes, PAPER_MIX, seed=3)
    drawn = [d for step in range(100) for d in sampler.draw(step, 46)]  # 4,600 examples
    share = {k: n / len(drawn) for k, n in counts(drawn).items()}
    assert share == pytest.approx({"interleaved": 0.3 / 2.3, "understanding": 1 / 2.3,
                                   "t2i": 1 / 2.3}, abs=0.03)  # fmt: skip
    assert MixSampler(sizes, PAPER_MIX, seed=3).draw(5, 46) == sampler.draw(5, 46)
    assert MixSampler(sizes, PAPER_MIX, seed=4).draw(5, 46) != sampler.draw(5, 46)
    only_t2i = MixSampler(sizes, {"interleaved": 0, "understanding": 0, "t2i": 1}, seed=3)
    assert {k for k, _ in only_t2i.draw(0, 20)} == {"t2i"}


def test_minisets_are_what_the_builder_writes_and_ship_in_the_wheel(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "build_warmup_minisets", REPO / "tools" / "build_warmup_minisets.py"
    )
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    for fmt in LOADERS:
        getattr(builder, {"activitynet_captions": "activitynet"}.get(fmt, fmt))(tmp_path / fmt)
        ours = {p.relative_to(tmp_path / fmt): p.read_bytes()
                for p in (tmp_path / fmt).rglob("*") if p.is_file()}  # fmt: skip
        shipped = {p.relative_to(MINISETS / fmt): p.read_bytes()
                   for p in (MINISETS / fmt).rglob("*") if p.is_file()}  # fmt: skip
        assert ours == shipped, fmt
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "minisets/**/*" in data["tool"]["setuptools"]["package-data"]["interleave_bench.train"]


def test_cli_warmup_trains_on_all_five_published_formats(tiny_janus, tmp_path):
    pytest.importorskip("torch")
    from helpers import cli_json

    out = tmp_path / "run"
    code, summary = cli_json(
        "train", "warmup", "--config", str(REPO / "train" / "tiny_janus_warmup_formats.yaml"),
        "steps=1", "batch_size=3", "save=false", f"output_dir={out}", f"model={tiny_janus}",
    )  # fmt: skip
    assert code == 0, summary
    (step,) = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    # seed 0 draws one example of each kind at step 0: all three reach the loss
    assert step["counts"] == {"interleaved": 1, "understanding": 1, "t2i": 1}
    assert step["tokens_text"] > 0 and step["tokens_image"] > 0 and step["skipped"] == 0
    assert step["loss_text"] > 0 and step["loss_image"] > 0
