"""The design's test of extension: an out-of-tree package adds a model family, a protocol and a
benchmark through entry points alone, and `ibench data inspect`, `eval`, `score` and a 2-step
`train grpo` use them without any file of `interleave_bench` changed.

The plugin is a real package written to a temporary folder (its own `pyproject.toml` declaring the
three entry-point groups), installed with `pip install --no-deps --no-build-isolation --target`,
and put on `PYTHONPATH` of `python -m interleave_bench` subprocesses, so the registries find it the
way they find any installed distribution: through its `entry_points.txt`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 240  # seconds for any one command

PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "ibench-demo-plugin"
version = "0.1.0"

[project.entry-points."interleave_bench.models"]
pictext = "ibench_demo_plugin.family:FAMILY"

[project.entry-points."interleave_bench.protocols"]
words_and_pictures = "ibench_demo_plugin.protocol:SPEC"

[project.entry-points."interleave_bench.benchmarks"]
demobench = "ibench_demo_plugin.bench:SPEC"

[tool.setuptools]
packages = ["ibench_demo_plugin"]

[tool.setuptools.package-data]
ibench_demo_plugin = ["mini/*"]
"""

FAMILY = '''
"""A family that wraps the text model and adds a drawn picture after each answer."""
import json
from pathlib import Path

from PIL import Image

from interleave_bench.models.families import FamilySpec
from interleave_bench.models.text_lm import TextLMAdapter
from interleave_bench.types import Interleaved, Segment


class PicTextAdapter(TextLMAdapter):
    family = "pictext"

    def generate(self, prompts, settings, store, *, return_trace=False):
        outs = super().generate(prompts, settings, store, return_trace=return_trace)
        for i, out in enumerate(outs):
            if out.error is None:
                ref = store.put_image(Image.new("RGB", (8, 8), (40 * i % 256, 90, 160)))
                out.output = Interleaved([*out.output, Segment.of_image(ref)])
        return outs


def build_tiny(dest, *, seed=0):
    from interleave_bench.models.tiny_text import build_tiny_text

    path = Path(build_tiny_text(dest, seed=seed))
    cfg = json.loads((path / "config.json").read_text())
    cfg["ibench_family"] = "pictext"
    (path / "config.json").write_text(json.dumps(cfg))
    return path


def claims(config):
    return config.get("ibench_family") == "pictext"


FAMILY = FamilySpec(
    name="pictext",
    adapter="ibench_demo_plugin.family:PicTextAdapter",
    detect="ibench_demo_plugin.family:claims",
    tiny="ibench_demo_plugin.family:build_tiny",
    capabilities={
        "generate": "ibench_demo_plugin.family:PicTextAdapter.generate",
        "rollout": "interleave_bench.train.rollout:rollout_text",
        "teacher_forced_logprobs": "interleave_bench.train.policy_logprobs:text_batch_logprobs",
        "structural_token_ids": "interleave_bench.train.rollout:text_structural_ids",
    },
    description="the tiny text model plus a drawn picture (a plugin)",
)
'''

PROTOCOL = '''
"""Half for words (up to 8 distinct), half for at least one picture."""
from interleave_bench.protocols import ProtocolSpec
from interleave_bench.scorers.base import Scorer, check_aligned


class WordsAndPictures(Scorer):
    name = "words_and_pictures"

    async def ascore(self, samples, predictions):
        check_aligned(samples, predictions)
        out = []
        for p in predictions:
            words = min(len(set(p.output.text.split())), 8) / 8
            pictures = 1.0 if any(s.image is not None for s in p.output) else 0.0
            out.append(self.ok(p.sample_id, 0.5 * words + 0.5 * pictures))
        return out


def build(opts, engine):
    return WordsAndPictures()


SPEC = ProtocolSpec(
    name="words_and_pictures",
    kind="offline",
    builder="ibench_demo_plugin.protocol:build",
    description="a plugin's words-and-pictures score",
)
'''

BENCH = '''
"""Questions in a JSON Lines file, text only; a mini set ships inside the package."""
from pathlib import Path

from interleave_bench.benchmarks import BenchmarkSpec
from interleave_bench.benchmarks.base import Benchmark, as_row, req
from interleave_bench.benchmarks.readers import iter_jsonl
from interleave_bench.types import Interleaved, Sample, Segment


class DemoBench(Benchmark):
    name = "demobench"
    title = "Demo bench"
    data_file_name = "demo.jsonl"

    def rows(self, data_file):
        return iter_jsonl(data_file)

    def resolve_root(self, path, *, bundled=False, download=True):
        if bundled:
            return Path(__file__).parent / "mini"
        return super().resolve_root(path, bundled=bundled, download=download)

    def parse_row(self, raw, ctx):
        row = as_row(raw)
        sid = str(req(row, "id", str))
        ctx.row = sid
        question = req(row, "question", str)
        return Sample(
            id=sid,
            benchmark=self.name,
            category=req(row, "kind", str),
            input=Interleaved([Segment.of_text(question)]),
        )


SPEC = BenchmarkSpec(
    name="demobench",
    loader=DemoBench,
    prompts={"default": "Answer in words, then show it."},
    categories=("animals", "food"),
)
'''

QUESTIONS = [
    {"id": f"q{i}", "kind": "animals" if i % 2 else "food", "question": q}
    for i, q in enumerate(
        ["What does a cat eat?", "Where do foxes live?", "How is bread made?", "Why do owls hoot?"]
    )
]

RECIPE = """
model: tiny:pictext
output_dir: {out}
benchmark: demobench:sample
steps: 2
prompts_per_step: 2
group_size: 2
lr: 0.001
beta: 0.0
rewards:
  - protocol: words_and_pictures
    weight: 1.0
seed: 0
device: cpu
save_final: false
generation:
  max_new_tokens: 8
  temperature: 1.0
  top_p: 1.0
"""


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    """Write, build and install the plugin; the environment that sees it."""
    src = tmp_path_factory.mktemp("plugin_src")
    pkg = src / "ibench_demo_plugin"
    (pkg / "mini").mkdir(parents=True)
    (src / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (pkg / "__init__.py").write_text("")
    (pkg / "family.py").write_text(FAMILY)
    (pkg / "protocol.py").write_text(PROTOCOL)
    (pkg / "bench.py").write_text(BENCH)
    (pkg / "mini" / "demo.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    site = tmp_path_factory.mktemp("plugin_site")
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--quiet",
         "--disable-pip-version-check", "--no-index", "--target", str(site), str(src)],
        capture_output=True, text=True, timeout=LIMIT,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stderr[-3000:]
    assert list(site.glob("ibench_demo_plugin-*.dist-info/entry_points.txt"))
    home = tmp_path_factory.mktemp("plugin_home")
    path = os.pathsep.join([str(site), str(ROOT)])
    return {**os.environ, "PYTHONPATH": path, "IBENCH_HOME": str(home), "HF_HUB_OFFLINE": "1"}


def ibench(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "interleave_bench", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=LIMIT,
    )  # fmt: skip


def test_the_package_itself_does_not_know_the_plugin():
    """The plugin's names appear nowhere in the package: what the test below sees came from the
    entry points."""
    for path in (ROOT / "interleave_bench").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "pictext" not in text and "demobench" not in text, path


def test_an_installed_plugin_adds_a_family_a_protocol_and_a_benchmark(plugin_env, tmp_path):
    env = plugin_env
    # the registries list them
    listing = ibench(env, tmp_path, "data", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    assert "demobench" in listing.stdout
    helped = ibench({**env, "COLUMNS": "400"}, tmp_path, "score", "--help")
    assert "words_and_pictures" in helped.stdout

    # data inspect: the plugin's own mini set
    r = ibench(env, tmp_path, "data", "inspect", "demobench:sample", "--json")
    assert r.returncode == 0, r.stderr
    inspected = json.loads(r.stdout)
    assert inspected["total"] == 4 and inspected["by_category"] == {"animals": 2, "food": 2}

    # eval: the plugin family answers (text + its picture), scored by the plugin protocol
    run = tmp_path / "run"
    r = ibench(
        env, tmp_path, "eval", "--model", "tiny:pictext", "--bench", "demobench:sample",
        "--scorers", "words_and_pictures", "--max-new-tokens", "6", "--out", str(run), "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    preds = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 4
    assert all(p["output"][-1]["type"] == "image" for p in preds), preds[0]
    manifest = json.loads((run / "manifest.json").read_text())
    assert "pictext" in json.dumps(manifest)
    evaluated = json.loads(r.stdout)
    result = evaluated["results"][0] if "results" in evaluated else evaluated
    assert result["counts"]["valid"] == 4 and result["overall"] >= 0.5  # every answer has a picture

    # score: the same predictions through `ibench score` with the plugin protocol
    r = ibench(
        env, tmp_path, "score", "--bench", "demobench:sample", "--predictions",
        str(run / "predictions.jsonl"), "--protocol", "words_and_pictures",
        "--out", str(tmp_path / "scored"), "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    scored = json.loads(r.stdout)
    scored = scored["results"][0] if "results" in scored else scored
    assert scored["overall"] == pytest.approx(result["overall"])

    # train: 2 GRPO steps of the plugin family on the plugin benchmark, rewarded by the plugin
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(out=tmp_path / "train"))
    r = ibench(env, tmp_path, "train", "grpo", "--config", str(recipe))
    assert r.returncode == 0, r.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "train" / "log.jsonl").read_text().splitlines()]
    steps = [rec for rec in log if "step" in rec]
    assert [rec["step"] for rec in steps] == [1, 2]
    assert all(len(rec["rewards"]) == 4 for rec in steps)  # 2 prompts x group 2, all scored
