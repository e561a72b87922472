"""The pipeline adapter (chat model + image generator) against a real OpenAI-compatible server on
127.0.0.1, and with a tiny random diffusers pipeline built from configs."""

from __future__ import annotations

import base64
import json
import threading

import pytest
from fake_openai import FakeOpenAI, ImageReply, Reply, image_urls, user_text
from helpers import png_bytes

from interleave_bench.media import ImageStore, open_image
from interleave_bench.models.image_generators import (
    DiffusersImageGenerator,
    OpenAIImageGenerator,
)
from interleave_bench.models.pipeline import DEFAULT_SYSTEM_PROMPT, PipelineAdapter, parse_reply
from interleave_bench.types import Interleaved, Segment

KEY = "sk-test-pipeline-SECRET-0123456789"
REPLY = (
    "First, the bike. <image>a red bicycle leaning on a wall</image>\n"
    "Then the cat sleeps.<image>a grey cat asleep on a sofa</image> The end."
)


def adapter(server: FakeOpenAI, **kw) -> PipelineAdapter:
    gen = OpenAIImageGenerator("img-model", base_url=server.url, size="48x32", backoff_base=0.01)
    return PipelineAdapter("chat-model", server.url, generator=gen, backoff_base=0.01, **kw)


def settings(**kw):
    from interleave_bench.models.base import GenerationSettings

    return GenerationSettings(**kw)


def prompt_with_image(tmp_path, text: str = "Tell a story") -> Interleaved:
    pic = tmp_path / "in.png"
    pic.write_bytes(png_bytes(8, 8, (1, 2, 3)))
    store = ImageStore(tmp_path / "inputs")
    return Interleaved([Segment.of_text(text), Segment.of_image(store.put_file(pic))])


def test_text_and_images_in_order_and_requests(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    store = ImageStore(tmp_path / "images")
    prompt = prompt_with_image(tmp_path)
    with FakeOpenAI(lambda body: Reply(content=REPLY)) as server:
        outs = adapter(server).generate(
            [prompt], settings(temperature=0.3, max_new_tokens=77, seed=5), store
        )
    (out,) = outs
    assert out.error is None and out.seconds > 0
    assert out.output.structure() == "TITIT"
    assert out.output.texts == ["First, the bike.", "Then the cat sleeps.", "The end."]
    for ref in out.output.images:
        assert ref.sha256 and store.find(ref.sha256) is not None
        assert open_image(store.resolve(ref)).size == (48, 32)
    # the chat request: our system prompt, the input image as a data URL, the settings
    (chat,) = server.requests
    assert chat["model"] == "chat-model"
    assert chat["messages"][0] == {
        "role": "system",
        "content": DEFAULT_SYSTEM_PROMPT.replace("{max_images}", "3"),
    }
    assert user_text(chat) == "Tell a story<image>"
    expected = "data:image/png;base64," + base64.b64encode(png_bytes(8, 8, (1, 2, 3))).decode()
    assert image_urls(chat) == [expected]
    assert (chat["temperature"], chat["max_tokens"], chat["seed"]) == (0.3, 77, 5)
    assert server.headers[0]["authorization"] == f"Bearer {KEY}"
    # one Images API request per description, in base64, at the configured size
    prompts = sorted(r["prompt"] for r in server.image_requests)
    assert prompts == ["a grey cat asleep on a sofa", "a red bicycle leaning on a wall"]
    assert all(r["response_format"] == "b64_json" for r in server.image_requests)
    assert all(r["model"] == "img-model" and r["size"] == "48x32" for r in server.image_requests)


def test_custom_system_prompt_and_image_size_setting(tmp_path):
    store = ImageStore(tmp_path / "images")
    with FakeOpenAI(lambda body: Reply(content=REPLY)) as server:
        a = adapter(server, system_prompt="Draw with <image>x</image>, up to {max_images}.")
        (out,) = a.generate([Interleaved([Segment.of_text("hi")])], settings(image_size=40), store)
    assert out.error is None
    assert server.requests[0]["messages"][0]["content"] == "Draw with <image>x</image>, up to 3."
    assert {r["size"] for r in server.image_requests} == {"40x40"}
    assert all(open_image(store.resolve(r)).size == (40, 40) for r in out.output.images)


def test_transient_errors_are_retried(tmp_path):
    store = ImageStore(tmp_path / "images")
    lock = threading.Lock()
    seen = {"chat": 0, "image": 0}

    def chat(body):
        with lock:
            seen["chat"] += 1
            first = seen["chat"] == 1
        return Reply(status=500) if first else Reply(content=REPLY)

    def image(body):
        with lock:
            seen["image"] += 1
            first = seen["image"] == 1
        return ImageReply(status=503, headers={"retry-after-ms": "10"}) if first else ImageReply()

    with FakeOpenAI(chat, image_script=image) as server:
        (out,) = adapter(server).generate([Interleaved([Segment.of_text("go")])], settings(), store)
    assert out.error is None and out.output.structure() == "TITIT"
    assert len(server.requests) == 2 and len(server.image_requests) == 3


def test_one_failing_prompt_is_an_error_others_succeed(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    store = ImageStore(tmp_path / "images")

    def chat(body):
        if "poison" in user_text(body):
            return Reply(status=400, message=f"bad request for key {KEY}")
        return Reply(content=REPLY)

    def image(body):  # a refused picture fails its own prompt only
        if "forbidden" in body["prompt"]:
            return ImageReply(status=400, message="content policy")
        return ImageReply()

    prompts = [Interleaved([Segment.of_text(t)]) for t in ("ok one", "poison", "ok two", "pic")]

    def script(body):
        if "pic" in user_text(body):
            return Reply(content="See <image>a forbidden picture</image>")
        return chat(body)

    with FakeOpenAI(script, image_script=image) as server:
        outs = adapter(server).generate(prompts, settings(), store)
    assert [o.error is None for o in outs] == [True, False, True, False]
    assert outs[1].error.startswith("chat: 400") and KEY not in outs[1].error
    assert "***" in outs[1].error and len(outs[1].output) == 0
    assert "image 1" in outs[3].error and "content policy" in outs[3].error
    assert outs[0].output.structure() == outs[2].output.structure() == "TITIT"
    assert sum("poison" in user_text(r) for r in server.requests) == 1  # a 400 is not retried
    assert KEY not in json.dumps([o.error for o in outs])


def test_max_images_cap(tmp_path):
    store = ImageStore(tmp_path / "images")
    reply = "A <image>one</image> B <image>two</image> C <image>three</image> D"
    with FakeOpenAI(lambda body: Reply(content=reply)) as server:
        a = adapter(server)
        (two,) = a.generate([Interleaved([Segment.of_text("x")])], settings(max_images=2), store)
        (none,) = a.generate([Interleaved([Segment.of_text("x")])], settings(max_images=0), store)
    assert two.output.structure() == "TITIT" and two.output.texts[-1] == "C D"
    assert none.output.structure() == "T" and none.output.texts == ["A B C D"]
    assert sorted(r["prompt"] for r in server.image_requests) == ["one", "two"]
    assert server.requests[0]["messages"][0]["content"].endswith("at most 2 pictures.")


def test_missing_input_image_is_that_prompts_error(tmp_path):
    from interleave_bench.types import ImageRef

    store = ImageStore(tmp_path / "images")
    bad = Interleaved(
        [Segment.of_text("x"), Segment.of_image(ImageRef(source="a.jpg", missing=True))]
    )
    with FakeOpenAI(lambda body: Reply(content=REPLY)) as server:
        outs = adapter(server).generate(
            [bad, Interleaved([Segment.of_text("y")])], settings(), store
        )
    assert outs[0].error.startswith("input image:") and outs[1].error is None
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "reply, pieces",
    [
        ("plain", [("text", "plain")]),
        ("<IMAGE> a  cat </Image>", [("image", "a cat")]),
        ("a </image> b", [("text", "a b")]),
        ("a <image></image>\n\nb", [("text", "a\n\nb")]),
        ("a <image>half a descr", [("text", "a")]),  # cut off by the token limit
        (
            "a <image>no close <image>cat</image> z",
            [("text", "a no close"), ("image", "cat"), ("text", "z")],
        ),
    ],
)
def test_parse_reply_is_forgiving(reply, pieces):
    assert parse_reply(reply, 3).pieces == pieces


def test_parse_reply_counts_dropped_markers():
    parsed = parse_reply("<image>a</image><image>b</image><image>c", 1)
    assert parsed.descriptions == ["a"] and parsed.dropped == 2 and parsed.unclosed


def test_trace_is_refused(tmp_path):
    gen = OpenAIImageGenerator("m", base_url="http://127.0.0.1:9/v1")
    a = PipelineAdapter("c", "http://127.0.0.1:9/v1", generator=gen)
    with pytest.raises(ValueError, match="no decode traces"):
        a.generate([], settings(), ImageStore(tmp_path), return_trace=True)
    assert a.family == "pipeline" and a.model_id == "pipeline:c+openai-images:m"
    assert "system_prompt_sha256" in a.describe()


# --------------------------------------------------------------------------- diffusers


def build_tiny_stable_diffusion(folder):
    """A random Stable Diffusion with every part a few kilobytes, saved with save_pretrained."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    chars = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    tok_dir = folder / "tok"
    tok_dir.mkdir(parents=True)
    (tok_dir / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(
        str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=16
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=16,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=16,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(clip_sample=False, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder / "sd")
    return folder / "sd"


def test_diffusers_generator_draws_stored_pngs(tmp_path):
    pytest.importorskip("diffusers", reason="diffusers is not installed (pip install diffusers)")
    model = build_tiny_stable_diffusion(tmp_path / "model")
    store = ImageStore(tmp_path / "images")
    gen = DiffusersImageGenerator(model, steps=2, guidance=2.0, size=(24, 32), device="cpu")
    reply = "A park. <image>a green tree</image> Done."
    with FakeOpenAI(lambda body: Reply(content=reply)) as server:
        a = PipelineAdapter("chat-model", server.url, generator=gen)
        outs = a.generate([Interleaved([Segment.of_text("draw")])] * 2, settings(seed=3), store)
        (other,) = a.generate(
            [Interleaved([Segment.of_text("draw")])], settings(image_size=16), store
        )
    assert [o.error for o in outs] == [None, None]
    assert outs[0].output.structure() == "TIT" and a.model_id == "pipeline:chat-model+diffusers:sd"
    ref = outs[0].output.images[0]
    path = store.resolve(ref)
    assert path.suffix == ".png" and open_image(path).size == (24, 32)
    assert outs[1].output.images[0].sha256 == ref.sha256  # seeded: the same picture again
    assert open_image(store.resolve(other.output.images[0])).size == (16, 16)
    assert server.image_requests == []
