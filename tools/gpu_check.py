"""CUDA smoke checks for the trainer (run on a GPU machine; CI has none).

Builds the tiny models there, then on ``cuda``: recomputed log-probs equal the rollouts' (Janus,
Emu3, text), a few GRPO steps per family (float32 and bfloat16), LoRA, QLoRA (4-bit, when
bitsandbytes is importable), warm-up, and the decode-parity comparisons of
``tests/test_decode_parity.py`` (our loops against transformers' ``generate``) in bfloat16 with
the largest deviation of each. Each check is isolated; a JSON summary goes to
``$OUT/gpu_check.json`` (or the path given).

    HF_HUB_OFFLINE=1 PYTHONPATH=. python tools/gpu_check.py [OUT.json]
    HF_HUB_OFFLINE=1 PYTHONPATH=. python tools/gpu_check.py --parity-only [OUT.json]

``--parity-only`` runs just the parity report (bfloat16 on CUDA; float32 on the CPU when there
is no GPU, where every deviation must be 0).

    HF_HUB_OFFLINE=1 PYTHONPATH=. python tools/gpu_check.py --batched [--tiny] [OUT.json]

``--batched`` measures batched Janus decoding on a random-weight model with Janus-Pro-1B's
dimensions (no download): tokens/s at batch 1, 8, 32 and 64 in bfloat16 and peak GPU memory
(target: batch 32 at least 10x batch 1). ``--tiny`` runs the same code on the tiny config on the
CPU (a dry run).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESULTS: dict[str, object] = {}


def check(name):
    def wrap(fn):
        t0 = time.perf_counter()
        try:
            RESULTS[name] = {
                "ok": True,
                **(fn() or {}),
                "seconds": round(time.perf_counter() - t0, 2),
            }
        except Exception as e:  # noqa: BLE001 - every check reports, none stops the rest
            RESULTS[name] = {
                "ok": False,
                "error": f"{type(e).__name__}: {e}",
                "trace": traceback.format_exc()[-1500:],
            }
        print(name, json.dumps(RESULTS[name])[:600], flush=True)
        return fn

    return wrap


def parity_report(janus_dir: Path, emu3_dir: Path, device: str, dtype: str) -> dict:
    """Each parity case of ``tests/test_decode_parity.py`` on ``device``/``dtype``: how many
    tokens differ (and the first index), and the largest absolute pixel difference (0-255)."""
    import importlib.util

    import numpy as np

    from interleave_bench.media import ImageStore
    from interleave_bench.models.emu3 import Emu3Adapter
    from interleave_bench.models.janus import JanusAdapter, build_prompt_inputs

    path = Path(__file__).resolve().parent.parent / "tests" / "test_decode_parity.py"
    spec = importlib.util.spec_from_file_location("decode_parity", path)
    par = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(par)

    def diff(ours: list, ref: list) -> dict:
        ref = ref[: len(ours)]
        bad = [i for i, (a, b) in enumerate(zip(ours, ref, strict=False)) if a != b]
        bad += list(range(min(len(ours), len(ref)), max(len(ours), len(ref))))
        return {"tokens": len(ours), "differ": len(bad), "first": bad[0] if bad else None}

    def pixels(case: dict, key: str = "pixels") -> int:
        a, b = case[f"ours_{key}"], case[f"ref_{key}"]
        return int(np.abs(a - b).max()) if a.shape == b.shape else -1

    report: dict = {"device": device, "dtype": dtype}
    janus = JanusAdapter(janus_dir, device=device, dtype=dtype)
    emu3 = Emu3Adapter(str(emu3_dir), device=device, dtype=dtype, negative_prompt=par.NEGATIVE)
    store = ImageStore(Path(tempfile.mkdtemp()) / "images")
    for guidance in (1.0, 3.0):
        for sampled in (False, True):
            name = f"g{guidance:g}_{'sampled' if sampled else 'greedy'}"
            case = par.janus_image_case(janus.model, janus.processor, guidance, sampled)
            report[f"janus_image_{name}"] = {
                **diff(case["ours_codes"], case["ref_codes"]),
                "max_pixel_diff": pixels(case),
            }
            case = par.emu3_image_case(emu3, guidance, sampled)
            report[f"emu3_image_{name}"] = {
                **diff(case["ours_tokens"], case["ref_tokens"]),
                "max_pixel_diff": pixels(case),
                "note": "sampled: exact only through the first row end" if sampled else "",
            }
    inputs = build_prompt_inputs(janus.processor, par.TEXT_PROMPT, store)
    case = par.janus_text_case(janus.model, janus.processor, inputs, 24, suppress=True)
    report["janus_text"] = diff(case["ours"], case["ref"])
    inputs = emu3.prompt_inputs(par.TEXT_PROMPT, store)
    case = par.emu3_text_case(emu3, inputs, 24, suppress=True)
    report["emu3_text"] = diff(case["ours"], case["ref"])
    # sampled Emu3 parts from the recipe by design after the first row end: not a deviation
    cases = [
        v
        for k, v in report.items()
        if isinstance(v, dict) and not (k.startswith("emu3_image") and k.endswith("sampled"))
    ]
    report["largest"] = {
        "differing_tokens": max(v["differ"] for v in cases),
        "max_pixel_diff": max(v.get("max_pixel_diff", 0) for v in cases),
    }
    return report


def parity_only() -> None:
    """``--parity-only``: the parity report alone, written like the full run's summary."""
    import torch

    from interleave_bench.models.tiny_emu3 import build_tiny_emu3
    from interleave_bench.models.tiny_janus import build_tiny_janus

    work = Path(tempfile.mkdtemp())
    os.environ["IBENCH_HOME"] = str(work / "home")
    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", "bfloat16") if cuda else ("cpu", "float32")
    janus, emu3 = build_tiny_janus(work / "janus"), build_tiny_emu3(work / "emu3")
    check(f"decode_parity_{dtype}_{device}")(lambda: parity_report(janus, emu3, device, dtype))
    args = [a for a in sys.argv[1:] if a != "--parity-only"]
    dest = Path(args[0]) if args else Path(os.environ.get("OUT", ".")) / "gpu_check.json"
    dest.write_text(json.dumps(RESULTS, indent=2))


def main() -> None:
    import torch

    work = Path(tempfile.mkdtemp())
    os.environ["IBENCH_HOME"] = str(work / "home")
    import importlib.metadata as md

    from interleave_bench import load_benchmark
    from interleave_bench.media import ImageStore
    from interleave_bench.models.base import GenerationSettings
    from interleave_bench.models.prompts import build_prompt
    from interleave_bench.models.tiny_emu3 import build_tiny_emu3
    from interleave_bench.models.tiny_janus import build_tiny_janus
    from interleave_bench.models.tiny_text import build_tiny_text
    from interleave_bench.train.policy_logprobs import batch_logprobs, batch_mask, old_logprobs
    from interleave_bench.train.rollout import rollout
    from interleave_bench.train.trainer import GRPOTrainer, TrainConfig, read_log

    env = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
    for pkg in ("transformers", "peft", "accelerate", "bitsandbytes"):
        try:
            env[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            env[pkg] = None
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    RESULTS["env"] = env
    print(env, flush=True)
    janus = build_tiny_janus(work / "janus")
    emu3 = build_tiny_emu3(work / "emu3")
    text = build_tiny_text(work / "text", hidden=128, layers=4)
    sample = load_benchmark("mmie:sample").samples[0]
    store = ImageStore(work / "images")
    jgen = {"max_new_tokens": 16, "temperature": 0.3, "cfg_scale": 5.0, "max_images": 2}
    egen = {"max_new_tokens": 48, "temperature": 1.5, "cfg_scale": 3.0, "max_images": 2}
    tgen = {"max_new_tokens": 24, "temperature": 1.0, "top_p": 0.9}

    def match(adapter, gen, kinds):
        settings = GenerationSettings(**gen)
        rolls = rollout(adapter, [build_prompt(sample)], settings, 4, store, seed=3)
        out = {
            "errors": [r.error for r in rolls if r.error],
            "image_tokens": sum(r.n_image_tokens for r in rolls),
        }
        for kind in kinds:
            with torch.no_grad():
                new = batch_logprobs(adapter, rolls, settings, image_logprob=kind)
            old = old_logprobs(rolls, kind, new.device)
            m = batch_mask(rolls, new.device)
            out[f"max_abs_diff_{kind}"] = float(((new - old).abs() * m).max())
        return out

    @check("logprobs_janus_cuda")
    def _():
        from interleave_bench.models.janus import JanusAdapter

        return match(JanusAdapter(janus, device="cuda", dtype="float32"), jgen, ["cond", "cfg"])

    @check("logprobs_emu3_cuda")
    def _():
        from interleave_bench.models.emu3 import Emu3Adapter

        return match(Emu3Adapter(str(emu3), device="cuda", dtype="float32"), egen, ["cond", "cfg"])

    @check("logprobs_text_cuda")
    def _():
        from interleave_bench.models.text_lm import TextLMAdapter

        return match(TextLMAdapter(text, device="cuda", dtype="float32"), tgen, ["cond"])

    def grpo(name, model, gen, steps=3, **kw):
        cfg = TrainConfig(
            model=str(model),
            output_dir=str(work / name),
            steps=steps,
            prompts_per_step=2,
            group_size=4,
            lr=kw.pop("lr", 1e-3),
            beta=0.01,
            generation=dict(gen),
            device="cuda",
            **kw,
        )
        t = GRPOTrainer(cfg, **({"reward": kw_reward} if "text" in name else {}))
        res = t.train()
        recs = read_log(res.log_path)
        return {
            "rewards": [round(r["reward_mean"], 3) for r in recs],
            "step_seconds": [round(r["seconds"], 2) for r in recs],
            "kl": [r.get("kl") for r in recs],
            "entropy": [r["entropy"] for r in recs],
            "errors": sum(r["errors"] for r in recs),
            "final": (Path(cfg.output_dir) / "final").exists(),
        }

    def kw_reward(_s, preds):
        return [len(set(p.output.text.split())) / 12 for p in preds]

    check("grpo_janus_fp32")(lambda: grpo("j32", janus, jgen))
    check("grpo_janus_bf16")(lambda: grpo("jbf", janus, jgen, dtype="bfloat16"))
    check("grpo_emu3_fp32")(lambda: grpo("e32", emu3, egen, expected="TIT", lr=5e-3))
    check("grpo_text_fp32")(lambda: grpo("text32", text, tgen))
    check("grpo_janus_lora")(lambda: grpo("jlora", janus, jgen, lora={"r": 4, "alpha": 8}))
    check("grpo_text_qlora_4bit")(
        lambda: grpo("textq", text, tgen, lora={"r": 4}, quantization="4bit", dtype="bfloat16")
    )
    check("grpo_janus_qlora_4bit")(
        lambda: grpo(
            "jq",
            janus,
            jgen,
            lora={"r": 4, "target_modules": ["q_proj", "v_proj"]},
            quantization="4bit",
            dtype="bfloat16",
        )
    )

    def warm(name, model):
        from interleave_bench.train.warmup import WarmupConfig, warmup

        res = warmup(
            WarmupConfig(
                model=str(model),
                output_dir=str(work / name),
                steps=12,
                batch_size=4,
                lr=1e-2,
                device="cuda",
            )
        )
        recs = res.records
        return {
            "loss_text": [round(recs[0]["loss_text"], 3), round(recs[-1]["loss_text"], 3)],
            "loss_image": [round(recs[0]["loss_image"], 3), round(recs[-1]["loss_image"], 3)],
            "final": str(res.final_path),
        }

    check("warmup_janus_cuda")(lambda: warm("wj", janus))
    check("warmup_emu3_cuda")(lambda: warm("we", emu3))
    check("decode_parity_bf16_cuda")(lambda: parity_report(janus, emu3, "cuda", "bfloat16"))

    dest = (
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(os.environ.get("OUT", ".")) / "gpu_check.json"
    )
    dest.write_text(json.dumps(RESULTS, indent=2))
    print(
        "ok:",
        sum(1 for v in RESULTS.values() if isinstance(v, dict) and v.get("ok")),
        "failed:",
        [k for k, v in RESULTS.items() if isinstance(v, dict) and v.get("ok") is False],
    )


def janus_pro_1b_config():
    """Janus-Pro-1B's published dimensions, written out so nothing is downloaded (random weights
    do not change the speed): a 24-layer, 2048-wide Llama language model (vocabulary 102400), a
    SigLIP-L/16 encoder at 384 px (576 image tokens) and the 16384-code VQ model."""
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

    text = LlamaConfig(
        vocab_size=102400,
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=24,
        num_attention_heads=16,
        num_key_value_heads=16,
        max_position_embeddings=16384,
    )
    vision = JanusVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=384,
        patch_size=16,
        projection_dim=2048,
        num_image_tokens=576,
    )
    vq = JanusVQVAEConfig(projection_dim=2048, image_token_embed_dim=2048)
    return JanusConfig(text_config=text, vision_config=vision, vq_config=vq)


def batched_report(batches=(1, 8, 32, 64), text_tokens=32, tiny=False) -> dict:
    """``--batched``: tokens/s of ``janus_batch.decode_batch`` at each batch size on a
    random-weight Janus-Pro-1B (bfloat16 on CUDA), and peak GPU memory. Each row is a
    text-to-image prompt (576 image codes under guidance, then up to ``text_tokens`` text
    tokens), so every batch does the same work per row. ``tiny``: the tiny Janus config on the
    CPU in float32 (a dry run of this code path where there is no GPU)."""
    import torch
    from transformers import JanusForConditionalGeneration, JanusProcessor

    from interleave_bench.models import janus_batch
    from interleave_bench.models.base import GenerationSettings
    from interleave_bench.models.tiny_janus import build_tiny_janus

    work = Path(tempfile.mkdtemp())
    small = build_tiny_janus(work / "tiny")  # its tokenizer and processor serve the prompts
    processor = JanusProcessor.from_pretrained(str(small))
    cuda = torch.cuda.is_available() and not tiny
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    if tiny:
        model = JanusForConditionalGeneration.from_pretrained(str(small), dtype=dtype)
    else:
        config = janus_pro_1b_config()
        config.image_token_id = processor.tokenizer.convert_tokens_to_ids("<image_placeholder>")
        with torch.device(device):
            model = JanusForConditionalGeneration(config).to(dtype)
        gen = model.generation_config
        tok = processor.tokenizer
        gen.bos_token_id, gen.eos_token_id = tok.bos_token_id, tok.eos_token_id
        gen.pad_token_id = tok.pad_token_id
    model = model.to(device).eval()
    prompt = processor(
        text=["A red fox draws a blue house."], generation_mode="image", return_tensors="pt"
    )
    settings = GenerationSettings(max_new_tokens=text_tokens, max_images=1, cfg_scale=5.0)
    report: dict = {"device": device, "dtype": str(dtype), "model": "tiny" if tiny else "1B"}
    janus_batch.decode_batch(model, processor, [prompt] * 2, settings)  # warm-up
    base = None
    for b in batches:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        gens = [torch.Generator(device=device).manual_seed(k) for k in range(b)]
        t0 = time.perf_counter()
        out = janus_batch.decode_batch(
            model, processor, [prompt] * b, settings, want_trace=True, generators=gens
        )
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        tokens = sum(len(r.trace.token_ids) for r in out)
        rate = tokens / seconds
        base = base or rate
        report[f"batch_{b}"] = {
            "tokens": tokens,
            "seconds": round(seconds, 2),
            "tokens_per_s": round(rate, 1),
            "vs_batch_1": round(rate / base, 2),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        }
        print(b, report[f"batch_{b}"], flush=True)
    return report


def batched_only() -> None:
    """``--batched [--tiny]``: the batched-decoding report alone (``$OUT/gpu_check.json``)."""
    os.environ["IBENCH_HOME"] = tempfile.mkdtemp()
    tiny = "--tiny" in sys.argv
    check("batched_decode_janus_pro_1b")(lambda: batched_report(tiny=tiny))
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    dest = Path(args[0]) if args else Path(os.environ.get("OUT", ".")) / "gpu_check.json"
    dest.write_text(json.dumps(RESULTS, indent=2))


if __name__ == "__main__":
    if "--batched" in sys.argv:
        batched_only()
    elif "--parity-only" in sys.argv:
        parity_only()
    else:
        main()
