"""The Janus adapter on a tiny random Janus built offline: interleaved output, stored images,
determinism, the image cap, decode traces usable by training, and per-prompt errors."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from interleave_bench.media import ImageStore, open_image  # noqa: E402
from interleave_bench.models import janus as janus_mod  # noqa: E402
from interleave_bench.models.base import GenerationSettings  # noqa: E402
from interleave_bench.models.janus import (  # noqa: E402
    JanusAdapter,
    build_prompt_inputs,
    embed_generated,
    janus_token_ids,
)
from interleave_bench.models.tiny_janus import IMAGE_SIZE, build_tiny_janus  # noqa: E402
from interleave_bench.types import ImageRef, Interleaved, Segment  # noqa: E402

GREEDY = GenerationSettings(max_new_tokens=16, max_images=2, seed=0)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    # One intra-op thread: tiny tensors gain nothing from more, and on a busy 2-core machine the
    # thread pool's waits made these tests several times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    path = build_tiny_janus(tmp_path_factory.mktemp("tiny_janus") / "model")
    yield JanusAdapter(path, device="cpu")
    torch.set_num_threads(threads)


@pytest.fixture
def store(tmp_path) -> ImageStore:
    return ImageStore(tmp_path / "images")


@pytest.fixture
def prompts(store) -> list[Interleaved]:
    photo = store.put_image(Image.new("RGB", (40, 28), (200, 40, 10)))
    return [
        Interleaved([Segment.of_text("Show me how to make tea, step by step.")]),
        Interleaved(
            [
                Segment.of_text("Describe"),
                Segment.of_image(photo),
                Segment.of_text("and draw what comes next."),
            ]
        ),
    ]


def _key(outputs) -> list[list[tuple[str, str | None]]]:
    return [[(s.kind, s.text if s.is_text else s.image.sha256) for s in o.output] for o in outputs]


def test_greedy_answers_interleave_text_and_stored_images(adapter, store, prompts):
    outputs = adapter.generate(prompts, GREEDY, store)
    assert [o.error for o in outputs] == [None, None]
    for out in outputs:
        assert out.seconds > 0
        assert any(s.is_text and s.text for s in out.output)
        assert out.output.images, out.output.structure()
        for ref in out.output.images:
            path = store.resolve(ref)
            img = open_image(path)
            assert (img.format, img.size) == ("PNG", (IMAGE_SIZE, IMAGE_SIZE))
    assert adapter.family == "janus" and adapter.model_id


@pytest.mark.parametrize(
    "settings",
    [GREEDY, GenerationSettings(max_new_tokens=16, temperature=1.0, top_p=0.9, seed=7)],
    ids=["greedy", "sampled"],
)
def test_same_seed_same_answer(adapter, store, prompts, settings):
    first = adapter.generate(prompts, settings, store)
    second = adapter.generate(prompts, settings, store)
    assert _key(first) == _key(second)


@pytest.mark.parametrize("cap", [0, 1])
def test_max_images_caps_each_answer(adapter, store, prompts, cap):
    settings = GenerationSettings(max_new_tokens=24, max_images=cap)
    for out in adapter.generate(prompts, settings, store, return_trace=True):
        assert out.error is None
        assert len(out.output.images) <= cap
        assert sum(kind == "image" for kind, _, _ in out.trace.segments) <= cap


def test_trace_is_aligned_and_matches_a_one_pass_recompute(adapter, store, prompts):
    model, processor = adapter.model, adapter.processor
    ids = janus_token_ids(model, processor)
    n_codes = model.config.vision_config.num_image_tokens
    codebook = model.config.vq_config.num_embeddings
    outputs = adapter.generate(prompts, GREEDY, store, return_trace=True)
    for prompt, out in zip(prompts, outputs, strict=True):
        tr = out.trace
        n = len(tr.token_ids)
        assert n and len(tr.logprobs) == len(tr.image_mask) == len(tr.cond_logprobs) == n
        assert all(math.isfinite(x) and x <= 0 for x in tr.logprobs + tr.cond_logprobs)
        # segments tile [0, n) and image_mask is true exactly on image segments
        assert tr.segments[0][1] == 0 and tr.segments[-1][2] == n
        assert all(a[2] == b[1] for a, b in zip(tr.segments, tr.segments[1:], strict=False))
        in_image = [False] * n
        for kind, start, end in tr.segments:
            assert start < end
            if kind == "image":
                assert end - start == n_codes
                assert tr.token_ids[start - 1] == ids.boi and tr.token_ids[end] == ids.eoi
                in_image[start:end] = [True] * (end - start)
        assert tr.image_mask == in_image
        assert sum(in_image) == n_codes * len(out.output.images)
        assert all(0 <= t < codebook for t, m in zip(tr.token_ids, tr.image_mask, strict=True) if m)
        # text has no guidance: its conditional log-prob is the sampled one
        text_pos = [i for i, m in enumerate(tr.image_mask) if not m]
        assert all(tr.cond_logprobs[i] == tr.logprobs[i] for i in text_pos)

        # A trainer rebuilds the rollout in one forward pass: the conditional log-probs must match.
        with torch.no_grad():
            inputs = build_prompt_inputs(processor, prompt, store)
            pre = model.model(**inputs, use_cache=True)
            embeds = embed_generated(model, tr.token_ids[:-1], tr.image_mask[:-1])
            rest = model.model.language_model(inputs_embeds=embeds, cache=pre.cache)
            hidden = torch.cat([pre.last_hidden_state[:, -1:], rest.last_hidden_state], 1)[0]
            for i in range(n):
                if tr.image_mask[i]:
                    logp = torch.log_softmax(model.model.generation_head(hidden[i]).float(), -1)
                    assert float(logp[tr.token_ids[i]]) == pytest.approx(
                        tr.cond_logprobs[i], abs=1e-4
                    )
                elif tr.token_ids[i] != ids.eoi:  # the forced end-of-image has log-prob 0
                    logits = model.lm_head(hidden[i]).float()
                    logits[[ids.placeholder, ids.eoi]] = float("-inf")
                    if sum(k == "image" for k, s, _ in tr.segments if s < i) >= GREEDY.max_images:
                        logits[ids.boi] = float("-inf")
                    logp = torch.log_softmax(logits, -1)
                    assert float(logp[tr.token_ids[i]]) == pytest.approx(tr.logprobs[i], abs=1e-4)


def test_without_guidance_sampled_and_conditional_logprobs_agree(adapter, store, prompts):
    settings = GenerationSettings(max_new_tokens=16, max_images=1, cfg_scale=1.0)
    out = adapter.generate(prompts[:1], settings, store, return_trace=True)[0]
    assert out.error is None and len(out.output.images) == 1
    tr = out.trace
    assert tr.logprobs == pytest.approx(tr.cond_logprobs, abs=1e-6)


def test_nucleus_keeps_only_the_top_tokens():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    gen = torch.Generator().manual_seed(0)
    token, logprob = janus_mod._pick(logits, 1.0, 1e-6, gen)
    # the nucleus decides the draw; the log-prob is the untruncated one the trainer recomputes
    assert token == 0 and logprob == pytest.approx(float(torch.log_softmax(logits, -1)[0]))
    drawn = {janus_mod._pick(logits, 1.0, 0.8, gen)[0] for _ in range(200)}
    assert drawn == {0, 1}  # p = .64, .24 cover 0.8; the tail is never drawn
    token, logprob = janus_mod._pick(logits, 0.0, 1.0, None)
    assert token == 0 and logprob == pytest.approx(float(torch.log_softmax(logits, -1)[0]))


def test_one_failing_prompt_keeps_the_others(adapter, store, prompts, monkeypatch):
    missing = Interleaved([Segment.of_text("Look"), Segment.of_image(ImageRef(path="/nope.png"))])
    outputs = adapter.generate([missing, prompts[0]], GREEDY, store)
    assert outputs[0].error.startswith("ImageError:") and len(outputs[0].output) == 0
    assert outputs[1].error is None and len(outputs[1].output) > 0

    def boom(*args, **kwargs):
        raise RuntimeError("VQ decoder exploded")

    monkeypatch.setattr(janus_mod, "decode_codes", boom)
    outputs = adapter.generate(
        prompts, GenerationSettings(max_new_tokens=16, max_images=0), store
    ) + adapter.generate(prompts[:1], GREEDY, store)
    assert [o.error for o in outputs[:2]] == [None, None]  # no image, so no decode
    assert outputs[2].error == "RuntimeError: VQ decoder exploded"


def test_decoded_images_equal_the_pil_processors_postprocess(adapter):
    """``decode_codes`` un-normalises by itself (the torchvision image processor's postprocess
    returns no PIL images); the result equals the PIL processor's ``postprocess`` pixel for pixel."""
    import numpy as np

    model, processor = adapter.model, adapter.processor
    assert type(processor.image_processor).__name__.endswith("Pil")  # the reference path here
    torch.manual_seed(0)
    codes = torch.randint(0, model.config.vq_config.num_embeddings, (16,)).tolist()
    ours = janus_mod.decode_codes(model, processor, codes)
    with torch.no_grad():
        pixels = model.decode_image_tokens(torch.tensor([codes])).permute(0, 3, 1, 2).float()
    ref = processor.postprocess(list(pixels), return_tensors="PIL.Image.Image")["pixel_values"][0]
    assert ours.mode == "RGB" and ours.size == ref.size
    assert np.array_equal(np.asarray(ours), np.asarray(ref.convert("RGB")))
