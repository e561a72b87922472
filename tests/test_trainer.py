"""The GRPO trainer on the tiny Janus (CPU): recorded log-probs equal the one-pass recompute, a
structure reward ("exactly one image, then text") rises, and a resumed run continues the same run.

The tiny model's logits are near-uniform at temperature 1 (random weights), so the test samples at
temperature 0.3, where its TIT/TITIT habit shows and groups have reward spread to learn from.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from interleave_bench import load_benchmark  # noqa: E402
from interleave_bench.media import ImageStore  # noqa: E402
from interleave_bench.models.base import GenerationSettings  # noqa: E402
from interleave_bench.models.janus import JanusAdapter, janus_token_ids  # noqa: E402
from interleave_bench.models.prompts import build_prompt  # noqa: E402
from interleave_bench.train.policy_logprobs import (  # noqa: E402
    batch_logprobs,
    batch_mask,
    old_logprobs,
)
from interleave_bench.train.rollout import rollout  # noqa: E402
from interleave_bench.train.trainer import GRPOTrainer, TrainConfig, read_log  # noqa: E402

RECIPES = Path(__file__).resolve().parent.parent / "train"
GEN = {"max_new_tokens": 16, "temperature": 0.3, "top_p": 1.0, "cfg_scale": 5.0, "max_images": 2}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("image_logprob", ["cond", "cfg"])
def test_recomputed_logprobs_match_the_rollout(tiny_janus, tmp_path, image_logprob):
    adapter = JanusAdapter(tiny_janus, device="cpu")
    store = ImageStore(tmp_path / "images")
    # a benchmark prompt with images: their features go through the vision path too
    sample = load_benchmark("mmie:sample").samples[0]
    prompts = [build_prompt(sample)]
    assert prompts[0].images
    settings = GenerationSettings(**{**GEN, "temperature": 0.1})
    rolls = rollout(adapter, prompts, settings, 4, store, seed=3)
    assert [r.prompt_index for r in rolls] == [0, 0, 0, 0]
    assert any(r.n_image_tokens for r in rolls), "no image sampled: the check would be weak"
    mask = batch_mask(rolls)
    eoi = janus_token_ids(adapter.model, adapter.processor).eoi
    for r in rolls:  # the forced <end_of_image> is out of the loss, sampled tokens are in
        tr = r.trace
        assert r.sampled == [
            m or t != eoi for t, m in zip(tr.token_ids, tr.image_mask, strict=True)
        ]
    with torch.no_grad():
        new = batch_logprobs(adapter, rolls, settings, image_logprob=image_logprob)
    old = old_logprobs(rolls, image_logprob)
    assert new.shape == old.shape == mask.shape
    assert float(((new - old).abs() * mask).max()) < 1e-4
    # the two image distributions differ (CFG scale 5), so the option matters
    cond, cfg = old_logprobs(rolls, "cond"), old_logprobs(rolls, "cfg")
    assert not torch.allclose(cond, cfg)


def _config(tmp_path, name: str, **kw) -> TrainConfig:
    return TrainConfig(
        model=str(kw.pop("model")),
        output_dir=str(tmp_path / name),
        steps=10,
        prompts_per_step=2,
        group_size=4,
        lr=1e-3,
        beta=0.01,
        generation=dict(GEN),
        seed=0,
        **kw,
    )


def _stable(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if "seconds" not in k}


def _same(a, b) -> bool:
    """Equal, floats within 1e-6 (NaN equal to NaN), recursively through lists and dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return (a != a and b != b) or abs(a - b) <= 1e-6
    return a == b


def test_structure_reward_rises_and_resume_continues_the_run(tiny_janus, tmp_path):
    cfg = _config(tmp_path, "run", model=tiny_janus, checkpoint_every=8)
    result = GRPOTrainer(cfg).train()
    records = read_log(result.log_path)
    assert [r["step"] for r in records] == list(range(1, 11))
    rewards = [r["reward_mean"] for r in records]
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    print(f"reward curve {rewards[0]:.3f} -> {rewards[-1]:.3f} in {result.seconds:.1f}s")
    assert last > first + 0.1, rewards
    for key in ("kl", "clip_frac", "frac_zero_spread", "text_tokens", "image_tokens", "loss"):
        assert key in records[-1]
    assert all(r["errors"] == 0 for r in records)

    # resume: a copy of the run interrupted after the step-8 checkpoint, with a stray record
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "run", resumed)
    shutil.rmtree(resumed / "checkpoint-000010")
    with open(resumed / "log.jsonl", "a") as f:
        f.write(json.dumps({"step": 999}) + "\n")
    trainer = GRPOTrainer(_config(tmp_path, "resumed", model=tiny_janus, checkpoint_every=8))
    again = read_log(trainer.train(resume=True).log_path)
    assert [r["step"] for r in again] == list(range(1, 11))
    for got, want in zip(again[8:], records[8:], strict=True):
        assert _same(_stable(got), _stable(want)), (got, want)


# --------------------------------------------------------------------------- Emu3


EMU3_GEN = {
    "max_new_tokens": 60,
    "temperature": 0.7,
    "max_image_tokens": 4,
    "cfg_scale": 3.0,
    "max_images": 2,
}


@pytest.mark.parametrize("image_logprob", ["cond", "cfg"])
def test_emu3_recomputed_logprobs_match_the_rollout(tiny_emu3, tmp_path, image_logprob):
    from interleave_bench.models.emu3 import Emu3Adapter

    adapter = Emu3Adapter(str(tiny_emu3), device="cpu", dtype="float32")
    store = ImageStore(tmp_path / "images")
    prompts = [build_prompt(load_benchmark("mmie:sample").samples[0])]
    settings = GenerationSettings(**EMU3_GEN)
    rolls = rollout(adapter, prompts, settings, 3, store, seed=5)
    assert all(r.error is None for r in rolls)
    assert any(r.n_image_tokens for r in rolls)
    mask = batch_mask(rolls)
    with torch.no_grad():
        new = batch_logprobs(adapter, rolls, settings, image_logprob=image_logprob)
    old = old_logprobs(rolls, image_logprob)
    assert float(((new - old).abs() * mask).max()) < 1e-4


def test_emu3_grpo_smoke(tiny_emu3, tmp_path):
    cfg = TrainConfig(
        model=str(tiny_emu3),
        output_dir=str(tmp_path / "emu3"),
        steps=2,
        prompts_per_step=1,
        group_size=3,
        lr=1e-3,
        beta=0.01,
        process_weight=0.5,
        generation=dict(EMU3_GEN),
    )
    records = read_log(GRPOTrainer(cfg).train().log_path)
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert r["errors"] == 0 and r["image_tokens"] > 0
        assert all(x is not None and 0 <= x <= 1 for x in r["rewards"])
        assert torch.isfinite(torch.tensor([r["loss"], r["kl"]])).all()


def test_train_cli_runs_the_tiny_recipe(tmp_path):
    from helpers import cli_json, run_cli

    recipe = Path(__file__).resolve().parent.parent / "train" / "tiny_janus_grpo.yaml"
    code, summary = cli_json(
        "train",
        "grpo",
        "--config",
        str(recipe),
        "steps=2",
        f"output_dir={tmp_path / 'run'}",
        "generation.max_new_tokens=12",
    )
    assert code == 0 and summary["steps"] == 2
    assert summary["reward_first"] is not None and summary["reward_last"] is not None
    assert (tmp_path / "run" / "log.jsonl").read_text().count("\n") == 2
    r = run_cli("train", "grpo", "--config", str(recipe), "warp_speed=9")
    assert r.exit_code == 2 and "warp_speed: unknown key" in r.stderr
    r = run_cli("train", "grpo", "--config", str(recipe), "steps")
    assert r.exit_code == 2 and "expected key=value" in r.stderr


def test_batched_teacher_forcing_equals_one_forward_per_rollout(tiny_janus, tmp_path):
    """Rollouts of different lengths (one with prompt images) in one right-padded forward give
    each rollout the hidden states of its own unpadded forward."""
    from interleave_bench.models.janus import teacher_forced_hidden
    from interleave_bench.train.policy_logprobs import janus_context

    adapter = JanusAdapter(tiny_janus, device="cpu")
    store = ImageStore(tmp_path / "images")
    bench = load_benchmark("mmie:sample")
    prompts = [build_prompt(bench.samples[0]), build_prompt(bench.samples[1])]
    settings = GenerationSettings(**GEN)
    rolls = [r for r in rollout(adapter, prompts, settings, 2, store, seed=5) if r.trace.token_ids]
    contexts = [janus_context(adapter.model, r) for r in rolls]
    lengths = {c[0].shape[1] + c[1].shape[1] for c in contexts}
    assert len(lengths) > 1, "all contexts the same length: padding would not be exercised"
    with torch.no_grad():
        batched = teacher_forced_hidden(adapter.model, contexts)
        single = [teacher_forced_hidden(adapter.model, [c])[0] for c in contexts]
    for b, s, r in zip(batched, single, rolls, strict=True):
        assert b.shape == s.shape == (len(r.trace.token_ids), s.shape[-1])
        assert torch.allclose(b, s, atol=1e-5), float((b - s).abs().max())
