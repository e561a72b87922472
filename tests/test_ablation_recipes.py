"""The paper's ablation grid as recipes (issue 14 item 4): every recipe under ``train/ablations``
loads through its ``base:``, matches its row of the paper's table, and runs 2 GRPO steps on a tiny
model with a real judge endpoint for r_t (``fake_openai``) and a tiny random CLIP for r_v;
``ibench train compare`` puts the runs next to the paper's rows.

On CPU the QLoRA recipes run as LoRA (``quantization: null``): bitsandbytes 4-bit needs CUDA.
ImageReward is not installed here, so every r_v runs on the CLIP backend in the 2-step runs (the
recipes' backend choice is checked when they load)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from fake_openai import FakeOpenAI, Reply  # noqa: E402
from helpers import run_cli  # noqa: E402
from test_offline_scorers import _write_tiny_clip  # noqa: E402

from interleave_bench.bundled import paper_ablations, recipes  # noqa: E402
from interleave_bench.cli.train import _train_config  # noqa: E402
from interleave_bench.config import ConfigError  # noqa: E402
from interleave_bench.runs import RunFolder  # noqa: E402
from interleave_bench.train.ablations import paper_row, read_paper, setting_of  # noqa: E402
from interleave_bench.train.config import TrainConfig, read_recipe  # noqa: E402
from interleave_bench.train.recipe_rewards import validate_rewards  # noqa: E402
from interleave_bench.types import Result, RunResults  # noqa: E402

GRID = Path(__file__).resolve().parent.parent / "train" / "ablations"
MODELS = ("janus_pro_1b", "emu3")
#: recipe (without the model prefix) -> (paper study, MMIE)
EXPECTED = {
    "paper": ("stages", 59.50),
    "r_format": ("rewards", 53.56),
    "r_format_text": ("rewards", 54.62),
    "no_process": ("rewards", 57.83),
    "g2_no_kl": ("kl_group", 53.04),
    "g2": ("kl_group", 55.14),
    "clip": ("kl_group", 56.94),
    "qlora": ("qlora", 57.27),
}
TINY = {
    "janus_pro_1b": {"max_new_tokens": 6, "temperature": 0.3, "max_images": 1},
    "emu3": {"max_new_tokens": 20, "temperature": 0.7, "max_image_tokens": 4, "max_images": 1},
}


def grid_files() -> list[Path]:
    return sorted(p for p in GRID.glob("*.yaml"))


def test_the_grid_covers_the_papers_grpo_rows_on_both_models():
    paper = read_paper(paper_ablations())
    assert {p.stem for p in grid_files()} == {f"{m}_{v}" for m in MODELS for v in EXPECTED}
    for path in grid_files():
        model, variant = next(
            (m, path.stem[len(m) + 1 :]) for m in MODELS if path.stem.startswith(m)
        )
        cfg = TrainConfig.from_yaml(path)
        assert asdict(_train_config(path, [])) == asdict(cfg)  # the CLI reads the same recipe
        validate_rewards(cfg)
        assert cfg.generation["cfg_scale"] == 3.0, path.name  # the paper's CFG
        assert cfg.output_dir.endswith(variant.replace("_", "-")), path.name
        setting, qlora = setting_of(asdict(cfg))
        row = paper_row(setting, qlora, paper)
        assert row is not None, (path.name, setting)
        assert (row.study, row.mmie) == EXPECTED[variant], path.name
    # every GRPO row of the paper's table has a recipe (the stages rows without GRPO do not)
    names = {p.stem for p in grid_files()}
    covered = {mmie for _, mmie in EXPECTED.values()}
    assert all(r.mmie in covered for r in paper if r.setting["r_format"] == "yes")
    assert names and recipes().keys() >= names  # listed by ibench train recipes


def test_ablation_recipes_differ_from_their_base_only_where_the_paper_does():
    base = read_recipe(GRID / "janus_pro_1b_paper.yaml")
    g2 = read_recipe(GRID / "janus_pro_1b_g2_no_kl.yaml")
    changed = {k for k in set(base) | set(g2) if base.get(k) != g2.get(k)}
    assert changed == {"output_dir", "group_size", "beta"}
    qlora = TrainConfig.from_yaml(GRID / "emu3_qlora.yaml")
    assert qlora.quantization == "4bit" and qlora.lora["r"] == 64


def test_base_key_merges_mappings_and_reports_bad_bases(tmp_path):
    (tmp_path / "a.yaml").write_text(
        "model: m\noutput_dir: o\ngeneration: {max_new_tokens: 9, cfg_scale: 5.0}\n"
        "rewards: [{protocol: structure}]\n"
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yaml").write_text(
        "base: ../a.yaml\ngeneration: {cfg_scale: 3.0}\nrewards: [{protocol: clip_score}]\n"
    )
    cfg = TrainConfig.from_yaml(tmp_path / "sub" / "b.yaml", ["steps=3"])
    assert cfg.generation == {"max_new_tokens": 9, "cfg_scale": 3.0}  # merged key by key
    assert cfg.rewards == [{"protocol": "clip_score"}] and cfg.steps == 3  # lists replace
    (tmp_path / "loop.yaml").write_text("base: loop2.yaml\n")
    (tmp_path / "loop2.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="leads back to itself"):
        read_recipe(tmp_path / "loop.yaml")
    (tmp_path / "lost.yaml").write_text("base: nowhere.yaml\nmodel: m\n")
    with pytest.raises(ConfigError, match="lost.yaml: base: nowhere.yaml is not a file"):
        read_recipe(tmp_path / "lost.yaml")
    result = run_cli("train", "grpo", "--config", str(tmp_path / "lost.yaml"))
    assert result.exit_code == 1 and "nowhere.yaml is not a file" in result.output
    assert "Traceback" not in result.output


def critic(body: dict) -> Reply:
    return Reply(content='{"reason": "on topic", "score": 7}')


def tiny_recipe(path: Path, model_dir: Path, out: Path, url: str, clip: Path) -> TrainConfig:
    """The recipe with tiny-model overrides: 2 steps, one prompt, tiny lengths, local judge and
    CLIP, LoRA instead of QLoRA (CPU)."""
    data = read_recipe(path)
    family = "emu3" if path.stem.startswith("emu3") else "janus_pro_1b"
    for spec in data.get("rewards") or []:
        options = spec.setdefault("options", {})
        if spec["protocol"] == "text_critic":
            options.update(judge_base_url=url, judge_model="critic", max_retries=0)
        if spec["protocol"] == "visual_alignment":
            options.pop("imagereward_model", None)
            options.update(backend="clip", clip_model=str(clip))
    data.update(
        model=str(model_dir),
        output_dir=str(out),
        benchmark="mmie:sample",
        max_samples=2,
        steps=2,
        prompts_per_step=1,
        grad_accum=1,
        dynamic_sampling=False,
        checkpoint_every=0,
        save_final=False,
        dtype="float32",
        device="cpu",
        quantization=None,
        generation={**data["generation"], **TINY[family]},
    )
    if data.get("lora"):
        data["lora"] = {"r": 4, "alpha": 8, "dropout": 0.0}
    return TrainConfig(**data)


def test_every_ablation_recipe_runs_two_steps_on_a_tiny_model(
    tiny_janus, tiny_emu3, tmp_path, monkeypatch
):
    import copy

    from interleave_bench.models.loading import load_adapter
    from interleave_bench.train.trainer import GRPOTrainer

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    # the two tiny models load once; each run trains its own copy (loading costs ~1.3 s a run)
    loaded = {
        str(m): load_adapter(str(m), device="cpu", dtype="float32") for m in (tiny_janus, tiny_emu3)
    }
    monkeypatch.setattr(
        GRPOTrainer, "load_policy", lambda self: copy.deepcopy(loaded[self.cfg.model])
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    clip = tmp_path / "clip"
    _write_tiny_clip(clip)
    runs, images = {}, 0
    try:
        with FakeOpenAI(critic) as server:
            for path in grid_files():
                model = tiny_emu3 if path.stem.startswith("emu3") else tiny_janus
                out = tmp_path / path.stem
                cfg = tiny_recipe(path, model, out, server.url, clip)
                records = GRPOTrainer(cfg).train().records
                assert [r["step"] for r in records] == [1, 2], path.name
                for r in records:
                    assert torch.isfinite(torch.tensor(r["loss"])), path.name
                    assert r["errors"] == 0, (path.name, r.get("rollout_errors"))
                images += sum(r["image_tokens"] > 0 for r in records)
                if cfg.advantage != "outcome":  # process supervision ran on scorer rewards
                    assert any("reward/process/steps" in r for r in records), path.name
                runs[path.stem] = out
            assert server.requests  # r_t went through the judge endpoint
            assert images >= 8  # r_v and image steps had images to score
    finally:
        torch.set_num_threads(threads)

    # ibench train compare: the runs next to the paper's rows, 80 columns, --json
    # (every tiny run scores r_v with CLIP, so the qlora run, LoRA on CPU, matches no row)
    picked = [runs["janus_pro_1b_r_format"], runs["emu3_clip"], runs["janus_pro_1b_g2"]]
    mmie = Result(benchmark="mmie", scorer="mmie", protocol="mmie-v1", overall=0.4)
    (picked[0] / "eval" / "mmie").mkdir(
        parents=True
    )  # what ibench eval --out <run>/eval/mmie leaves
    RunFolder(picked[0] / "eval" / "mmie", "eval").write_results(RunResults(results=[mmie]))
    result = run_cli("train", "compare", *map(str, picked), "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["paper"] and r["paper"]["mmie"] for r in rows] == [53.56, 56.94, None]
    assert rows[0]["description"] == "r_f, outcome, KL, G=4"
    assert all(r["steps"] == 2 and r["reward_final"] is not None for r in rows)
    assert [r["evals"] for r in rows] == [{"mmie/mmie": 0.4}, {}, {}]
    monkeypatch.setenv("COLUMNS", "80")
    result = run_cli("train", "compare", *map(str, picked))
    assert result.exit_code == 0 and "53.56" in result.output and "mmie 0.4" in result.output
    assert max(map(len, result.output.splitlines())) <= 80
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    result = run_cli("train", "compare", str(empty))
    assert result.exit_code == 1 and "no config.json" in result.output
    assert os.sep not in "".join(r["description"] for r in rows)
