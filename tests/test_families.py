"""Model families are registered plugins: a spec registered from outside the package is found by
loading, ``--model-type`` and the trainer's dispatch; a missing capability is a named error."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import run_cli

from interleave_bench.media import ImageStore
from interleave_bench.models import families
from interleave_bench.models.base import GenerationOutput, GenerationSettings, ModelError
from interleave_bench.models.loading import load_adapter
from interleave_bench.registry import UnknownNameError
from interleave_bench.train.policy_logprobs import batch_logprobs
from interleave_bench.train.rollout import Rollout, rollout
from interleave_bench.types import Interleaved, Segment

CALLS: list[str] = []


class ToyAdapter:
    """An adapter of the test's own family: answers "toy" in text, never touches Janus code."""

    family = "toyfam"

    def __init__(self, path: str, **options) -> None:
        self.model_id, self.options = f"toy:{path}", options
        self.model = torch.nn.Linear(1, 1)

    def generate(self, prompts, settings, store, *, return_trace=False):
        return [GenerationOutput(Interleaved([Segment.of_text("toy answer")])) for _ in prompts]


class NoRolloutAdapter(ToyAdapter):
    family = "gen_only"


def toy_rollout(adapter, prompts, settings, group_size, store, seed, prompt_offset):
    CALLS.append(f"rollout {len(prompts)}x{group_size} seed={seed} offset={prompt_offset}")
    return [
        Rollout(i, p, None, Interleaved([Segment.of_text("toy")]), None, seed)
        for i, p in enumerate(prompts)
        for _ in range(group_size)
    ]


TOY = families.FamilySpec(
    name="toyfam",
    adapter=ToyAdapter,
    model_types=("toytype",),
    capabilities={"generate": ToyAdapter.generate, "rollout": toy_rollout},
    description="a family declared by a test",
)
GEN_ONLY = families.FamilySpec(
    name="gen_only", adapter=NoRolloutAdapter, capabilities={"generate": ToyAdapter.generate}
)


@pytest.fixture
def registered():
    """Register the test's families the way a plugin would (no file of the package changed)."""
    families.register(TOY)
    families.register(GEN_ONLY)
    CALLS.clear()
    yield
    families.models.unregister("toyfam")
    families.models.unregister("gen_only")


def toy_folder(tmp_path):
    folder = tmp_path / "toy-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "toytype"}))
    return folder


def test_a_registered_family_is_loaded_from_config_json_and_from_model_type(registered, tmp_path):
    folder = toy_folder(tmp_path)
    by_config = load_adapter(str(folder), device="cpu")
    assert isinstance(by_config, ToyAdapter) and by_config.model_id == f"toy:{folder}"
    assert by_config.options == {"device": "cpu", "dtype": None, "load_kwargs": None}
    assert isinstance(load_adapter(str(folder), "TOYFAM"), ToyAdapter)
    assert "toyfam" in families.names()
    assert families.get("toyfam").capability_names() == ["generate", "rollout"]


def test_rollout_dispatches_to_the_registered_family(registered, tmp_path):
    adapter = load_adapter(str(toy_folder(tmp_path)))
    settings = GenerationSettings(temperature=1.0)
    prompts = [Interleaved([Segment.of_text("hi")])] * 2
    rolls = rollout(adapter, prompts, settings, 3, ImageStore(tmp_path / "i"), seed=7)
    assert CALLS == ["rollout 2x3 seed=7 offset=0"]
    assert [r.output.text for r in rolls] == ["toy"] * 6


def test_a_missing_capability_is_a_named_error_never_janus_code(registered, tmp_path):
    adapter = NoRolloutAdapter("x")
    settings = GenerationSettings(temperature=1.0)
    prompts = [Interleaved([Segment.of_text("hi")])]
    with pytest.raises(ModelError, match=r"^gen_only cannot do rollout \(it declares: generate\)"):
        rollout(adapter, prompts, settings, 2, ImageStore(tmp_path / "i"), seed=0)
    with pytest.raises(ModelError, match="gen_only cannot do teacher_forced_logprobs"):
        batch_logprobs(adapter, [], settings)
    with pytest.raises(ModelError, match="replay cannot do rollout"):
        families.get("replay").require("rollout")


def test_an_adapter_of_an_unregistered_family_is_an_error_not_janus(tmp_path):
    class Stray(ToyAdapter):
        family = "stray"

    with pytest.raises(UnknownNameError, match="unknown model family 'stray'"):
        rollout(Stray("x"), [Interleaved()], GenerationSettings(temperature=1.0), 1,
                ImageStore(tmp_path / "i"), seed=0)  # fmt: skip


def test_eval_runs_a_registered_family_by_model_type(registered, tmp_path):
    folder, out = toy_folder(tmp_path), tmp_path / "run"
    r = run_cli(
        "eval", "--model", str(folder), "--model-type", "toyfam", "--bench", "mmie:sample",
        "--limit", "2", "--scorers", "structure", "--out", str(out),
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 2
    assert all(p["output"] == [{"type": "text", "text": "toy answer"}] for p in preds), preds[0]


def test_an_unknown_model_type_is_a_did_you_mean_usage_error(tmp_path):
    r = run_cli(
        "eval", "--model", str(tmp_path), "--model-type", "jnus", "--bench", "mmie:sample",
        "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert r.exit_code == 2
    assert "unknown model family 'jnus'; did you mean 'janus'?" in r.stderr
    assert "Traceback" not in r.output


def test_tiny_names_come_from_the_registry():
    with pytest.raises(
        ModelError, match="tiny:nope: expected one of tiny:emu3, tiny:janus, tiny:text"
    ):
        families.tiny_builder("nope")
    with pytest.raises(ModelError, match="tiny:replay: expected one of"):
        families.tiny_builder("replay")


def test_config_json_detection_keeps_its_rules(tmp_path):
    def folder(name, cfg):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(cfg))
        return tmp_path / name

    assert families.detect(folder("j", {"model_type": "janus"})).name == "janus"
    llama = folder("l", {"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    assert families.detect(llama).name == "text"
    with pytest.raises(ModelError, match="Chameleon cannot emit images"):
        families.detect(folder("c", {"model_type": "chameleon"}))
    with pytest.raises(ModelError, match="unsupported model_type 'bert'"):
        families.detect(folder("b", {"model_type": "bert"}))


def test_a_spec_with_an_unknown_capability_is_refused():
    with pytest.raises(ValueError, match="unknown capabilities \\['rolout'\\]"):
        families.FamilySpec(name="x", adapter=ToyAdapter, capabilities={"rolout": toy_rollout})
