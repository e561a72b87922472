"""Typed configuration (JudgeSpec, EvalConfig/ScoreConfig.from_yaml) and the shared judge
options of `ibench eval` and `ibench score`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer.main

from interleave_bench.cli import app
from interleave_bench.config import ConfigError, JudgeSpec
from interleave_bench.runner import EvalConfig
from interleave_bench.scoring import ScoreConfig


def _options(name: str) -> dict[str, Any]:
    cmd = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
    return {p.name: p for p in cmd.params if p.param_type_name == "option"}


def test_eval_and_score_expose_the_same_judge_options():
    """Both commands' judge options come from JudgeSpec: same names, flags and defaults."""
    ev, sc = _options("eval"), _options("score")
    for field, info in JudgeSpec.model_fields.items():
        assert field in ev and field in sc, field
        assert ev[field].opts == sc[field].opts, field
        assert ev[field].default == sc[field].default == info.default, field
    # --judge-local, --trust-remote-code and --preflight were score-only before
    assert "--judge-local" in ev["judge_local"].opts
    assert ev["preflight"].secondary_opts == ["--no-preflight"]


def test_eval_yaml_with_overrides(tmp_path: Path):
    cfg_file = tmp_path / "eval.yaml"
    cfg_file.write_text(
        "model: tiny:janus\nbench: mmie:sample\nout: runs/x\n"
        "settings: {temperature: 0.7, max_new_tokens: 8}\n"
        "judge: {judge_model: MMIE-Score, concurrency: 4}\n"
    )
    cfg = EvalConfig.from_yaml(cfg_file, ["judge.concurrency=2", "settings.seed=3"])
    assert cfg.out == Path("runs/x")
    assert cfg.settings.temperature == 0.7 and cfg.settings.seed == 3
    assert cfg.judge == JudgeSpec(judge_model="MMIE-Score", concurrency=2)


def test_unknown_key_is_named_with_a_suggestion(tmp_path: Path):
    cfg_file = tmp_path / "eval.yaml"
    cfg_file.write_text("model: m\nbench: mmie\nout: o\nsettings: {temprature: 1.0}\n")
    with pytest.raises(ConfigError) as e:
        EvalConfig.from_yaml(cfg_file)
    assert str(e.value) == (
        f"{cfg_file}: settings.temprature: unknown key; did you mean temperature?"
    )
    with pytest.raises(ConfigError, match=r"judge\.judge_modle: unknown key; did you mean "):
        EvalConfig.from_yaml(cfg_file, {"settings": {}, "judge.judge_modle": "x"})


def test_bad_value_is_named(tmp_path: Path):
    cfg_file = tmp_path / "score.yaml"
    cfg_file.write_text("bench: mmie\npredictions: p.json\nprotocol: mmie\nout: o\n")
    with pytest.raises(ConfigError, match=r"score\.yaml: judge\.concurrency: .*greater than"):
        ScoreConfig.from_yaml(cfg_file, ["judge.concurrency=0"])
    with pytest.raises(ConfigError, match=r"judge\.judge_transport: .*'sdk' or 'aiohttp'"):
        ScoreConfig.from_yaml(cfg_file, {"judge.judge_transport": "curl"})
    ok = ScoreConfig.from_yaml(cfg_file, ["judge.max_cost=1.5"])
    assert ok.judge.max_cost == 1.5 and ok.predictions == Path("p.json")


# ------------------------------------------------------------------------- run folders


def test_score_resumes_by_appending_and_sends_nothing(tmp_path, monkeypatch):
    """`score` appends to judgments.jsonl like `eval`: a rerun after a kill keeps the records
    already written (not rewritten), adds the missing ones once, and is served by the cache."""
    from fake_openai import FakeOpenAI
    from helpers import cli_json
    from test_score_cli import mmie_predictions, score_args

    from interleave_bench.runs import RunFolder

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    preds, prompts = mmie_predictions(tmp_path)
    out = tmp_path / "out"
    log = out / "judgments.jsonl"
    with FakeOpenAI() as server:
        code, first = cli_json(*score_args(server, preds, prompts, out))
        sent = len(server.requests)
        lines = log.read_text().splitlines()
        kept = json.loads(lines[0])
        kept["metadata"]["marker"] = "written by the first run"
        log.write_text(json.dumps(kept) + "\n" + "\n".join(lines[1:5]) + "\n" + lines[5][:20])
        (out / "results.json").unlink()
        rerun = [*score_args(server, preds, prompts, out), "--no-preflight"]
        code2, again = cli_json(*rerun)  # the torn last line is cut off first
        assert len(server.requests) == sent  # the cache answered every judgment
    assert code == code2 == 0
    records = RunFolder(out, "score").read("judgments.jsonl", strict=True)
    assert records[0]["metadata"]["marker"] == "written by the first run"  # appended, not rewritten
    assert len(records) == 15 and len({r["sample_id"] for r in records}) == 15
    assert again["overall"] == first["overall"] and again["counts"] == first["counts"]
    stored = RunFolder(out, "score").read_results()
    assert [r.overall for r in stored.results] == [first["overall"]] and not stored.pairwise


def test_strict_and_lenient_reads(tmp_path: Path):
    from interleave_bench.runs import RunFolder, RunFolderError

    folder = RunFolder(tmp_path, "score")
    log = folder.log("x.jsonl")
    log.append({"a": 1})
    log.close()
    with (tmp_path / "x.jsonl").open("a") as f:
        f.write('{"a": ')  # a kill mid-write
    with pytest.warns(UserWarning, match="x.jsonl, line 2: cut short"):
        assert folder.read("x.jsonl") == [{"a": 1}]
    with pytest.raises(RunFolderError, match="x.jsonl, line 2: cut short"):
        folder.read("x.jsonl", strict=True)
    assert folder.read("absent.jsonl", strict=True) == []


def test_one_results_schema_reads_every_shape():
    """Readers get RunResults whatever wrote results.json (older single-result and pairwise
    files included), so none branches on shape."""
    from interleave_bench.types import PairwiseResult, Result, RunResults

    r = Result("mmie", "mmie", "v1", 4.0, counts={"valid": 1})
    p = PairwiseResult("opening_pairwise", "j", ["A", "B"], {"fdt": {"A": 1.0, "B": 0.0}})
    full = RunResults(results=[r], pairwise=[p], generation_errors=2)
    assert RunResults.from_dict(json.loads(json.dumps(full.to_dict()))) == full
    assert RunResults.from_dict(r.to_dict()) == RunResults(results=[r])
    legacy_pair = {k: v for k, v in p.to_dict().items() if k != "schema_version"}
    assert RunResults.from_dict(legacy_pair) == RunResults(pairwise=[p])
    with pytest.raises(ValueError, match=r"results\[0\]\.scorer"):
        RunResults.from_dict({"results": [{"benchmark": "mmie"}]})


def test_train_config_from_yaml_is_what_the_cli_builds(tmp_path):
    """The Python API and ``ibench train grpo --config`` make the same TrainConfig, and the
    generation keys, the numbers and the enumerated choices are checked when it is made."""
    from interleave_bench.cli.train import _train_config
    from interleave_bench.config import ConfigError
    from interleave_bench.train.config import TrainConfig

    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: m\noutput_dir: o\nsteps: 3\ngeneration:\n  temperature: 0.7\n")
    over = ["generation.max_new_tokens=9", "loss_type=dapo"]
    cfg = TrainConfig.from_yaml(recipe, over)
    assert cfg == _train_config(recipe, over)
    assert cfg.generation == {"temperature": 0.7, "max_new_tokens": 9} and cfg.loss_type == "dapo"
    assert cfg.settings().max_new_tokens == 9
    for bad, words in [
        (
            ["generation.temprature=1"],
            "generation.temprature: unknown key; did you mean temperature?",
        ),
        (["steps=two"], "steps: Input should be a valid integer"),
        (["loss_type=gspo"], "loss_type: 'gspo' is not one of grpo, bnpo, dr_grpo, dapo"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(words)):
            TrainConfig.from_yaml(recipe, bad)
    with pytest.raises(ValueError, match="scale_rewards: 'groups' is not one of"):
        TrainConfig("m", "o", scale_rewards="groups")  # the dataclass itself checks its choices
