"""Protocols and benchmarks are registered specs: one registered from a test, with no file of the
package changed, is listed in the CLI's help, validated, scored by `ibench score` and accepted as
a recipe reward; pairwise is its own interface."""

import json
import shutil
from collections.abc import Sequence

import pytest
from helpers import cli_json, run_cli

from interleave_bench.benchmarks import BenchmarkSpec, register_benchmark
from interleave_bench.benchmarks.base import MINISET_DIR
from interleave_bench.benchmarks.isg import ISGBench
from interleave_bench.models.prompts import build_prompt, load_templates
from interleave_bench.protocols import ProtocolSpec, register_protocol
from interleave_bench.registry import UnknownNameError, benchmarks, protocols
from interleave_bench.scorers.base import PairwiseScorer, Scorer, check_aligned
from interleave_bench.types import Interleaved, Judgment, Prediction, Sample, Segment


class WordCount(Scorer):
    """A plugin's offline protocol: 1 when the answer has at least three words."""

    name = "word_count"

    async def ascore(
        self, samples: Sequence[Sample], predictions: Sequence[Prediction]
    ) -> list[Judgment]:
        check_aligned(samples, predictions)
        return [self.ok(p.sample_id, float(len(p.output.text.split()) >= 3)) for p in predictions]


class ToyBench(ISGBench):
    name = "toybench"
    title = "Toy"


@pytest.fixture
def plugin():
    """Register a protocol and a benchmark as a plugin would; forget them after the test."""
    register_protocol(
        ProtocolSpec(
            name="word_count",
            kind="offline",
            builder=lambda opts, engine: WordCount(),
            description="a plugin's word count",
        )
    )
    register_benchmark(
        BenchmarkSpec(name="toybench", loader=ToyBench, prompts={"default": "Say it in words."})
    )
    yield
    protocols.unregister("word_count")
    benchmarks.unregister("toybench")


def test_registered_protocol_and_benchmark_are_in_the_cli_help(plugin):
    score_help = run_cli("score", "--help").output
    assert "word_count" in score_help and "toybench" in score_help
    eval_help = run_cli("eval", "--help").output  # an offline protocol: a --scorers choice
    assert "word_count" in eval_help and "toybench" in eval_help


def test_help_lists_only_what_is_registered():
    assert "word_count" not in run_cli("score", "--help").output


def test_registered_protocol_scores_a_registered_benchmark(plugin, tmp_path):
    data = tmp_path / "toy"
    shutil.copytree(MINISET_DIR / "isg", data)
    preds = tmp_path / "predictions.jsonl"
    from interleave_bench import load_benchmark

    samples = list(load_benchmark("toybench", data, download=False))
    assert samples and all(s.benchmark == "toybench" for s in samples)
    with open(preds, "w") as f:
        for i, s in enumerate(samples):
            words = "one two three" if i % 2 == 0 else "one"
            out = Interleaved([Segment.of_text(words)])
            f.write(json.dumps(Prediction(s.id, "m", out).to_dict()) + "\n")
    code, result = cli_json(
        "score",
        "--bench",
        "toybench",
        "--data",
        str(data),
        "--predictions",
        str(preds),
        "--protocol",
        "word_count",
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 0, result
    assert result["scorer"] == "word_count" and result["benchmark"] == "toybench"
    assert result["counts"]["valid"] == len(samples)
    assert result["overall"] == pytest.approx(
        sum(i % 2 == 0 for i in range(len(samples))) / len(samples)
    )
    # the benchmark's own wording is the default instruction
    prompt = build_prompt(samples[0], load_templates())
    assert prompt.text.endswith("Say it in words.")


def test_recipe_rewards_accept_a_registered_protocol_and_refuse_pairwise(plugin):
    from interleave_bench.train.config import TrainConfig
    from interleave_bench.train.recipe_rewards import validate_rewards

    assert validate_rewards(TrainConfig("m", "o", rewards=[{"protocol": "word_count"}])) == [
        "word_count"
    ]
    with pytest.raises(ValueError, match="opening_pairwise"):
        validate_rewards(TrainConfig("m", "o", rewards=[{"protocol": "opening_pairwise"}]))


def test_unknown_protocol_is_a_did_you_mean_usage_error(tmp_path):
    preds = tmp_path / "p.jsonl"
    preds.write_text("")
    r = run_cli(
        "score", "--bench", "isg:sample", "--predictions", str(preds), "--protocol", "structur"
    )
    assert r.exit_code == 2
    assert "did you mean 'structure'" in r.output and "Traceback" not in r.output


def test_eval_refuses_a_protocol_of_the_wrong_kind():
    r = run_cli("eval", "--protocol", "opening_pairwise", "--out", "unused")
    assert r.exit_code == 2 and "pairwise protocol" in r.output


def test_pairwise_is_its_own_interface_not_a_scorer():
    from interleave_bench.protocols import get_protocol
    from interleave_bench.scorers.opening import OpenINGPairwiseScorer

    assert issubclass(OpenINGPairwiseScorer, PairwiseScorer)
    assert not issubclass(OpenINGPairwiseScorer, Scorer)
    assert not hasattr(OpenINGPairwiseScorer, "ascore")  # no call that can only raise
    assert get_protocol("opening_pairwise").kind == "pairwise"


def test_a_benchmark_without_a_spec_is_a_named_error_not_a_bare_prompt():
    sample = Sample("s1", "nobench", Interleaved([Segment.of_text("q")]))
    with pytest.raises(UnknownNameError, match="nobench"):
        build_prompt(sample)
    # a trainer's in-memory samples say so explicitly and are put as they are
    assert build_prompt(sample, unknown="as_is").text == "q"


def test_importer_formats_and_boards_come_from_protocol_specs():
    from interleave_bench.importers import formats
    from interleave_bench.leaderboard import SPECS

    assert formats() == ["isg", "mmie-feedback", "opening-pairwise", "opening-scores"]
    assert sorted(SPECS) == ["interleavedbench", "mmie", "opening"]
