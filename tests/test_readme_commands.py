"""The README's commands run as written. Convention: a ```bash block whose first line is
``# needs: ...`` (network, a GPU, real data, minutes) is documentation only; every other block is
offline and runs here, command by command in one temp folder, with ``HF_HUB_OFFLINE=1`` and the
stand-in judge (tests/fake_openai.py) in place of ``127.0.0.1:8000``, each expected to exit 0."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from fake_openai import FakeOpenAI, Reply

from interleave_bench.scorers.interleaved_eval import ASPECTS

README = Path(__file__).resolve().parent.parent / "README.md"
PLACEHOLDER = "127.0.0.1:8000"
# what an offline command may not use: these need network, a GPU or the user's own data
ONLINE = ("~/data", "vllm", "--device cuda", "accelerate launch", "deepseek-ai/", "BAAI/", "MMIE/")


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def offline_commands(text: str) -> list[str]:
    """Each command of each offline block, continuation lines joined, comments kept (bash
    drops them)."""
    commands: list[str] = []
    for block in bash_blocks(text):
        if block.lstrip().startswith("# needs:"):
            continue
        joined = re.sub(r"\\\n\s*", " ", block)
        commands += [c for c in joined.splitlines() if c.strip() and not c.lstrip().startswith("#")]
    return commands


def test_every_block_is_offline_or_says_what_it_needs():
    blocks = bash_blocks(README.read_text())
    assert blocks
    for command in offline_commands(README.read_text()):
        assert not any(word in command for word in ONLINE), f"mark it '# needs: ...': {command}"


def _judge(body: dict) -> Reply:
    """A stand-in judge that answers InterleavedEval's JSON form."""
    return Reply(json.dumps({a: {"score": 4, "explanation": "fine"} for a in ASPECTS}))


def test_readme_offline_commands_run_as_written(tmp_path):
    commands = offline_commands(README.read_text())
    assert any(c.startswith("ibench eval") for c in commands)
    assert any("--judge-base-url http://" + PLACEHOLDER in c for c in commands)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OPENAI_API_KEY="sk-test", NO_PROXY="127.0.0.1")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    with FakeOpenAI(_judge) as judge:
        host = judge.url.removeprefix("http://").removesuffix("/v1")
        for command in commands:
            run = command.replace(PLACEHOLDER, host)
            done = subprocess.run(
                ["bash", "-c", run],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        assert judge.requests, "the judge command never reached the stand-in judge"
    assert (tmp_path / "runs" / "tiny_janus__mmie_sample" / "report.html").is_file()
    assert '"valid": 2' in (tmp_path / "runs" / "ib-judged" / "results.json").read_text()
