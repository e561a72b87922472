"""`ibench eval` end to end on tiny real models: run folders, resume after kill -9 and Ctrl-C,
two processes under torchrun, and refusals of bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import cli_json, run_cli, write_opening_outputs
from PIL import Image

from interleave_bench.runs import read_jsonl

BENCHES = ["mmie:sample", "interleavedbench:sample", "opening:sample", "isg:sample"]
FAST = ["--max-new-tokens", "16", "--scorers", "structure"]


def env():
    e = dict(os.environ)
    e.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return e


def ibench(*args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "interleave_bench", *args],
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def finished(proc, timeout=240):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-2000:]
    return out


def predictions(run: Path):
    return {p["sample_id"]: p for p in read_jsonl(run / "predictions.jsonl")}


def comparable(preds):
    """What must match between runs: texts, image hashes and errors (not run-folder paths)."""

    def seg(s):
        return s["text"] if s["type"] == "text" else s["image"]["sha256"]

    return {k: ([seg(s) for s in p["output"]], p["error"]) for k, p in preds.items()}


def results(run: Path):
    data = json.loads((run / "results.json").read_text())
    for r in data["results"]:
        r["metadata"].pop("seconds", None)
    return data


@pytest.mark.parametrize("family", ["tiny_janus", "tiny_emu3"])
@pytest.mark.parametrize("bench", BENCHES)
def test_eval_tiny_models_on_each_bundled_set(request, tmp_path, bench, family):
    model = request.getfixturevalue(family)
    out = tmp_path / "run"
    # an Emu3 image is a ~30-token span (header, 4x4 grid, row ends): give it room
    budget = "16" if family == "tiny_janus" else "64"
    code, report = cli_json(
        "eval",
        "--model",
        str(model),
        "--bench",
        bench,
        "--limit",
        "2",
        "--out",
        str(out),
        "--max-new-tokens",
        budget,
        "--scorers",
        "structure",
    )
    assert code == 0, report
    preds = predictions(out)
    assert len(preds) == 2 and all(p["error"] is None for p in preds.values())
    images = [seg["image"] for p in preds.values() for seg in p["output"] if seg["type"] == "image"]
    assert images, "the tiny models are biased to draw at least one image"
    for ref in images:
        path = out / "images" / ref["sha256"][:2] / f"{ref['sha256']}.png"
        with Image.open(path) as im:
            im.load()
            assert im.format == "PNG" and im.size == (32, 32)
    assert (out / "report.html").stat().st_size > 1000
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == "eval" and manifest["identity"]["bench"] == bench
    assert manifest["identity"]["dataset_revision"].startswith("sha256:")
    assert manifest["settings"]["max_new_tokens"] == int(budget)
    assert report["results"][0]["counts"]["valid"] == 2


def test_resume_after_kill_9_equals_an_uninterrupted_run(tiny_janus, tmp_path):
    args = ["eval", "--model", str(tiny_janus), "--bench", "mmie:sample", "--limit", "6", *FAST]
    reference = tmp_path / "ref"
    finished(ibench(*args, "--out", str(reference)))
    killed = tmp_path / "killed"
    proc = ibench(*args, "--out", str(killed))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        lines = (
            (killed / "predictions.jsonl").read_text().count("\n")
            if (killed / "predictions.jsonl").exists()
            else 0
        )
        if lines >= 2:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    before = len(list(read_jsonl(killed / "predictions.jsonl")))
    assert 2 <= before < 6, "the kill should land mid-run"
    finished(ibench(*args, "--out", str(killed)))
    assert comparable(predictions(killed)) == comparable(predictions(reference))
    assert results(killed) == results(reference)
    # nothing was generated twice: each sample has exactly one prediction line
    ids = [p["sample_id"] for p in read_jsonl(killed / "predictions.jsonl")]
    assert len(ids) == len(set(ids)) == 6


def test_ctrl_c_leaves_a_resumable_run(tiny_janus, tmp_path):
    args = [
        "eval",
        "--model",
        str(tiny_janus),
        "--bench",
        "isg:sample",
        "--limit",
        "5",
        *FAST,
        "--out",
        str(tmp_path / "run"),
    ]
    proc = ibench(*args)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (
        (tmp_path / "run" / "predictions.jsonl").exists()
        and (tmp_path / "run" / "predictions.jsonl").read_text().count("\n") >= 1
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "rerun the same command to resume" in err
    finished(ibench(*args))
    assert len(predictions(tmp_path / "run")) == 5


def test_two_processes_under_torchrun_match_one(tiny_janus, tmp_path):
    args = ["eval", "--model", str(tiny_janus), "--bench", "opening:sample", "--limit", "4", *FAST]
    single = tmp_path / "single"
    finished(ibench(*args, "--out", str(single)))
    multi = tmp_path / "multi"
    torchrun = Path(sys.executable).parent / "torchrun"
    proc = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "interleave_bench",
            *args,
            "--out",
            str(multi),
        ],
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (multi / "predictions.rank0.jsonl").exists()
    assert (multi / "predictions.rank1.jsonl").exists()
    assert comparable(predictions(multi)) == comparable(predictions(single))
    assert results(multi) == results(single)


def test_bad_model_inputs_are_clear(tmp_path, tiny_janus):
    r = run_cli(
        "eval", "--model", str(tmp_path), "--bench", "mmie:sample", "--out", str(tmp_path / "o")
    )
    assert r.exit_code == 1 and "no config.json" in r.stderr
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "config.json").write_text(json.dumps({"model_type": "llama"}))
    r = run_cli(
        "eval", "--model", str(fake), "--bench", "mmie:sample", "--out", str(tmp_path / "o2")
    )
    assert r.exit_code == 1 and "unsupported model_type 'llama'; families: emu3, janus" in r.stderr
    (fake / "config.json").write_text(json.dumps({"model_type": "chameleon"}))
    r = run_cli(
        "eval", "--model", str(fake), "--bench", "mmie:sample", "--out", str(tmp_path / "o3")
    )
    assert r.exit_code == 1 and "Chameleon cannot emit images" in r.stderr
    r = run_cli(
        "eval",
        "--model",
        "someorg/some-model",
        "--bench",
        "mmie:sample",
        "--out",
        str(tmp_path / "o4"),
    )
    assert r.exit_code == 1 and "HF_HUB_OFFLINE is set" in r.stderr
    r = run_cli("eval", "--model", str(tiny_janus), "--bench", "mmie:sample", "--scorers", "vibes")
    assert r.exit_code == 2 and "unknown offline scorer" in r.stderr


def test_run_folders_are_never_mixed(tiny_janus, tmp_path):
    out = tmp_path / "run"
    args = [
        "eval",
        "--model",
        str(tiny_janus),
        "--bench",
        "isg:sample",
        "--limit",
        "1",
        "--out",
        str(out),
        *FAST,
    ]
    assert run_cli(*args).exit_code == 0
    r = run_cli(*args[:-4], "--max-new-tokens", "17", "--scorers", "structure")
    assert r.exit_code == 1 and "different settings (settings)" in r.stderr
    r = run_cli(
        "score",
        "--bench",
        "isg:sample",
        "--predictions",
        str(out / "predictions.jsonl"),
        "--protocol",
        "structure",
        "--out",
        str(out),
    )
    # `score` writes its own files; it must not take over an eval folder either
    assert r.exit_code == 1 and "holds a `eval` run" in r.stderr


def test_failed_generation_is_recorded_and_the_run_goes_on(tiny_janus, tmp_path, monkeypatch):
    from interleave_bench.models import janus

    real = janus.decode_interleaved
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(*a, **k)

    monkeypatch.setattr(janus, "decode_interleaved", flaky)
    out = tmp_path / "run"
    code, report = cli_json(
        "eval",
        "--model",
        str(tiny_janus),
        "--bench",
        "isg:sample",
        "--limit",
        "3",
        "--out",
        str(out),
        *FAST,
    )
    assert code == 3 and report["generation_errors"] == 1  # incomplete: a rerun retries it
    assert report["complete"] is False and report["not_scored"] == {"generation failed": 1}
    preds = predictions(out)
    errors = [p for p in preds.values() if p["error"]]
    assert len(errors) == 1 and "out of memory" in errors[0]["error"]
    assert report["results"][0]["counts"] == {"valid": 2, "invalid": 0, "error": 1, "total": 3}
    calls["n"] = 1  # fail again at once, with --fail-fast the run stops there
    r = run_cli(
        "eval",
        "--model",
        str(tiny_janus),
        "--bench",
        "isg:sample",
        "--limit",
        "4",
        "--out",
        str(tmp_path / "ff"),
        *FAST,
        "--fail-fast",
    )
    assert r.exit_code == 1 and "out of memory" in r.stderr


def test_judging_overlaps_generation(tiny_janus, tmp_path):
    """Judge calls start while later samples are still being generated."""
    from fake_openai import FakeOpenAI

    from interleave_bench.config import JudgeSpec
    from interleave_bench.models.base import GenerationSettings
    from interleave_bench.runner import EvalConfig, Hooks, run_eval

    prompts = tmp_path / "prompts.py"
    prompts.write_text('SA_SYSTEM_PROMPT = "S. "\nPBL_SYSTEM_PROMPT = "P. "\nMSR_PROMPT = "M. "\n')
    events = []
    with FakeOpenAI() as server:
        cfg = EvalConfig(
            model=str(tiny_janus),
            bench="mmie:sample",
            out=tmp_path / "run",
            limit=5,
            scorers=["structure", "mmie"],
            settings=GenerationSettings(max_new_tokens=16),
            protocol_file=prompts,
            allow_unofficial=True,
            judge=JudgeSpec(judge_base_url=server.url, judge_model="MMIE-Score", preflight=False),
        )
        hooks = Hooks(
            on_generated=lambda p: events.append(("gen", p.sample_id)),
            on_judged=lambda j, e: events.append((j.scorer, j.sample_id)),
        )
        results = run_eval(cfg, hooks)
    kinds = [k for k, _ in events]
    last_gen = max(i for i, k in enumerate(kinds) if k == "gen")
    first_judge = kinds.index("mmie")
    assert first_judge < last_gen, kinds
    mmie = next(r for r in results if r.scorer == "mmie")
    assert mmie.counts["valid"] == 5 and mmie.overall == 4.0
    assert len(server.requests) == 5


def test_replay_and_pipeline_through_eval(tmp_path, monkeypatch):
    from fake_openai import FakeOpenAI, Reply

    # replay the bundled gold answers of OpenING as if another tool had produced them
    folder = tmp_path / "Gold_output"
    write_opening_outputs(folder, limit=3)
    code, report = cli_json(
        "eval",
        "--model",
        str(folder),
        "--model-type",
        "replay",
        "--bench",
        "opening:sample",
        "--limit",
        "3",
        "--out",
        str(tmp_path / "r"),
    )
    assert code == 0 and report["results"][0]["overall"] == 1.0  # gold vs gold structure
    # an integrated pipeline: chat model + Images API, both on a local server
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local-test")
    reply = "First the bulb. <image>a tulip bulb in soil</image> Then water it."
    with FakeOpenAI(lambda body: Reply(content=reply)) as server:
        code, report = cli_json(
            "eval",
            "--model",
            "chat-model",
            "--model-type",
            "pipeline",
            "--bench",
            "interleavedbench:sample",
            "--limit",
            "2",
            "--chat-base-url",
            server.url,
            "--image-generator",
            "openai:image-model",
            "--image-base-url",
            server.url,
            "--out",
            str(tmp_path / "p"),
        )
    assert code == 0 and report["generation_errors"] == 0
    preds = predictions(tmp_path / "p")
    assert all(
        [s["type"] for s in p["output"]] == ["text", "image", "text"] for p in preds.values()
    )


def test_models_tiny_and_report_commands(tmp_path):
    from transformers import AutoProcessor, JanusForConditionalGeneration

    r = run_cli("models", "tiny", "janus", str(tmp_path / "tj"))
    assert r.exit_code == 0
    JanusForConditionalGeneration.from_pretrained(tmp_path / "tj")
    AutoProcessor.from_pretrained(tmp_path / "tj")
    assert run_cli("models", "tiny", "chameleon", str(tmp_path / "x")).exit_code == 2
    run = tmp_path / "run"
    assert (
        run_cli(
            "eval",
            "--model",
            str(tmp_path / "tj"),
            "--bench",
            "isg:sample",
            "--limit",
            "1",
            "--out",
            str(run),
            "--no-report",
            *FAST,
        ).exit_code
        == 0
    )
    assert not (run / "report.html").exists()
    r = run_cli("report", str(run))
    assert r.exit_code == 0 and (run / "report.html").stat().st_size > 1000
    assert run_cli("report", str(tmp_path)).exit_code == 1
