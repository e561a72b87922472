"""MMIE-Score as the official scorer runs it: InternVL's dynamic tiling (hand-computed grids and
pixel values), the model's own chat()/batch_chat() called with the right arguments (a stand-in
model class records them), and the server request (system message, placeholders, greedy, 1,024)."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import numpy as np
import pytest
from fake_openai import FakeOpenAI, image_urls
from PIL import Image
from test_score_cli import mmie_predictions, score_args

from interleave_bench import load_benchmark
from interleave_bench.judges import internvl
from interleave_bench.judges.engine import JudgeEngine
from interleave_bench.judges.internvl import (
    PHI3_CHAT_SYSTEM,
    InternVLJudge,
    choose_grid,
    pixel_values,
    tiles,
)
from interleave_bench.judges.local import _Pending
from interleave_bench.judges.local_backends import judge_setup, local_judge
from interleave_bench.judges.request import JudgeRequest, Part
from interleave_bench.scorers.mmie import MMIEScorer
from interleave_bench.scorers.protocol_files import load_mmie_prompts
from interleave_bench.types import Prediction

KEY = "sk-test-internvl"

# ------------------------------------------------------------------------------ tiling


@pytest.mark.parametrize(
    "size, max_tiles, grid, count",
    [
        ((448, 448), 12, (1, 1), 1),  # one tile, no thumbnail
        ((10, 10), 12, (1, 1), 1),  # a small image is upscaled to one tile
        ((800, 600), 12, (4, 3), 13),  # 4/3 exactly: 12 tiles + thumbnail
        ((800, 600), 6, (3, 2), 7),  # at most 6: 1.5 is the closest ratio
        ((1000, 500), 12, (2, 1), 3),  # 2:1; 4x2 ties but the image is too small for it
        ((2000, 1000), 12, (4, 2), 9),  # 2:1 tie, large enough: the later 4x2 grid wins
        ((448, 896), 12, (1, 2), 3),  # 1:2, too small for 2x4
        ((100, 1000), 12, (1, 10), 11),  # 1:10 exactly
    ],
)
def test_tile_grid_and_count_hand_computed(size, max_tiles, grid, count):
    image = Image.new("RGB", size, (30, 60, 90))
    assert choose_grid(*size, max_tiles=max_tiles) == grid
    out = tiles(image, max_tiles)
    assert len(out) == count and all(t.size == (448, 448) for t in out)
    assert pixel_values(image, max_tiles).shape == (count, 3, 448, 448)
    if count > 1:  # the last one is the bicubic thumbnail of the whole image
        thumb = image.resize((448, 448), Image.Resampling.BICUBIC)
        assert out[-1].tobytes() == thumb.tobytes()


def gradient(w: int, h: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x % 256, y % 256, (x + 3 * y) % 256], axis=-1).astype(np.uint8)


def test_pixel_values_of_one_tile_hand_computed():
    # 448x896 maps onto the 1x2 grid at its own size: no resize, the tiles are exact crops
    arr = gradient(448, 896)
    values = pixel_values(Image.fromarray(arr))
    assert values.shape == (3, 3, 448, 448) and values.dtype == np.float32
    bottom = arr[448:896].astype(np.float64)  # tile 1 is the bottom half (row-major order)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    for c in range(3):
        expected = (bottom[:, :, c] / 255.0 - mean[c]) / std[c]
        assert np.abs(values[1, c].astype(np.float64) - expected).max() < 1e-5
    # one pixel by hand, in float32 as ToTensor + Normalize compute it: (255, 192, 20)
    px = np.float32
    r, g, b = (px(v) / px(255) for v in (255, 192, 20))
    hand = [(r - px(0.485)) / px(0.229), (g - px(0.456)) / px(0.224), (b - px(0.406)) / px(0.225)]
    one = np.zeros((896, 448, 3), np.uint8)
    one[500, 7] = (255, 192, 20)
    got = pixel_values(Image.fromarray(one))[1, :, 500 - 448, 7]
    assert got.tolist() == [float(v) for v in hand]
    top = pixel_values(Image.fromarray(arr))[0, 0]
    assert top[0, 5] == np.float32((np.float32(5) / np.float32(255) - px(0.485)) / px(0.229))


# ------------------------------------------------------------------------------ chat backend


class StandInTokenizer:
    pass


class StandInInternVL:
    """Records chat()/batch_chat() as InternVL's remote code receives them; its reply is a
    function of what the real model would read (system, question, patches, pixels), so two
    calls that feed the model the same input answer the same."""

    def __init__(self) -> None:
        self.system_message = PHI3_CHAT_SYSTEM
        self.calls: list[dict] = []

    @staticmethod
    def _reply(system, question, num_patches, pixels) -> str:
        total = 0.0 if pixels is None else float(pixels.double().sum())
        return f"### Score\n{len(system) % 7}|{question}|{num_patches}|{total:.6f}"

    def chat(self, tokenizer, pixel_values, question, generation_config, history=None, **kw):
        self.calls.append(
            {
                "fn": "chat",
                "tokenizer": tokenizer,
                "system": self.system_message,
                "question": question,
                "shape": None if pixel_values is None else tuple(pixel_values.shape),
                "dtype": None if pixel_values is None else str(pixel_values.dtype),
                "num_patches_list": kw.get("num_patches_list"),
                "generation_config": dict(generation_config),
                "history": history,
            }
        )
        return self._reply(self.system_message, question, kw["num_patches_list"], pixel_values)

    def batch_chat(self, tokenizer, pixel_values, questions, generation_config, **kw):
        patches = kw["num_patches_list"]
        self.calls.append(
            {
                "fn": "batch_chat",
                "questions": list(questions),
                "shape": tuple(pixel_values.shape),
                "num_patches_list": list(patches),
                "generation_config": dict(generation_config),
            }
        )
        out, start = [], 0
        for q, n in zip(questions, patches, strict=True):
            own = pixel_values[start : start + n]
            out.append(self._reply(PHI3_CHAT_SYSTEM, q, [n], own))
            start += n
        return out


def stand_in_judge(max_batch: int = 1) -> InternVLJudge:
    model = StandInInternVL()
    return InternVLJudge(
        "stand-in/MMIE-Score",
        trust_remote_code=True,
        max_batch=max_batch,
        load=lambda path, device: (model, StandInTokenizer(), "cpu", "float32"),
    )


PROMPTS = 'SA_SYSTEM_PROMPT = "Judge SA. "\nPBL_SYSTEM_PROMPT = "Judge PBL. "\nMSR_PROMPT = "Judge MSR. "\n'


@pytest.fixture(scope="module")
def mmie_requests(tmp_path_factory):
    prompts = tmp_path_factory.mktemp("p") / "prompts.py"
    prompts.write_text(PROMPTS)
    data = load_benchmark("mmie:sample", limit=3)
    scorer = MMIEScorer(None, load_mmie_prompts(prompts, allow_unofficial=True))  # type: ignore[arg-type]
    return [scorer.build(s, Prediction(s.id, "gold", s.gold))[0] for s in data]


def image_size(url: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size


def test_chat_gets_the_official_arguments(mmie_requests):
    judge = stand_in_judge()
    req = mmie_requests[0]
    reply = asyncio.run(judge.complete(req))
    assert reply.status == "ok" and reply.text.startswith("### Score")
    (call,) = judge._model.calls
    assert call["fn"] == "chat" and isinstance(call["tokenizer"], StandInTokenizer)
    # the question is the official prompt string, one <image> per image, in order
    assert call["question"] == MMIEScorer.prompt_text(req)
    assert call["question"].count("Image-0: <image>\n") == 1
    counts = []  # tiles per image (the grid rule is hand-checked above), thumbnail included
    for u in [p.url for p in req.parts if p.kind == "image"]:
        c, r = choose_grid(*image_size(u))
        counts.append(c * r + (1 if c * r > 1 else 0))
    assert len(counts) >= 2 and call["num_patches_list"] == counts
    assert call["shape"] == (sum(counts), 3, 448, 448)
    assert call["generation_config"] == {"max_new_tokens": 1024, "do_sample": False}
    assert call["system"] == PHI3_CHAT_SYSTEM and call["history"] is None
    assert judge.describe() == {"path": "local-internvl", "max_tiles": 12, "dtype": "float32"}


def test_system_override_reaches_the_template_and_is_restored(mmie_requests):
    judge = stand_in_judge()
    plain = JudgeRequest(mmie_requests[0].parts, system=None, image_placeholder="<image>")
    asyncio.run(judge.complete(plain))
    assert judge._model.calls[0]["system"] == ""  # omitted: the template's block stays empty
    assert judge._model.system_message == PHI3_CHAT_SYSTEM


def one_image_request(color, size, text="Rate Image-0: ") -> JudgeRequest:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    parts = (Part.of_text(text), Part.of_image(url), Part.of_text("\n### Feedback\n"))
    return JudgeRequest(parts, system=PHI3_CHAT_SYSTEM, image_placeholder="<image>")


def test_batch_chat_equals_chat_one_by_one(mmie_requests):
    reqs = [
        one_image_request((200, 10, 10), (900, 300)),
        one_image_request((10, 200, 10), (64, 64)),
        one_image_request((10, 10, 200), (300, 700), text="Other Image-0: "),
    ]
    single = stand_in_judge()
    one_by_one = [asyncio.run(single.complete(r)).text for r in reqs]
    batched = stand_in_judge(max_batch=3)
    items = [_Pending(r, batched._prepare(r), None) for r in reqs]  # type: ignore[arg-type]
    replies = batched._generate(items)
    assert [r.text for r in replies] == one_by_one
    (call,) = batched._model.calls
    # 900x300: 3x1 + thumbnail; 64x64: one tile; 300x700: 2x5 (ratio 0.4) + thumbnail
    assert call["fn"] == "batch_chat" and call["num_patches_list"] == [4, 1, 11]
    assert call["shape"] == (16, 3, 448, 448)
    assert call["generation_config"] == {"max_new_tokens": 1024, "do_sample": False}
    # batch_chat replaces one <image> per question: a multi-image MMIE item goes through chat()
    mixed = [_Pending(r, batched._prepare(r), None) for r in (reqs[0], mmie_requests[0])]  # type: ignore[arg-type]
    batched._model.calls.clear()
    batched._generate(mixed)
    assert [c["fn"] for c in batched._model.calls] == ["chat", "chat"]


def internvl_folder(tmp_path, arch="InternVLChatModel"):
    folder = tmp_path / "ckpt"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architectures": [arch]}))
    return folder


def test_internvl_checkpoint_is_detected_and_needs_trust_remote_code(tmp_path, monkeypatch):
    folder = internvl_folder(tmp_path)
    with pytest.raises(ValueError, match="--trust-remote-code"):
        local_judge(str(folder))
    model = StandInInternVL()
    monkeypatch.setattr(
        internvl, "_load", lambda path, device: (model, StandInTokenizer(), "cpu", "float32")
    )
    judge = local_judge(str(folder), trust_remote_code=True)
    assert isinstance(judge, InternVLJudge)
    assert judge_setup(MMIEScorer(JudgeEngine(judge, None), None))["path"] == "local-internvl"  # type: ignore[arg-type]
    assert not internvl.is_internvl_chat(internvl_folder(tmp_path / "x", "LlavaForCausalLM"))


# ------------------------------------------------------------------------------ server request


def test_server_request_and_manifest(tmp_path, monkeypatch):
    """`ibench score` against the stand-in server: by default the system message InternVL's
    template inserts is sent and recorded; with `none` no system message is sent."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    preds, prompts = mmie_predictions(tmp_path)
    from helpers import cli_json

    with FakeOpenAI() as server:
        code, _ = cli_json(*score_args(server, preds, prompts, tmp_path / "a"), "--limit", "2")
        default = [b for b in server.requests if len(image_urls(b)) > 0]
        server.requests.clear()
        args = score_args(server, preds, prompts, tmp_path / "b")
        code2, _ = cli_json(*args, "--limit", "2", "--judge-system-prompt", "none")
        omitted = [b for b in server.requests if len(image_urls(b)) > 0]
    assert code == 0 and code2 == 0 and default and omitted
    body = default[0]
    assert body["messages"][0] == {"role": "system", "content": PHI3_CHAT_SYSTEM}
    user = body["messages"][1]["content"]
    # one text part holding the official prompt with its <image> placeholders, then the images
    assert user[0]["type"] == "text" and all(p["type"] == "image_url" for p in user[1:])
    assert user[0]["text"].count("<image>") == len(user) - 1 >= 1
    assert "Image-0: <image>\n" in user[0]["text"]
    assert body["temperature"] == 0 and body["max_tokens"] == 1024
    assert all("system" not in [m["role"] for m in b["messages"]] for b in omitted)
    # the same user messages without the system one (requests arrive in any order: compare sets)
    users = sorted(json.dumps(b["messages"][-1]["content"]) for b in default)
    assert sorted(json.dumps(b["messages"][0]["content"]) for b in omitted) == users
    a = json.loads((tmp_path / "a" / "manifest.json").read_text())["judge"]
    b = json.loads((tmp_path / "b" / "manifest.json").read_text())["judge"]
    assert a["path"] == "server" and a["system_prompt"] == PHI3_CHAT_SYSTEM
    assert a["max_tiles"] is None  # the server's setting: README's vLLM command sets 12
    assert b["system_prompt"] is None


def test_eval_manifest_records_the_judge_setup(tmp_path, monkeypatch):
    """`ibench eval` (replaying MMIE-format answers) records the same judge setup per scorer, and
    a changed system message is another run: the folder refuses it instead of mixing verdicts."""
    from helpers import cli_json, run_cli

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    preds, prompts = mmie_predictions(tmp_path)
    out = tmp_path / "run"
    args = [
        "eval", "--model", str(preds), "--model-type", "replay", "--bench", "mmie:sample",
        "--limit", "1", "--protocol", "mmie", "--protocol-file", str(prompts),
        "--allow-unofficial", "--judge-model", "MMIE-Score", "--out", str(out),
    ]  # fmt: skip
    with FakeOpenAI() as server:
        code, _ = cli_json(
            *args, "--judge-base-url", server.url, "--judge-system-prompt", "Be fair."
        )
        sent = [b for b in server.requests if image_urls(b)]
        again = run_cli(*args, "--judge-base-url", server.url)
    assert code == 0 and sent[0]["messages"][0] == {"role": "system", "content": "Be fair."}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["judge_setup"]["mmie"] == {
        "path": "server",
        "max_tiles": None,
        "system_prompt": "Be fair.",
    }
    assert again.exit_code == 1 and "different settings (judge)" in again.stderr, again.stderr
