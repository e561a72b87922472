"""Our decode loops against transformers' own generation, on the tiny models (float32, CPU).

The loops in ``models/janus.py`` and ``models/emu3.py`` are our own (they switch modes inside one
sequence, which ``generate`` cannot); wherever they overlap with ``generate`` they must be the same
computation. Compared quantities and tolerances:

* Janus text-to-image (prompt from ``JanusProcessor(..., generation_mode="image")``, which ends
  with ``<begin_of_image>`` so our loop starts in image mode) against
  ``generate(..., generation_mode="image")``: the image codes, exactly, greedy and sampled, at
  guidance 1 and 3 (the unconditional row is our "every token but BOS and <begin_of_image> is
  padding" prefill against theirs); the decoded pixels against the documented
  ``decode_image_tokens`` + ``processor.postprocess`` pipeline, exactly (uint8, tolerance 0).
* Janus text with images suppressed (``max_images=0``), with and without an input image: token
  ids equal ``generate(do_sample=False)`` exactly.
* Emu3 text-to-image (prompt from ``Emu3Processor(..., return_for_image_generation=True)``, the
  negative prompt likewise) against ``generate`` with the documented ``prefix_allowed_tokens_fn``
  recipe and ``negative_prompt_ids``: all tokens through ``<|image end|>`` exactly (greedy and
  sampled, guidance 1 and 3), pixels exactly (uint8, tolerance 0).
* Emu3 text with images suppressed, with and without an input image: token ids exactly.

Sampling: both sides draw with one ``torch.multinomial(probs, 1)`` per token (``generate`` from the
global generator, ours from the one passed in), which for one sample draws one exponential per
vocabulary entry and takes ``argmax(p / q)`` whatever the row shape. Seeding the global generator
and handing ours ``torch.default_generator`` therefore consumes randomness identically, so sampled
codes are compared exactly for Janus, where every image position is drawn on both sides. Emu3's
recipe also draws at its forced positions (row ends, frame end, image end: a one-token
``prefix_allowed_tokens_fn`` still goes through ``multinomial``), which our grammar emits without
a draw, so the two generators part after the first row end: sampled Emu3 tokens are compared
exactly through the first row and its end, and by layout after it; greedy Emu3 is exact
throughout. ``top_k=0`` is passed to ``generate`` because our loops have no top-k
(``GenerationConfig`` defaults it to 50, and the Emu3 recipe uses 2048).

Where we differ on purpose (asserted explicitly below):

* Text mode never emits ``<image_placeholder>``/``<end_of_image>`` (Janus) or any visual or image
  structure token (Emu3's grammar), and emits no image start once ``max_images`` is reached:
  those would start malformed images. Parity holds with those ids passed to ``generate`` as
  ``suppress_tokens``; plain ``generate`` picks an image start the tiny models favour, and agrees
  with us exactly up to that position.
* After an image Emu3's recipe forces EOS; our grammar lets text resume (interleaved answers).
  We compare through ``<|image end|>`` and assert the recipe's next token is EOS.
* transformers' Janus ``generate`` fails at ``guidance_scale=1`` (its CFG processor is only added
  above 1, and the doubled batch then reaches the output); guidance 1 is ``u + 1 * (c - u) = c``,
  so the reference there is the same ``generate`` with a logits processor keeping the
  conditional rows (``KeepConditional``).
* Emu3 guidance is computed over the visual tokens' log-softmax (ours) or the full vocabulary's
  (``UnbatchedClassifierFreeGuidanceLogitsProcessor``): the two differ by a constant over the
  allowed tokens, hence the same distribution; compared through the drawn tokens.

Not covered: the batched decoding path does not exist yet (prompts run one at a time); when it
does, each row of a batch must equal these references (issue 18, item 5).

The ``*_case`` helpers return both sides so ``tools/gpu_check.py`` can run them in bfloat16 on CUDA
and report the largest deviation.
"""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from interleave_bench.media import ImageStore  # noqa: E402
from interleave_bench.models.base import GenerationSettings  # noqa: E402
from interleave_bench.models.emu3 import Emu3Adapter, interleaved_decode  # noqa: E402
from interleave_bench.models.janus import (  # noqa: E402
    JanusAdapter,
    build_prompt_inputs,
    decode_interleaved,
    janus_token_ids,
)
from interleave_bench.types import Interleaved, Segment  # noqa: E402

T2I_PROMPT = "A red fox draws a blue house."
NEGATIVE = "the night sky"
SEED = 11


class KeepConditional:
    """A logits processor for Janus ``generate`` at guidance 1: keep the conditional rows."""

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        return scores[: scores.shape[0] // 2]


def _pixels(image: Any) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def _draw_settings(guidance: float, sampled: bool, max_new_tokens: int) -> GenerationSettings:
    return GenerationSettings(
        max_new_tokens=max_new_tokens,
        temperature=1.0 if sampled else 0.0,
        cfg_scale=guidance,
        max_images=1,
        seed=SEED,
    )


def _sampling_kwargs(sampled: bool) -> dict[str, Any]:
    if sampled:
        torch.manual_seed(SEED)
        return {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0}
    return {"do_sample": False}


# ---------------------------------------------------------------------------- Janus


def janus_image_case(model: Any, processor: Any, guidance: float, sampled: bool) -> dict[str, Any]:
    """Text-to-image both ways; the codes and pixels of each side."""
    chat = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": T2I_PROMPT}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    inputs = processor(text=chat, generation_mode="image", return_tensors="pt").to(model.device)
    settings = _draw_settings(guidance, sampled, max_new_tokens=1)
    gen = torch.default_generator if model.device.type == "cpu" else None
    if sampled and gen is None:
        gen = torch.cuda.default_generators[model.device.index or 0]
    _sampling_kwargs(sampled)  # seeds the global generator ours draws from
    with torch.no_grad():
        ours = decode_interleaved(model, processor, inputs, settings, generator=gen)
        kw = _sampling_kwargs(sampled)  # reseed: ours drew from the same global generator
        extra = {"logits_processor": [KeepConditional()]} if guidance == 1 else {}
        ref = model.generate(
            **inputs, generation_mode="image", guidance_scale=guidance, **kw, **extra
        )
        # (B, H, W, C); channels first for postprocess, which cannot tell 32x32x3 from 32 channels
        decoded = model.decode_image_tokens(ref).float().permute(0, 3, 1, 2)
    ref_image = processor.postprocess(list(decoded), return_tensors="PIL.Image.Image")
    return {
        "ours_codes": ours.image_codes[0],
        "ref_codes": ref[0].tolist(),
        "ours_pixels": _pixels(ours.parts[0]),
        "ref_pixels": _pixels(ref_image["pixel_values"][0]),
        "parts": ours.parts,
    }


def janus_text_case(
    model: Any, processor: Any, prompt_inputs: Any, max_new_tokens: int, suppress: bool
) -> dict[str, Any]:
    """Our text answer (images suppressed) and greedy ``generate``'s new tokens."""
    ids = janus_token_ids(model, processor)
    settings = GenerationSettings(max_new_tokens=max_new_tokens, max_images=0)
    inputs = prompt_inputs.to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    extra = {"suppress_tokens": [ids.boi, ids.eoi, ids.placeholder]} if suppress else {}
    with torch.no_grad():
        ours = decode_interleaved(model, processor, inputs, settings, want_trace=True)
        ref = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens, **extra)
    return {
        "ours": ours.trace.token_ids,
        "ref": ref[0, inputs["input_ids"].shape[1] :].tolist(),
        "banned": {ids.boi, ids.eoi, ids.placeholder},
    }


@pytest.fixture(scope="module")
def janus(tiny_janus):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    adapter = JanusAdapter(tiny_janus, device="cpu")
    yield adapter.model, adapter.processor
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ImageStore:
    return ImageStore(tmp_path_factory.mktemp("parity_images"))


@pytest.fixture(scope="module")
def photo_prompt(store) -> Interleaved:
    photo = store.put_image(Image.new("RGB", (40, 28), (200, 40, 10)))
    return Interleaved(
        [Segment.of_text("Describe"), Segment.of_image(photo), Segment.of_text("step by step.")]
    )


TEXT_PROMPT = Interleaved([Segment.of_text("Show me how to make tea, step by step.")])


@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "sampled"])
@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_janus_image_parity(janus, guidance, sampled):
    model, processor = janus
    case = janus_image_case(model, processor, guidance, sampled)
    n = model.config.vision_config.num_image_tokens
    assert len(case["ours_codes"]) == len(case["ref_codes"]) == n
    assert case["ours_codes"] == case["ref_codes"]
    assert case["ours_pixels"].shape == case["ref_pixels"].shape
    assert np.array_equal(case["ours_pixels"], case["ref_pixels"])
    assert isinstance(case["parts"][0], Image.Image)  # the image comes first: no text before it


def test_janus_image_parity_depends_on_guidance(janus):
    """Guards the comparisons above against a guidance that does nothing on either side."""
    model, processor = janus
    one = janus_image_case(model, processor, 1.0, False)["ref_codes"]
    three = janus_image_case(model, processor, 3.0, False)["ref_codes"]
    assert one != three


@pytest.mark.parametrize("with_image", [False, True], ids=["text", "with_image"])
def test_janus_text_parity(janus, store, photo_prompt, with_image):
    model, processor = janus
    prompt = photo_prompt if with_image else TEXT_PROMPT
    inputs = build_prompt_inputs(processor, prompt, store)
    if with_image:
        assert "pixel_values" in inputs
    case = janus_text_case(model, processor, inputs, 24, suppress=True)
    assert case["ours"] == case["ref"]
    assert len(case["ours"]) > 1

    # The deliberate difference: plain generate picks an image start (or placeholder) in text;
    # up to that position the two are the same tokens.
    plain = janus_text_case(model, processor, inputs, 24, suppress=False)["ref"]
    first = next(i for i, t in enumerate(plain) if t in case["banned"])
    assert plain[:first] == case["ours"][:first]
    assert case["ours"][first] not in case["banned"]
    assert not set(case["ours"]) & case["banned"]


# ---------------------------------------------------------------------------- Emu3


def emu3_prefix_allowed_tokens_fn(model: Any, processor: Any, height: int, width: int) -> Any:
    """transformers' documented Emu3 text-to-image constraint, as written in its model docs."""
    tok = processor.tokenizer
    visual = model.vocabulary_mapping.image_tokens
    wrapper = tok.convert_tokens_to_ids(processor.fake_token_around_image)
    eoi = tok.convert_tokens_to_ids(processor.image_end_token)
    eof = tok.convert_tokens_to_ids(processor.eof_token)
    eol = model.vocabulary_mapping.eol_token_id

    def allowed(batch_id: int, input_ids: Any) -> Any:
        position = torch.nonzero(input_ids == wrapper, as_tuple=True)[0][0]
        offset = input_ids.shape[0] - position
        if offset % (width + 1) == 0:
            return (eol,)
        if offset == (width + 1) * height + 1:
            return (eof,)
        if offset == (width + 1) * height + 2:
            return (eoi,)
        if offset == (width + 1) * height + 3:
            return (tok.eos_token_id,)
        if offset > (width + 1) * height + 3:
            return (tok.pad_token_id,)
        return visual

    return allowed


def emu3_image_case(adapter: Emu3Adapter, guidance: float, sampled: bool) -> dict[str, Any]:
    """Text-to-image both ways; the tokens through the image end and the pixels of each side."""
    model, processor = adapter.model, adapter.processor
    rows, cols = adapter.grid_size(GenerationSettings())
    area = rows * cols * adapter.spatial_factor**2
    kw = {"return_for_image_generation": True, "image_area": area, "return_tensors": "pt"}
    inputs = processor(text=[T2I_PROMPT], **kw).to(model.device)
    neg = processor(text=[NEGATIVE], **kw).to(model.device)
    height, width = inputs.pop("image_sizes")[0]
    neg.pop("image_sizes")
    span = height * (width + 1) + 2  # the grid with its row ends, the frame end, the image end
    settings = _draw_settings(guidance, sampled, max_new_tokens=span)
    grammar = adapter.grammar(settings)
    gen = torch.default_generator if model.device.type == "cpu" else None
    if sampled and gen is None:
        gen = torch.cuda.default_generators[model.device.index or 0]
    with torch.no_grad():
        _sampling_kwargs(sampled)
        ours = interleaved_decode(
            model,
            dict(inputs),
            grammar,
            temperature=settings.temperature,
            generator=gen,
            cfg_scale=guidance,
            uncond_prefix=adapter.uncond_prefix(),
        )
        ours_image = adapter.decode_grid(ours.grids[0], grammar.rows, grammar.cols)
        kw = _sampling_kwargs(sampled)
        out = model.generate(
            **inputs,
            max_new_tokens=span + 1,
            prefix_allowed_tokens_fn=emu3_prefix_allowed_tokens_fn(model, processor, height, width),
            guidance_scale=guidance,
            negative_prompt_ids=neg["input_ids"],
            negative_prompt_attention_mask=neg["attention_mask"],
            **kw,
        )
        ref = out[:, inputs["input_ids"].shape[1] :]
        decoded = model.decode_image_tokens(image_tokens=ref, height=height, width=width)
    ref_image = processor.postprocess(list(decoded.float()), return_tensors="PIL.Image.Image")
    return {
        "ours_tokens": ours.trace.token_ids,
        "ref_tokens": ref[0].tolist(),
        "ours_pixels": _pixels(ours_image),
        "ref_pixels": _pixels(ref_image["pixel_values"][0]),
        "eos": processor.tokenizer.eos_token_id,
        "grid": (rows, cols, height, width),
    }


def emu3_text_case(
    adapter: Emu3Adapter, prompt_inputs: dict[str, Any], max_new_tokens: int, suppress: bool
) -> dict[str, Any]:
    """Our text answer (images suppressed) and greedy ``generate``'s new tokens."""
    settings = GenerationSettings(max_new_tokens=max_new_tokens, max_images=0)
    grammar = adapter.grammar(settings)
    banned = (~grammar.mask("text_no_image", torch.device("cpu"))).nonzero()[:, 0].tolist()
    extra = {"suppress_tokens": banned} if suppress else {}
    with torch.no_grad():
        ours = interleaved_decode(adapter.model, prompt_inputs, grammar)
        ref = adapter.model.generate(
            **prompt_inputs, do_sample=False, max_new_tokens=max_new_tokens, **extra
        )
    return {
        "ours": ours.trace.token_ids,
        "ref": ref[0, prompt_inputs["input_ids"].shape[1] :].tolist(),
        "banned": set(banned),
    }


@pytest.fixture(scope="module")
def emu3(tiny_emu3):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Emu3Adapter(str(tiny_emu3), device="cpu", negative_prompt=NEGATIVE)
    torch.set_num_threads(threads)


@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "sampled"])
@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_emu3_image_parity(emu3, guidance, sampled):
    case = emu3_image_case(emu3, guidance, sampled)
    rows, cols, height, width = case["grid"]
    assert (rows, cols) == (height, width)
    ours, ref = case["ours_tokens"], case["ref_tokens"]
    assert len(ours) == height * (width + 1) + 2
    # The deliberate difference: the recipe ends the answer after the image; we resume text.
    assert ref[len(ours)] == case["eos"]
    if sampled:
        # Both draw identically until the first forced token (the first row end), where the
        # recipe draws and we do not (module docstring); the layout stays the same throughout.
        assert ours[: width + 1] == ref[: width + 1]
        forced = [i for i in range(len(ours)) if (i + 1) % (width + 1) == 0 or i >= len(ours) - 2]
        assert [ours[i] for i in forced] == [ref[i] for i in forced]
        return
    assert ours == ref[: len(ours)]
    assert np.array_equal(case["ours_pixels"], case["ref_pixels"])


def test_emu3_image_parity_depends_on_guidance(emu3):
    """Guards the comparisons above against a guidance that does nothing on either side."""
    one = emu3_image_case(emu3, 1.0, False)["ref_tokens"]
    three = emu3_image_case(emu3, 3.0, False)["ref_tokens"]
    assert one != three


@pytest.mark.parametrize("with_image", [False, True], ids=["text", "with_image"])
def test_emu3_text_parity(emu3, store, with_image):
    if with_image:
        ref = store.put_image(Image.new("RGB", (40, 30), (20, 180, 60)))
        prompt = Interleaved(
            [Segment.of_text("What is in"), Segment.of_image(ref), Segment.of_text("? Draw it")]
        )
    else:
        prompt = Interleaved([Segment.of_text("Show how to draw a cat, step by step")])
    inputs = emu3.prompt_inputs(prompt, store)
    if with_image:
        assert "pixel_values" in inputs
    case = emu3_text_case(emu3, inputs, 24, suppress=True)
    assert case["ours"] == case["ref"]
    assert len(case["ours"]) > 1

    # The deliberate difference: plain generate picks a token our grammar bans in text (the tiny
    # model's favourite image start); up to that position the two are the same tokens.
    plain = emu3_text_case(emu3, inputs, 24, suppress=False)["ref"]
    first = next(i for i, t in enumerate(plain) if t in case["banned"])
    assert plain[:first] == case["ours"][:first]
    assert case["ours"][first] not in case["banned"]
    assert not set(case["ours"]) & case["banned"]


# ---------------------------------------------------------------------------- regressions


def test_janus_prompt_that_opens_an_image_starts_with_that_image(janus):
    """Regression: a prompt ending with ``<begin_of_image>`` used to be continued in text mode
    (text tokens where image codes belong); it now draws that image first."""
    model, processor = janus
    inputs = processor(text=T2I_PROMPT, generation_mode="image", return_tensors="pt")
    settings = GenerationSettings(max_new_tokens=4, max_images=1)
    out = decode_interleaved(model, processor, inputs, settings, want_trace=True)
    n = model.config.vision_config.num_image_tokens
    assert out.trace.segments[0] == ("image", 0, n)
    assert out.trace.image_mask[:n] == [True] * n and not any(out.trace.image_mask[n:])
    assert isinstance(out.parts[0], Image.Image) and len(out.image_codes) == 1
    assert out.trace.token_ids[n] == janus_token_ids(model, processor).eoi


def test_emu3_prompt_that_opens_an_image_starts_with_its_grid(emu3):
    """Regression: a prompt ending with the image start, header and wrapper used to leave the
    grammar in text mode (text where visual tokens belong); the grid now comes first, and a
    header of another size or a budget too small for the image is refused by name."""
    processor = emu3.processor
    kw = {"return_for_image_generation": True, "image_area": 32 * 32, "return_tensors": "pt"}
    inputs = processor(text=[T2I_PROMPT], **kw)
    inputs.pop("image_sizes")
    settings = GenerationSettings(max_new_tokens=30, max_images=1, cfg_scale=1.0)
    grammar = emu3.grammar(settings)
    out = interleaved_decode(emu3.model, dict(inputs), grammar)
    span = grammar.rows * (grammar.cols + 1) + 2
    assert out.trace.segments[0] == ("image", 0, span)
    assert len(out.grids) >= 1 and len(out.grids[0]) == grammar.rows * grammar.cols
    assert set(out.grids[0]) <= set(emu3.vocab.visual)

    with pytest.raises(ValueError, match="cannot finish the image"):
        emu3.grammar(GenerationSettings(max_new_tokens=5)).resume(inputs["input_ids"][0].tolist())
    small = emu3.grammar(GenerationSettings(image_size=16))
    with pytest.raises(ValueError, match="does not read 2\\*2"):
        small.resume(inputs["input_ids"][0].tolist())
