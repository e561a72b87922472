"""The Emu3 adapter on a tiny random Emu3: one decode pass writes text, images and text under the
image-layout grammar, with aligned log-probs and masks for training."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from interleave_bench.media import ImageStore, open_image  # noqa: E402
from interleave_bench.models.base import GenerationSettings  # noqa: E402
from interleave_bench.models.emu3 import IMAGE, Emu3Adapter  # noqa: E402
from interleave_bench.models.tiny_emu3 import IMAGE_SIDE, LATENT_SIDE, build_tiny_emu3  # noqa: E402
from interleave_bench.types import ImageRef, Interleaved, Segment  # noqa: E402

GREEDY = GenerationSettings(max_new_tokens=64, max_images=2, cfg_scale=3.0)


@pytest.fixture(scope="module")
def emu3_dir(tmp_path_factory):
    # One intra-op thread: on a busy two-core machine the default thread pool makes these
    # tiny matmuls ten times slower. Restored after the module.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield build_tiny_emu3(tmp_path_factory.mktemp("emu3") / "model")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def adapter(emu3_dir):
    return Emu3Adapter(str(emu3_dir), device="cpu")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return ImageStore(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def prompts(store):
    photo = Image.new("RGB", (40, 30), (20, 180, 60))
    ref = store.put_image(photo)
    return [
        Interleaved([Segment.of_text("Show how to draw a cat, step by step")]),
        Interleaved(
            [Segment.of_text("What is in"), Segment.of_image(ref), Segment.of_text("? Draw it")]
        ),
    ]


@pytest.fixture(scope="module")
def greedy(adapter, prompts, store):
    return adapter.generate(prompts, GREEDY, store, return_trace=True)


def _visual(adapter) -> set[int]:
    return set(adapter.vocab.visual)


def test_loads_through_auto_classes(emu3_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(emu3_dir)
    model = AutoModelForImageTextToText.from_pretrained(emu3_dir)
    assert type(processor).__name__ == "Emu3Processor"
    assert type(model).__name__ == "Emu3ForConditionalGeneration"


def test_greedy_answers_interleave_text_and_decodable_images(adapter, greedy, store):
    assert adapter.family == "emu3" and adapter.model_id
    for out in greedy:
        assert out.error is None, out.error
        assert out.seconds > 0
        kinds = out.output.structure()
        assert "I" in kinds and "T" in kinds, kinds
        for ref in out.output.images:
            assert ref.sha256 is not None
            img = open_image(store.resolve(ref))
            assert img.format == "PNG"
            assert img.size == (IMAGE_SIDE, IMAGE_SIDE)
        assert all(t.strip() for t in out.output.texts)


def test_greedy_is_deterministic(adapter, prompts, store, greedy):
    again = adapter.generate(prompts, GREEDY, store, return_trace=True)
    for a, b in zip(greedy, again, strict=True):
        assert a.output == b.output
        assert a.trace.token_ids == b.trace.token_ids
        assert a.trace.logprobs == pytest.approx(b.trace.logprobs)


def test_sampling_is_seeded(adapter, prompts, store):
    settings = GenerationSettings(max_new_tokens=40, temperature=1.0, top_p=0.9, seed=7)
    a = adapter.generate(prompts[:1], settings, store, return_trace=True)[0]
    b = adapter.generate(prompts[:1], settings, store, return_trace=True)[0]
    assert a.error is None and a.trace.token_ids == b.trace.token_ids
    settings.seed = 8
    c = adapter.generate(prompts[:1], settings, store, return_trace=True)[0]
    assert c.trace.token_ids != a.trace.token_ids


@pytest.mark.parametrize("cap", [0, 1])
def test_max_images_cap(adapter, prompts, store, cap):
    settings = GenerationSettings(max_new_tokens=64, max_images=cap, cfg_scale=1.0)
    for out in adapter.generate(prompts, settings, store, return_trace=True):
        assert out.error is None
        assert len(out.output.images) == cap
        assert out.trace.token_ids.count(adapter.vocab.boi) == cap


def test_no_image_is_cut_off_by_the_token_budget(adapter, prompts, store):
    span = adapter.grammar(GREEDY).span_len
    settings = GenerationSettings(max_new_tokens=span - 1, max_images=3)
    out = adapter.generate(prompts[:1], settings, store, return_trace=True)[0]
    assert out.output.images == [] and not any(out.trace.image_mask)
    assert len(out.trace.token_ids) == span - 1


def _check_layout(adapter, trace, rows: int, cols: int) -> int:
    """Every image span is BOI, "H*W", wrapper, rows of visual tokens + EOL, EOF, EOI."""
    v = adapter.vocab
    visual = _visual(adapter)
    header = adapter.processor.tokenizer.encode(f"{rows}*{cols}", add_special_tokens=False)
    images = 0
    for kind, start, end in trace.segments:
        toks = trace.token_ids[start:end]
        if kind != IMAGE:
            assert not visual & set(toks), "visual token in text"
            assert not {v.eol, v.eof, v.eoi, v.wrapper} & set(toks)
            continue
        images += 1
        assert toks[0] == v.boi
        assert toks[1 : 1 + len(header)] == header
        assert toks[1 + len(header)] == v.wrapper
        grid = toks[2 + len(header) : -2]
        assert toks[-2:] == [v.eof, v.eoi]
        assert len(grid) == rows * (cols + 1)
        for r in range(rows):
            row = grid[r * (cols + 1) : (r + 1) * (cols + 1)]
            assert all(t in visual for t in row[:-1]) and row[-1] == v.eol
    return images


@pytest.mark.parametrize(
    "settings",
    [
        GREEDY,
        GenerationSettings(max_new_tokens=80, temperature=1.0, top_p=0.95, cfg_scale=1.0),
        GenerationSettings(max_new_tokens=60, temperature=0.7, max_image_tokens=4),
    ],
    ids=["greedy-cfg", "sampled", "small-grid"],
)
def test_constraint_holds_and_trace_is_aligned(adapter, prompts, store, settings):
    rows, cols = adapter.grid_size(settings)
    outs = adapter.generate(prompts, settings, store, return_trace=True)
    for out in outs:
        assert out.error is None
        tr = out.trace
        n = len(tr.token_ids)
        assert 0 < n <= settings.max_new_tokens
        assert len(tr.logprobs) == len(tr.image_mask) == len(tr.cond_logprobs) == n
        assert _check_layout(adapter, tr, rows, cols) == len(out.output.images) >= 1
        for img in out.output.images:
            assert open_image(store.resolve(img)).size == (cols * 8, rows * 8)
        # segments tile the positions; image_mask is True exactly on image spans
        assert tr.segments[0][1] == 0 and tr.segments[-1][2] == n
        assert all(a[2] == b[1] for a, b in zip(tr.segments, tr.segments[1:], strict=False))
        in_image = [False] * n
        for kind, start, end in tr.segments:
            for i in range(start, end):
                in_image[i] = kind == IMAGE
        assert tr.image_mask == in_image
        # log-probs: finite, <= 0, exactly 0 where the grammar forced the token
        steps = adapter.grammar(settings).replay(tr.token_ids)
        visual = _visual(adapter)
        for step, tok, lp, clp in zip(
            steps, tr.token_ids, tr.logprobs, tr.cond_logprobs, strict=True
        ):
            assert math.isfinite(lp) and lp <= 0.0 and math.isfinite(clp) and clp <= 0.0
            if step.forced is not None:
                assert tok == step.forced and lp == 0.0 and clp == 0.0
            elif tok in visual:
                assert lp < 0.0 and step.kind == "visual"
        assert tr.cfg_logprobs is (settings.cfg_scale != 1.0)
        text_pos = [i for i, m in enumerate(tr.image_mask) if not m]
        assert all(tr.logprobs[i] == tr.cond_logprobs[i] for i in text_pos)
        if tr.cfg_logprobs:
            vis_pos = [i for i, t in enumerate(tr.token_ids) if t in visual]
            assert any(tr.logprobs[i] != pytest.approx(tr.cond_logprobs[i]) for i in vis_pos)


def test_grid_size_from_settings(adapter):
    assert adapter.grid_size(GenerationSettings()) == (LATENT_SIDE, LATENT_SIDE)
    assert adapter.grid_size(GenerationSettings(image_size=16)) == (2, 2)
    assert adapter.grid_size(GenerationSettings(max_image_tokens=9)) == (3, 3)


def test_one_failing_prompt_keeps_the_others(adapter, prompts, store, tmp_path):
    missing = ImageRef(path=str(tmp_path / "nope.png"))
    bad = Interleaved([Segment.of_text("look"), Segment.of_image(missing)])
    outs = adapter.generate([bad, prompts[0]], GREEDY, store)
    assert outs[0].error is not None and outs[0].error.startswith("ImageError:")
    assert len(outs[0].output) == 0 and outs[0].trace is None
    assert outs[1].error is None and "I" in outs[1].output.structure()
    assert outs[1].trace is None  # only with return_trace=True
