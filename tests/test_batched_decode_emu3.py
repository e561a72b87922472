"""Batched Emu3 decoding on the tiny Emu3: rows of different lengths and modes (text, input image,
a prompt that opens an image) on one KV cache give each row its one-row answer; sampled rows
depend on (prompt, seed) only; recorded log-probs equal the batched teacher-forced ones."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from interleave_bench.media import ImageStore  # noqa: E402
from interleave_bench.models.base import GenerationSettings  # noqa: E402
from interleave_bench.models.emu3 import Emu3Adapter  # noqa: E402
from interleave_bench.models.emu3_decode import decode_rows, prompt_token_ids  # noqa: E402
from interleave_bench.train.policy_logprobs import (  # noqa: E402
    batch_logprobs,
    batch_mask,
    old_logprobs,
)
from interleave_bench.train.rollout import Rollout  # noqa: E402
from interleave_bench.types import ImageRef, Interleaved, Segment  # noqa: E402

# 2x2 images (a short span), guidance on, room for two images and text around them
GREEDY = GenerationSettings(max_new_tokens=40, max_images=2, cfg_scale=3.0, image_size=16)
SAMPLED = GenerationSettings(
    max_new_tokens=40, max_images=2, cfg_scale=3.0, image_size=16, temperature=0.8, top_p=0.9
)


@pytest.fixture(scope="module")
def adapter(tiny_emu3):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Emu3Adapter(str(tiny_emu3), device="cpu", dtype="float32")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return ImageStore(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def prompts(store):
    ref = store.put_image(Image.new("RGB", (40, 30), (20, 180, 60)))
    return [
        Interleaved([Segment.of_text("Draw a cat")]),
        Interleaved([Segment.of_text("Show me how to make tea in the morning, step by step")]),
        Interleaved([Segment.of_text("What is in"), Segment.of_image(ref), Segment.of_text("?")]),
    ]


@pytest.fixture(scope="module")
def inputs(adapter, prompts, store):
    """Processor inputs of the prompts, plus one that opens an image (its grid comes first)."""
    opens = adapter.processor(
        text=["a red house"],
        return_for_image_generation=True,
        image_area=16 * 16,
        return_tensors="pt",
    )
    opens.pop("image_sizes")
    return [adapter.prompt_inputs(p, store) for p in prompts] + [dict(opens)]


def _same_answer(a, b) -> None:
    (out_a, tr_a), (out_b, tr_b) = a, b
    assert tr_a.token_ids == tr_b.token_ids
    assert tr_a.image_mask == tr_b.image_mask and tr_a.segments == tr_b.segments
    assert tr_a.logprobs == pytest.approx(tr_b.logprobs, abs=1e-5)
    assert tr_a.cond_logprobs == pytest.approx(tr_b.cond_logprobs, abs=1e-5)
    assert out_a == out_b  # same text and the same image files (content-addressed)


def test_greedy_batch_equals_each_row_alone(adapter, inputs, store):
    batch = adapter.decode_batch(inputs, GREEDY, store, [None] * len(inputs))
    alone = [adapter.decode(x, GREEDY, store, None) for x in inputs]
    for a, b in zip(batch, alone, strict=True):
        _same_answer(a, b)
    traces = [tr for _, tr in batch]
    # the check is only strong if rows really differ: lengths, and modes at the same step
    assert len({len(inputs[k]["input_ids"][0]) for k in range(len(inputs))}) == len(inputs)
    assert traces[3].image_mask[0] and not traces[0].image_mask[0]
    steps = min(len(tr.token_ids) for tr in traces)
    assert any(len({tr.image_mask[t] for tr in traces}) == 2 for t in range(steps))
    assert all(out.images for out, _ in batch)


def test_rows_that_finish_early_leave_the_others_unchanged(adapter, inputs):
    """Rows with other token budgets end at other steps (they leave the cache, mid-image for
    some); the remaining rows still get their one-row answers."""
    budgets = [40, 17, 29, 23]

    def run(rows):
        grammars = []
        for k in rows:
            g = adapter.grammar(GREEDY)
            g.max_new_tokens = budgets[k]
            grammars.append(g)
        ids = [prompt_token_ids(adapter.model, inputs[k]) for k in rows]
        return decode_rows(
            adapter.model,
            ids,
            grammars,
            [None] * len(rows),
            cfg_scale=GREEDY.cfg_scale,
            uncond_prefix=adapter.uncond_prefix(),
        )

    batch = run(range(4))
    assert [len(r.trace.token_ids) for r in batch] == budgets
    for k, res in enumerate(batch):
        [alone] = run([k])
        assert res.trace.token_ids == alone.trace.token_ids and res.grids == alone.grids
        assert res.trace.logprobs == pytest.approx(alone.trace.logprobs, abs=1e-5)


def _gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_sampled_answers_depend_on_prompt_and_seed_not_on_the_batch(adapter, inputs, store):
    seeds = [11, 12, 13, 14]
    full = adapter.decode_batch(inputs, SAMPLED, store, _gens(seeds))
    other = adapter.decode_batch([inputs[3], inputs[1]], SAMPLED, store, _gens([14, 12]))
    alone = adapter.decode(inputs[2], SAMPLED, store, _gens([13])[0])
    _same_answer(full[3], other[0])
    _same_answer(full[1], other[1])
    _same_answer(full[2], alone)
    # and the seed matters: the same prompt with another seed answers otherwise
    again = adapter.decode_batch([inputs[1]], SAMPLED, store, _gens([99]))[0]
    assert again[1].token_ids != full[1][1].token_ids


def test_generate_batch_size_does_not_change_answers(adapter, prompts, store, tmp_path):
    """Prompt ``i`` samples with seed ``seed + i`` at any batch size; a prompt that fails (a
    missing image) is its own error and its batch neighbour still answers."""
    bad = Interleaved(
        [Segment.of_text("look"), Segment.of_image(ImageRef(path=str(tmp_path / "nope.png")))]
    )
    batch = [prompts[0], bad, *prompts[1:]]
    one = adapter.generate(batch, SAMPLED, store, return_trace=True)
    wide = GenerationSettings(**{**SAMPLED.to_dict(), "batch_size": 2})
    two = adapter.generate(batch, wide, store, return_trace=True)
    assert one[1].error and two[1].error and two[1].error.startswith("ImageError")
    assert not two[1].output and two[1].trace is None
    for k in (0, 2, 3):
        a, b = one[k], two[k]
        assert a.error is None and b.error is None
        _same_answer((a.output, a.trace), (b.output, b.trace))


def test_generate_takes_the_runners_seed_per_prompt(adapter, prompts, store):
    """``seeds[i]`` draws prompt ``i`` in a batch exactly as a one-prompt call seeded with it
    (what ``ibench eval`` does at batch 1), so eval answers are the same at every batch size."""
    wide = GenerationSettings(**{**SAMPLED.to_dict(), "batch_size": 3})
    seeds = [101, 57, 9]
    batch = adapter.generate(prompts, wide, store, return_trace=True, seeds=seeds)
    for prompt, seed, got in zip(prompts, seeds, batch, strict=True):
        alone = GenerationSettings(**{**SAMPLED.to_dict(), "seed": seed})
        [want] = adapter.generate([prompt], alone, store, return_trace=True)
        _same_answer((got.output, got.trace), (want.output, want.trace))


@pytest.mark.parametrize("image_logprob", ["cond", "cfg"])
def test_batched_rollout_logprobs_equal_the_teacher_forced_ones(
    adapter, inputs, store, image_logprob
):
    seeds = [21, 22, 23, 24]
    decoded = adapter.decode_batch(inputs, SAMPLED, store, _gens(seeds))
    rolls = []
    for k, ((answer, trace), seed) in enumerate(zip(decoded, seeds, strict=True)):
        grammar = adapter.grammar(SAMPLED)
        grammar.resume(inputs[k]["input_ids"][0].tolist())  # the image-opening prompt
        steps = grammar.replay(trace.token_ids)
        sampled = [st.forced is None for st in steps]
        rolls.append(Rollout(k, Interleaved(), inputs[k], answer, trace, seed, sampled=sampled))
    assert any(r.n_image_tokens for r in rolls) and any(r.n_text_tokens for r in rolls)
    mask = batch_mask(rolls)
    with torch.no_grad():
        new = batch_logprobs(adapter, rolls, SAMPLED, image_logprob=image_logprob)
        single = [batch_logprobs(adapter, [r], SAMPLED, image_logprob=image_logprob) for r in rolls]
    old = old_logprobs(rolls, image_logprob)
    assert new.shape == old.shape == mask.shape
    assert float(((new - old).abs() * mask).max()) < 1e-5
    for k, row in enumerate(single):  # the padded forward gives each row its own forward's values
        n = row.shape[1]
        assert torch.allclose(new[k, :n], row[0], atol=1e-5)
        assert not new[k, n:].any()
