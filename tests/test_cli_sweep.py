"""Every command, fed each kind of bad input, ends in a short error and exit 1 or 2: never a
traceback, never a hang. The bulk runs in-process (typer's CliRunner, exceptions not caught, so
anything that escapes fails the test); a few run end to end as ``python -m interleave_bench``."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from interleave_bench.cli import app

SCORE = ["score", "--bench", "mmie", "--predictions", "afile", "--protocol", "mmie"]
SCORE += ["--judge-model", "m"]
EVAL = ["eval", "--bench", "mmie:sample", "--limit", "1", "--out", "run"]
HINT = "run with --debug"


def bad(option: str) -> str:
    """typer's message for a value out of its range (not its "No such option")."""
    return f"Invalid value for '{option}'"


# (arguments, exit code, text the error must contain); paths are relative to the workspace
CASES = [
    # score: numbers
    (SCORE + ["--rpm", "-1"], 2, bad("--rpm")),
    (SCORE + ["--rpm", "0"], 2, bad("--rpm")),
    (SCORE + ["--tpm", "-5"], 2, bad("--tpm")),
    (SCORE + ["--concurrency", "0"], 2, bad("--concurrency")),
    (SCORE + ["--deadline", "0"], 2, bad("--deadline")),
    (SCORE + ["--judge-timeout", "-1"], 2, bad("--judge-timeout")),
    (SCORE + ["--max-retry-wait", "-1"], 2, bad("--max-retry-wait")),
    (SCORE + ["--max-retries", "-1"], 2, bad("--max-retries")),
    (SCORE + ["--max-cost", "-1"], 2, bad("--max-cost")),
    (SCORE + ["--max-cost", "nan"], 2, bad("--max-cost")),
    (SCORE + ["--rpm", "lots"], 2, bad("--rpm")),
    # score: paths and names
    (SCORE + ["--price-table", "folder"], 2, "folder"),
    (SCORE + ["--price-table", "missing.json"], 2, "missing.json"),
    (SCORE + ["--price-table", "bad.json"], 1, "bad.json: invalid JSON"),
    (SCORE + ["--price-table", "nonnum.json"], 1, "nonnum.json: 'gpt-4o' is ['a', 1]"),
    (SCORE + ["--price-table", "negative.json"], 1, "negative.json: 'gpt-4o' is [-1, 2]"),
    (SCORE + ["--price-table", "list.json"], 1, "list.json"),
    (SCORE + ["--out", "afile"], 2, "afile"),
    (SCORE + ["--out", "afile/sub"], 1, "afile/sub: Not a directory"),
    (SCORE + ["--protocol-file", "folder"], 2, "folder"),
    (SCORE + ["--judge-local", "no-model"], 2, "no-model"),
    (SCORE + ["--judge-transport", "carrier-pigeon"], 2, "--judge-transport"),
    (SCORE[:4] + ["missing.json", "--protocol", "mmie"], 2, "missing.json"),
    (SCORE[:6] + ["nope"], 2, "--protocol must be one of"),
    (SCORE[:4] + ["bad.json", "--protocol", "mmie", "--judge-model", "m"], 1, "bad.json"),
    (["score", "--bench", "mmei", "--predictions", "afile", "--protocol", "structure"], 2, "mmei"),
    (["score"], 2, "--bench"),
    # eval: numbers
    (EVAL + ["--rpm", "-1"], 2, bad("--rpm")),
    (EVAL + ["--tpm", "0"], 2, bad("--tpm")),
    (EVAL + ["--deadline", "-1"], 2, bad("--deadline")),
    (EVAL + ["--max-retries", "-1"], 2, bad("--max-retries")),
    (EVAL + ["--judge-timeout", "0"], 2, bad("--judge-timeout")),
    (EVAL + ["--max-retry-wait", "-1"], 2, bad("--max-retry-wait")),
    (EVAL + ["--concurrency", "0"], 2, bad("--concurrency")),
    (EVAL + ["--max-cost", "-0.5"], 2, bad("--max-cost")),
    (EVAL + ["--batch-size", "0"], 2, bad("--batch-size")),
    (EVAL + ["--max-new-tokens", "0"], 2, bad("--max-new-tokens")),
    (EVAL + ["--temperature", "-1"], 2, bad("--temperature")),
    (EVAL + ["--top-p", "0"], 2, bad("--top-p")),
    (EVAL + ["--top-p", "1.5"], 2, bad("--top-p")),
    (EVAL + ["--cfg-scale", "-1"], 2, bad("--cfg-scale")),
    (EVAL + ["--image-size", "0"], 2, bad("--image-size")),
    (EVAL + ["--max-images", "-1"], 2, bad("--max-images")),
    (EVAL + ["--max-image-tokens", "0"], 2, bad("--max-image-tokens")),
    (EVAL + ["--seed", "-1"], 2, bad("--seed")),
    (["eval", "--limit", "0"], 2, bad("--limit")),
    # eval: paths and names
    (["eval", "--out", "afile"], 2, "afile"),
    (EVAL + ["--device", "gpu"], 2, "--device"),
    (EVAL + ["--dtype", "int3"], 2, "--dtype"),
    (EVAL + ["--model-type", "jaunus"], 2, "--model-type"),
    (EVAL + ["--scorers", "structur"], 2, "structur"),
    (EVAL + ["--protocol", "mmie_score"], 2, "--protocol"),
    (EVAL + ["--judge-transport", "x"], 2, "--judge-transport"),
    (["eval", "--bench", "mmei", "--out", "run"], 2, "mmei"),
    (EVAL + ["--data", "missing"], 2, "missing"),
    (EVAL + ["--templates", "folder"], 2, "folder"),
    (EVAL + ["--templates", "bad.json"], 1, "--templates bad.json: invalid JSON"),
    (EVAL + ["--templates", "list.json"], 1, "list.json"),
    (EVAL + ["--price-table", "bad.json"], 1, "bad.json"),
    (EVAL + ["--model", "no-such/model"], 1, "no-such/model"),
    # aggregate, report, models
    (["aggregate", "missing.json", "--format", "mmie-feedback"], 2, "missing.json"),
    (["aggregate", "folder", "--format", "mmie-feedback"], 2, "folder"),
    (["aggregate", "bad.json", "--format", "mmie-feedback"], 1, "bad.json"),
    (["aggregate", "afile", "--format", "mmie"], 2, "--format"),
    (["report", "missing"], 2, "missing"),
    (["report", "afile"], 2, "afile"),
    (["report", "folder"], 1, "folder: not a run folder"),
    (["report", "folder", "--out", "folder"], 2, "folder"),
    (["models", "tiny", "janos", "m"], 2, "expected one of tiny:emu3, tiny:janus, tiny:text"),
    (["models", "tiny", "janus", "afile"], 2, "afile"),
    (["models", "tiny", "janus", "m", "--seed", "-1"], 2, bad("--seed")),
    # data
    (["data", "inspect", "mmei"], 2, "did you mean 'mmie'"),
    (["data", "inspect", "mmie", "--path", "missing"], 2, "missing"),
    (["data", "inspect", "mmie", "--path", "folder"], 1, "folder/data.json"),
    (["data", "inspect", "mmie", "--path", "afile"], 1, "afile"),
    (["data", "inspect", "mmie:sample", "--limit", "0"], 2, bad("--limit")),
    (["data", "inspect", "mmie:sample", "--images", "some"], 2, "--images"),
    (["data", "validate", "mmie"], 2, "--path"),
    (["data", "validate", "mmie", "--path", "folder"], 1, "folder/data.json"),
    (["data", "download", "mmei"], 2, "mmei"),
    (["data", "download", "mmie:sample"], 1, "bundled"),
    (["data", "download", "opening", "--archive", "folder"], 2, "folder"),
    (["data", "download", "opening", "--to", "afile"], 2, "afile"),
    # train
    (["train", "grpo", "--config", "missing.yaml"], 2, "missing.yaml"),
    (["train", "grpo", "--config", "folder"], 2, "folder"),
    (["train", "grpo", "--config", "bad.json"], 1, "bad.json: cannot read the recipe"),
    (["train", "grpo", "--config", "list.json"], 1, "list.json: a recipe is a mapping"),
    (["train", "grpo", "--config", "typo.yaml"], 2, "stepz: unknown key; did you mean steps?"),
    (
        ["train", "grpo", "--config", "recipe.yaml", "generation.temprature=0.5"],
        2,
        "generation.temprature: unknown key; did you mean temperature?",
    ),
    (
        ["train", "grpo", "--config", "recipe.yaml", "steps=two"],
        2,
        "steps: Input should be a valid",
    ),
    (
        ["train", "grpo", "--config", "recipe.yaml", "loss_type=gspo"],
        2,
        "loss_type: 'gspo' is not one of grpo, bnpo, dr_grpo, dapo; did you mean grpo?",
    ),
    (["train", "grpo", "--config", "recipe.yaml", "lr"], 2, "expected key=value"),
    (["train", "grpo", "--config", "recipe.yaml", "lr=[1"], 2, "override 'lr=[1'"),
    (["train", "grpo", "--config", "recipe.yaml", "steps.x=1"], 2, "steps is 3, not a mapping"),
    (["train", "grpo", "--config", "recipe.yaml", "stepz=1"], 2, "stepz"),
    (["train", "warmup", "--config", "typo.yaml"], 2, "stepz"),
    (["train", "warmup", "--config", "folder"], 2, "folder"),
    # leaderboard (its own module; the global handler backs it)
    (["leaderboard", "show", "mmei"], 2, "mmei"),
    (["leaderboard", "submit", "missing", "--bench", "mmie"], 1, "missing"),
    (["leaderboard", "submit", "folder", "--bench", "mmie", "--audit", "-1"], 2, bad("--audit")),
    (["leaderboard", "build", "--out", "afile"], 1, "afile"),
    # issue 16 item 2: ordinary mistakes, one line naming the fix
    (["eval", "--bench", "mmi", "--out", "run"], 2, "did you mean 'mmie'"),
    (
        ["score", "--bench", "mmie_sample", "--predictions", "afile", "--protocol", "structure"],
        2,
        "unknown benchmark 'mmie_sample'",
    ),  # fmt: skip
    (
        ["train", "grpo", "--config", "tiny_janus_grpo", "generation.temprature=0.5"],
        2,
        "generation.temprature: unknown key; did you mean temperature?",
    ),  # fmt: skip
    (["train", "grpo", "--config", "tiny_janus_grpo", "steps=two"], 2, "steps:"),
    (
        ["train", "grpo", "--config", "tiny_janus_grpo", "loss_type=gspo"],
        2,
        "loss_type: 'gspo' is not one of",
    ),  # fmt: skip
    (["train", "warmup", "--config", "tiny_janus_warmup", "steps=two"], 2, "steps:"),
    # the command line itself
    (["scroe"], 2, "scroe"),
    (["data", "inspect"], 2, "Missing argument 'bench'"),
]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """Inputs of every wrong kind, in the working directory so the paths stay short."""
    (tmp_path / "afile").write_text("x")
    (tmp_path / "folder").mkdir()
    (tmp_path / "bad.json").write_text("{\n")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "nonnum.json").write_text(json.dumps({"gpt-4o": ["a", 1]}))
    (tmp_path / "negative.json").write_text(json.dumps({"gpt-4o": [-1, 2]}))
    (tmp_path / "typo.yaml").write_text("model: tiny:janus\nstepz: 3\n")
    (tmp_path / "recipe.yaml").write_text("model: m\noutput_dir: o\nsteps: 3\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IBENCH_DEBUG", raising=False)
    return tmp_path


def flat(text: str) -> str:
    """The text with rich's panel borders and line wrapping taken out."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


@pytest.mark.parametrize("args, code, needle", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_a_short_error_with_exit_code(workspace, args, code, needle):
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    stderr = result.stderr
    assert "Traceback" not in result.output, stderr
    assert result.exit_code == code, stderr
    assert HINT not in stderr, stderr  # a user's mistake, not an unexpected error
    assert flat(needle) in flat(stderr), stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) <= 1, stderr
    if errors:  # our own message: the whole of it on its one line
        assert flat(needle) in errors[0], stderr


def test_nothing_is_written_outside_the_workspace(workspace):
    """The sweep above writes only into the working folder (and so the test's tmp_path)."""
    before = sorted(p.name for p in workspace.iterdir())
    CliRunner().invoke(app, SCORE + ["--rpm", "-1"], catch_exceptions=False)
    assert sorted(p.name for p in workspace.iterdir()) == before  # a usage error writes nothing


def test_help_documents_the_exit_codes():
    result = CliRunner().invoke(app, ["--help"], catch_exceptions=False)
    text = flat(result.stdout)
    assert result.exit_code == 0
    assert "Exit codes: 0 success" in text and "1 bad data" in text and "2 usage" in text
    assert "3 incomplete" in text
    assert "IBENCH_DEBUG=1" in text and "--debug" in text


# --------------------------------------------------------------------- end to end (python -m)


def ibench(*args: str, env: dict[str, str] | None = None, cwd=None) -> subprocess.CompletedProcess:
    import os

    base = {k: v for k, v in os.environ.items() if k != "IBENCH_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "interleave_bench", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        cwd=cwd,
        timeout=120,
    )


def test_module_entry_point_bad_inputs(workspace):
    r = ibench(*SCORE, "--rpm", "-1", cwd=workspace)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--rpm" in r.stderr
    r = ibench(*SCORE, "--price-table", "bad.json", cwd=workspace)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert [line for line in r.stderr.splitlines() if line.strip()] == [
        line for line in r.stderr.splitlines() if line.startswith("error: --price-table bad.json")
    ]


# A command that fails the way a bug would, registered in a child process only.
BOOM = """
import sys
from interleave_bench.cli import app, main

@app.command("boom")
def boom(kind: str) -> None:
    if kind == "bug":
        raise RuntimeError("state went\\nwrong")
    raise IsADirectoryError(21, "Is a directory", "some/folder")

sys.argv = ["ibench", *sys.argv[1:]]
main()
"""


def boom(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    base = {k: v for k, v in os.environ.items() if k != "IBENCH_DEBUG"}
    return subprocess.run(
        [sys.executable, "-c", BOOM, *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=120,
    )


def test_an_unexpected_error_is_one_line_and_a_hint():
    r = boom("boom", "bug")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [
        "error: RuntimeError: state went wrong",
        "(run with --debug or IBENCH_DEBUG=1 for the traceback)",
    ]


def test_a_user_path_error_names_the_file_without_a_hint():
    r = boom("boom", "path")
    assert r.returncode == 1
    assert r.stderr.splitlines() == ["error: some/folder: Is a directory"]


@pytest.mark.parametrize("how", ["env", "flag"])
def test_debug_shows_the_traceback(how):
    r = (
        boom("boom", "bug", env={"IBENCH_DEBUG": "1"})
        if how == "env"
        else boom("--debug", "boom", "bug")
    )
    assert r.returncode == 1
    assert "Traceback" in r.stderr and "RuntimeError" in r.stderr and "state went" in r.stderr


# --------------------------------------------------------------------- issue 16 item 2


def closed_url() -> str:
    """An endpoint on 127.0.0.1 where nothing listens (no network, as far as a client sees)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr and HINT not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr
    return lines[0]


def test_data_download_without_network_is_one_line(workspace):
    env = {"HF_ENDPOINT": closed_url(), "HF_HUB_OFFLINE": "0", "HF_HUB_DOWNLOAD_TIMEOUT": "5"}
    r = ibench("data", "download", "mmie", "--to", "dl", env=env, cwd=workspace)
    assert r.returncode == 1, r.stderr
    line = one_error_line(r.stderr)
    assert "cannot reach" in line and "check the network" in line, line


def test_score_without_a_reachable_judge_is_one_line(workspace):
    from interleave_bench.benchmarks import load_benchmark

    rows = [
        {"sample_id": s.id, "model": "m", "output": [{"type": "text", "text": "hi"}]}
        for s in load_benchmark("mmie:sample", None, download=False)
    ]
    (workspace / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (workspace / "prompts.py").write_text(
        'SA_SYSTEM_PROMPT = "S"\nPBL_SYSTEM_PROMPT = "P"\nMSR_PROMPT = "M"\n'
    )
    args = ["score", "--bench", "mmie:sample", "--predictions", "p.jsonl", "--protocol", "mmie"]
    args += ["--protocol-file", "prompts.py", "--allow-unofficial", "--judge-model", "m"]
    args += ["--judge-base-url", closed_url() + "/v1", "--max-retries", "0", "--out", "o"]
    r = ibench(*args, env={"OPENAI_API_KEY": "sk-test"}, cwd=workspace)
    assert r.returncode == 1, r.stderr
    one_error_line(r.stderr)
    assert not (workspace / "o" / "manifest.json").exists()  # nothing refuses the fixed command
    clip = ["score", "--bench", "mmie:sample", "--predictions", "p.jsonl"]
    result = CliRunner().invoke(app, [*clip, "--protocol", "clip_score", "--out", "c"])
    assert result.exit_code == 1, result.output
    assert "--clip-model" in one_error_line(result.stderr)


def test_device_cuda_on_a_torch_without_cuda_is_a_usage_error(workspace):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    result = CliRunner().invoke(app, [*EVAL, "--device", "cuda"], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "--device cpu" in one_error_line(result.stderr)
