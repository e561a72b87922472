"""``gradient_checkpointing: true`` in a GRPO step on tiny Janus and tiny Emu3: the decoder layers
really are recomputed in backward (each runs twice with grad on), and the step's loss and
gradients equal those of the same step without it (float32 on CPU; the recomputation repeats the
same kernels on the same shapes, so the tolerance is tight: 1e-6 absolute, 1e-5 relative)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from interleave_bench.train.trainer import GRPOTrainer, TrainConfig  # noqa: E402

GEN = {
    "tiny_janus": {"max_new_tokens": 12, "temperature": 0.3, "cfg_scale": 5.0, "max_images": 1},
    "tiny_emu3": {
        "max_new_tokens": 24,
        "temperature": 0.7,
        "max_image_tokens": 4,
        "cfg_scale": 3.0,
        "max_images": 1,
    },
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _one_step(model_dir, out, family: str, checkpointing: bool) -> dict:
    """Loss, gradients and grad-enabled decoder-layer MLP calls of one GRPO step."""
    cfg = TrainConfig(
        model=str(model_dir),
        output_dir=str(out),
        steps=1,
        prompts_per_step=1,
        group_size=2,
        lr=1e-3,
        beta=0.0,
        max_samples=1,
        generation=dict(GEN[family]),
        gradient_checkpointing=checkpointing,
        save_final=False,
    )
    # rewards by position in the group: always a spread, so the advantages are not zero
    trainer = GRPOTrainer(cfg, reward=lambda _s, preds: [float(i) for i in range(len(preds))])
    grads: dict[str, torch.Tensor] = {}
    calls = [0]

    # module hooks do not run again on the backward replay: count calls of each decoder
    # layer's MLP forward itself (with grad on: the policy forward and its recomputation)
    for module in trainer.model.modules():
        if type(module).__name__.endswith("DecoderLayer"):
            forward = module.mlp.forward

            def counted(*args, _forward=forward, **kwargs):
                calls[0] += torch.is_grad_enabled()
                return _forward(*args, **kwargs)

            module.mlp.forward = counted

    step = trainer.optimizer_step

    def capture():
        for name, p in trainer.model.named_parameters():
            if p.grad is not None:
                grads[name] = p.grad.detach().clone()
        return step()

    trainer.optimizer_step = capture
    record = trainer.train_step()
    assert record["errors"] == 0
    return {"loss": record["loss"], "grads": grads, "calls": calls[0]}


@pytest.mark.parametrize("family", ["tiny_janus", "tiny_emu3"])
def test_checkpointing_gives_the_same_loss_and_gradients(family, request, tmp_path):
    model_dir = request.getfixturevalue(family)
    plain = _one_step(model_dir, tmp_path / "plain", family, False)
    ckpt = _one_step(model_dir, tmp_path / "ckpt", family, True)
    assert plain["calls"] > 0
    assert ckpt["calls"] == 2 * plain["calls"]  # every layer recomputed in backward
    assert ckpt["loss"] == pytest.approx(plain["loss"], rel=1e-5, abs=1e-6)
    assert plain["grads"].keys() == ckpt["grads"].keys() and plain["grads"]
    assert any(float(g.abs().max()) > 0 for g in plain["grads"].values())
    for name, g in plain["grads"].items():
        assert torch.allclose(ckpt["grads"][name], g, rtol=1e-5, atol=1e-6), name


def test_checkpointing_is_a_typed_config_key(tmp_path):
    cfg = TrainConfig.from_yaml(
        _recipe(tmp_path), ["gradient_checkpointing=true"]
    )  # the recipe key and its override
    assert cfg.gradient_checkpointing is True
    assert TrainConfig(model="m", output_dir=str(tmp_path)).gradient_checkpointing is False


def _recipe(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(f"model: tiny:janus\noutput_dir: {tmp_path / 'out'}\n")
    return path
