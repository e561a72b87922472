"""The shared trainer base gives warm-up what GRPO had: data parallelism over processes (weights
equal a one-process run) and LoRA (base weights frozen, adapters train, loss falls); both
trainers take their config, peft, checkpoints and final save from ``TrainerBase``."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import pytest
from helpers import train_one_and_two_processes

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from interleave_bench.train.base import TrainerBase  # noqa: E402
from interleave_bench.train.checkpoints import read_log  # noqa: E402
from interleave_bench.train.config import BaseTrainConfig  # noqa: E402
from interleave_bench.train.trainer import GRPOTrainer, TrainConfig  # noqa: E402
from interleave_bench.train.warmup import WarmupConfig, WarmupTrainer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LORA = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj", "lm_head"]}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_both_trainers_share_the_base_and_its_config_keys():
    assert issubclass(GRPOTrainer, TrainerBase) and issubclass(WarmupTrainer, TrainerBase)
    shared = {"lora", "quantization", "grad_accum", "max_grad_norm", "dtype", "device", "seed"}
    for cls in (TrainConfig, WarmupConfig):
        assert issubclass(cls, BaseTrainConfig)
        assert shared <= set(cls.__dataclass_fields__)


def test_a_warmup_recipe_takes_lora_overrides():
    from interleave_bench.cli.train import _train_config

    cfg = _train_config(
        ROOT / "train" / "tiny_janus_warmup.yaml", ["lora.r=4", "lora.alpha=8"], WarmupConfig
    )
    assert isinstance(cfg, WarmupConfig) and cfg.lora == {"r": 4, "alpha": 8}


def test_warmup_with_lora_trains_only_the_adapters_and_the_loss_falls(tiny_janus, tmp_path):
    cfg = WarmupConfig(
        model=str(tiny_janus),
        output_dir=str(tmp_path / "lora"),
        steps=12,
        batch_size=4,
        lr=2e-2,
        lora=LORA,
        checkpoint_every=6,
    )
    trainer = WarmupTrainer(cfg)
    names = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    base = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" not in n}
    lora_b = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    records = trainer.train().records
    assert [r["step"] for r in records] == list(range(1, 13))
    first = sum(r["loss_text"] for r in records[:3]) / 3
    last = sum(r["loss_text"] for r in records[-3:]) / 3
    assert all(math.isfinite(r["loss"]) for r in records)
    assert last < 0.7 * first, (first, last)  # measured: 6.0 -> 3.1 (LoRA on the LM head)
    # the checkpoint holds only the adapters; the base weights never moved
    state = torch.load(tmp_path / "lora" / "checkpoint-000006" / "state.pt", weights_only=False)
    assert state["model"] and all("lora_" in k for k in state["model"])
    after = torch.load(tmp_path / "lora" / "checkpoint-000012" / "state.pt", weights_only=False)
    assert any(not torch.equal(after["model"][n], v) for n, v in lora_b.items())
    # the final folder is the merged model: base + the trained adapters, no lora_ weights left
    from interleave_bench.models.janus import JanusAdapter

    merged = JanusAdapter(tmp_path / "lora" / "final", device="cpu").model
    merged_params = dict(merged.named_parameters())
    assert not any("lora_" in n for n in merged_params)
    vq = [n for n in base if ".vqmodel." in n]
    assert vq and all(torch.equal(merged_params[n], base[n]) for n in vq if n in merged_params)
    assert not torch.equal(merged_params["lm_head.weight"], base["lm_head.base_layer.weight"])


def test_warmup_with_lora_resumes_the_same_run(tiny_janus, tmp_path):
    def cfg(name: str) -> WarmupConfig:
        return WarmupConfig(
            model=str(tiny_janus),
            output_dir=str(tmp_path / name),
            steps=4,
            batch_size=2,
            lr=1e-2,
            lora=LORA,
            checkpoint_every=2,
            save=False,
        )

    full = WarmupTrainer(cfg("full")).train().records
    WarmupTrainer(cfg("cut")).train(stop_after=3)
    resumed = WarmupTrainer(cfg("cut")).train(resume=True).records
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(full, resumed, strict=True):
        assert math.isclose(a["loss"], b["loss"], abs_tol=1e-6), (a, b)
        assert a["counts"] == b["counts"]


WORKER = """
import json, sys, torch
torch.set_num_threads(1)
from interleave_bench.train.warmup import WarmupConfig, WarmupTrainer
cfg = WarmupConfig(**json.loads(sys.argv[1]))
t = WarmupTrainer(cfg)
seen, prepare = [], t.prepare
t.prepare = lambda e: (seen.append(e.kind + ":" + e.sample.id), prepare(e))[1]
t.train()
torch.save(t.model.state_dict(), cfg.output_dir + f"/weights-{t.dist.rank}.pt")
json.dump(seen, open(cfg.output_dir + f"/seen-{t.dist.rank}.json", "w"))
"""


def test_warmup_on_two_processes_trains_like_one(tiny_janus, tmp_path):
    """torchrun with 2 CPU processes (gloo): each takes half of a step's examples, the losses are
    scaled to the whole step and gradients averaged; weights and log equal a 1-process run's.
    Float64 with atol 1e-8 for the reason given in test_trainer_features (AdamW amplifies the
    summation-order noise of float32); without the process-count scaling the logged gradient
    norm halves, without the average the ranks drift apart."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)

    def cfg(name: str) -> str:
        return json.dumps(
            asdict(
                WarmupConfig(
                    model=str(tiny_janus),
                    output_dir=str(tmp_path / name),
                    steps=2,
                    batch_size=2,
                    grad_accum=2,
                    lr=1e-2,
                    dtype="float64",
                    save=False,
                )
            )
        )

    w1 = train_one_and_two_processes(
        script, cfg("one"), cfg("two"), tmp_path / "one", tmp_path / "two", 1e-8
    )
    w0 = WarmupTrainer(
        WarmupConfig(model=str(tiny_janus), output_dir=str(tmp_path / "init"), dtype="float64")
    ).model.state_dict()
    moved = sum(not torch.allclose(w0[k], w1[k], atol=1e-6) for k in w1)
    assert moved > 10  # the run trained (so equality above is not two untouched models)
    # each process prepared (and trained on) its half of the one-process run's examples
    seen = [json.loads((tmp_path / d / f"seen-{r}.json").read_text()) for d, r in
            (("one", 0), ("two", 0), ("two", 1))]  # fmt: skip
    assert len(seen[0]) == 2 * 4 and len(seen[1]) == len(seen[2]) == 4
    assert sorted(seen[1] + seen[2]) == sorted(seen[0])
    a, b = read_log(tmp_path / "one" / "log.jsonl"), read_log(tmp_path / "two" / "log.jsonl")
    assert [r["step"] for r in b] == [1, 2]
    for x, y in zip(a, b, strict=True):
        for key in ("counts", "tokens_text", "tokens_image", "skipped", "truncated"):
            assert x[key] == y[key], key
        for key in ("loss", "loss_text", "loss_image", "grad_norm"):
            assert x[key] == pytest.approx(y[key], abs=1e-9), key
