"""Batched Janus decoding on the tiny Janus (float32, CPU): rows of different prompt lengths and
modes (text, an input image, a prompt that opens an image; rows opening and closing images at
different steps, rows finishing early) on one KV cache give each row its one-row answer.

Equality: tokens, image mask, segments, stop reasons and image codes exactly; recorded log-probs
within 1e-5 (padded rows run matmuls of other shapes, so the last float bits can differ); decoded
pixels within one uint8 level (the VQ decoder runs several grids at once, and a last-bit
difference can move a value across an integer before truncation)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from interleave_bench import load_benchmark  # noqa: E402
from interleave_bench.media import ImageStore  # noqa: E402
from interleave_bench.models import janus_batch  # noqa: E402
from interleave_bench.models.base import GenerationSettings  # noqa: E402
from interleave_bench.models.janus import (  # noqa: E402
    JanusAdapter,
    build_prompt_inputs,
    decode_interleaved,
)
from interleave_bench.models.prompts import build_prompt  # noqa: E402
from interleave_bench.train.config import TrainConfig  # noqa: E402
from interleave_bench.train.policy_logprobs import (  # noqa: E402
    batch_logprobs,
    batch_mask,
    old_logprobs,
)
from interleave_bench.train.rollout import rollout  # noqa: E402
from interleave_bench.types import ImageRef, Interleaved, Segment  # noqa: E402

GREEDY = GenerationSettings(max_new_tokens=24, max_images=2, cfg_scale=5.0)
SAMPLED = GenerationSettings(max_new_tokens=24, max_images=2, temperature=0.7, top_p=0.9)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models on shared cores: one torch thread (eval's worker thread inherits it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def adapter(tiny_janus):
    return JanusAdapter(tiny_janus, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return ImageStore(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def prompts(store):
    ref = store.put_image(Image.new("RGB", (40, 30), (200, 30, 30)))
    return [
        Interleaved([Segment.of_text("Show me how to make tea.")]),
        Interleaved([Segment.of_text("Step 1")]),
        Interleaved(
            [
                Segment.of_image(ref),
                Segment.of_text("Here is a picture of the result, step by step in the morning."),
            ]
        ),
        Interleaved([Segment.of_text("cut the bread")]),
    ]


@pytest.fixture(scope="module")
def inputs(adapter, prompts, store):
    """Processor inputs of the prompts, plus two text-to-image prompts of different lengths
    (they start in image mode: their unconditional rows are prefilled together, padded)."""
    opens = [
        adapter.processor(text=[text], generation_mode="image", return_tensors="pt")
        for text in ("A red fox draws a blue house.", "A cat")
    ]
    return [build_prompt_inputs(adapter.processor, p, store) for p in prompts] + opens


def _gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def _same(single, batched) -> None:
    """A batched row equals its single-row answer (see the module docstring for tolerances)."""
    a, b = single.trace, batched.trace
    assert b.token_ids == a.token_ids and b.image_mask == a.image_mask
    assert b.segments == a.segments and batched.stop_reason == single.stop_reason
    assert batched.image_codes == single.image_codes
    assert np.allclose(b.logprobs, a.logprobs, atol=1e-5, rtol=0)
    assert np.allclose(b.cond_logprobs, a.cond_logprobs, atol=1e-5, rtol=0)
    assert len(batched.parts) == len(single.parts)
    for x, y in zip(single.parts, batched.parts, strict=True):
        if isinstance(x, str):
            assert x == y
        else:
            diff = np.abs(np.asarray(x, dtype=int) - np.asarray(y, dtype=int))
            assert diff.max() <= 1


@pytest.mark.parametrize("cfg", [5.0, 1.0], ids=["guided", "unguided"])
def test_greedy_batch_rows_equal_their_single_row_answers(adapter, inputs, cfg):
    settings = GenerationSettings(**{**GREEDY.to_dict(), "cfg_scale": cfg})
    model, processor = adapter.model, adapter.processor
    single = [decode_interleaved(model, processor, x, settings, want_trace=True) for x in inputs]
    batched = janus_batch.decode_batch(model, processor, inputs, settings, want_trace=True)
    for s, b in zip(single, batched, strict=True):
        _same(s, b)
    # the batch really mixed lengths and modes: prompts of several lengths, a row drawing an
    # image while another writes text at the same step, rows ending at different steps
    assert len({x["input_ids"].shape[1] for x in inputs}) == len(inputs)
    masks = [r.trace.image_mask for r in single]
    assert any(m1[i] != m2[i] for m1 in masks for m2 in masks for i in range(min(len(m1), len(m2))))
    assert len({len(m) for m in masks}) > 1 and any(sum(m) == 0 for m in masks)
    assert single[-1].trace.image_mask[0]  # the text-to-image rows opened with an image


def test_sampled_answer_does_not_depend_on_its_batch(adapter, inputs):
    model, processor = adapter.model, adapter.processor
    x = inputs[2]
    alone = decode_interleaved(
        model, processor, x, SAMPLED, want_trace=True, generator=_gens([45])[0]
    )
    first = janus_batch.decode_batch(
        model,
        processor,
        [inputs[0], x, inputs[4]],
        SAMPLED,
        want_trace=True,
        generators=_gens([1, 45, 2]),
    )
    second = janus_batch.decode_batch(
        model, processor, [x, inputs[3]], SAMPLED, want_trace=True, generators=_gens([45, 9])
    )
    _same(alone, first[1])
    _same(alone, second[0])
    assert alone.trace.image_mask.count(True) and alone.trace.image_mask.count(False)
    assert first[0].trace.token_ids != alone.trace.token_ids  # neighbours answered otherwise
    # the seed matters: the same prompt with another seed answers otherwise
    other = janus_batch.decode_batch(
        model, processor, [x, inputs[3]], SAMPLED, want_trace=True, generators=_gens([44, 9])
    )
    assert other[0].trace.token_ids != alone.trace.token_ids


def test_generate_batch_size_does_not_change_answers_and_keeps_errors_per_prompt(
    adapter, prompts, store
):
    broken = Interleaved([Segment.of_image(ImageRef(sha256="0" * 64)), Segment.of_text("gone")])
    batch = [*prompts[:2], broken, *prompts[2:]]
    one = adapter.generate(batch, GREEDY, store, return_trace=True)
    wide = GenerationSettings(**{**GREEDY.to_dict(), "batch_size": 3})
    calls = []
    real = janus_batch.decode_batch

    def spy(model, processor, rows, *a, **k):
        calls.append(len(rows))
        return real(model, processor, rows, *a, **k)

    janus_batch.decode_batch = spy
    try:
        three = adapter.generate(batch, wide, store, return_trace=True)
    finally:
        janus_batch.decode_batch = real
    assert calls == [2, 2]  # batches of 3, the first with the prompt that cannot be built
    assert one[2].error and three[2].error  # the missing image is that prompt's error only
    del one[2], three[2]
    for a, b in zip(one, three, strict=True):
        assert a.error is None and b.error is None
        assert [s.text for s in a.output] == [s.text for s in b.output]
        assert len(a.output.images) == len(b.output.images)
        assert a.trace.token_ids == b.trace.token_ids


def test_batched_rollouts_equal_sequential_ones_and_the_teacher_forced_logprobs(adapter, tmp_path):
    store = ImageStore(tmp_path / "images")
    bench = load_benchmark("mmie:sample")
    prompts = [build_prompt(bench.samples[0]), build_prompt(bench.samples[1])]
    settings = GenerationSettings(max_new_tokens=16, temperature=0.3, max_images=2)
    batched = GenerationSettings(**{**settings.to_dict(), "batch_size": 3})  # splits groups
    seq = rollout(adapter, prompts, settings, 4, store, seed=5)
    rolls = rollout(adapter, prompts, batched, 4, store, seed=5)
    assert [r.prompt_index for r in rolls] == [0, 0, 0, 0, 1, 1, 1, 1]
    for s, r in zip(seq, rolls, strict=True):
        assert r.error is None and r.seed == s.seed
        assert r.trace.token_ids == s.trace.token_ids and r.sampled == s.sampled
    # mixed modes and lengths inside the batches
    assert any(r.n_image_tokens for r in rolls) and any(not r.n_image_tokens for r in rolls)
    assert len({len(r.trace.token_ids) for r in rolls}) > 1
    mask = batch_mask(rolls)
    for image_logprob in ("cond", "cfg"):
        with torch.no_grad():
            new = batch_logprobs(adapter, rolls, settings, image_logprob=image_logprob)
        old = old_logprobs(rolls, image_logprob)
        assert new.shape == old.shape == mask.shape
        assert float(((new - old).abs() * mask).max()) < 1e-4  # as the one-row test allows


def test_rollout_batch_size_defaults_to_the_whole_step():
    def cfg(**kw):
        return TrainConfig(model="m", output_dir="o", prompts_per_step=3, group_size=4, **kw)

    assert cfg().settings().batch_size == 12
    assert cfg(rollout_batch_size=4).settings().batch_size == 4
    with pytest.raises(ValueError, match="rollout_batch_size: must be >= 1"):
        cfg(rollout_batch_size=0)
    with pytest.raises(ValueError, match="generation.batch_size: set rollout_batch_size"):
        cfg(generation={"batch_size": 2})


def test_ibench_eval_batch_size_decodes_batches_with_the_same_answers(
    tiny_janus, tmp_path, monkeypatch
):
    import json

    from helpers import cli_json

    calls = []
    real = janus_batch.decode_batch

    def spy(model, processor, rows, *a, **k):
        calls.append(len(rows))
        return real(model, processor, rows, *a, **k)

    monkeypatch.setattr(janus_batch, "decode_batch", spy)
    texts = {}
    for bs in ("1", "3"):
        out = tmp_path / f"bs{bs}"
        # sampled: each sample draws from its own seed (from its id), at any batch size
        args = ["--limit", "3", "--max-new-tokens", "16", "--scorers", "structure",
                "--temperature", "1.0", "--seed", "5"]  # fmt: skip
        code, _ = cli_json(
            "eval", "--model", str(tiny_janus), "--bench", "isg:sample", "--out", str(out),
            "--batch-size", bs, *args,
        )  # fmt: skip
        assert code == 0
        rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
        texts[bs] = {
            r["sample_id"]: [s.get("text") or s["type"] for s in r["output"]] for r in rows
        }
    assert calls == [3]  # batch 1 ran the single-row loop, batch 3 one batched decode
    assert texts["3"] == texts["1"] and len(texts["1"]) == 3
    seeds = [json.loads(x)["settings"]["seed"] for x in (tmp_path / "bs3" / "predictions.jsonl").read_text().splitlines()]  # fmt: skip
    assert len(set(seeds)) == 3  # each prediction records the seed it drew from
