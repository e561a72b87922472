"""Every protocol as an `evaluate` metric: the same numbers as `ibench score`, offline."""

import json
import zlib

import evaluate
import pytest
from fake_openai import FakeOpenAI, Reply, user_text
from helpers import cli_json
from test_score_cli import mmie_predictions, score_args

from interleave_bench import load_benchmark, metrics
from interleave_bench.config import JudgeSpec
from interleave_bench.media import ImageStore
from interleave_bench.scorers.protocol_files import MMIE_CONSTANTS, MMIE_URL
from interleave_bench.types import Interleaved, Prediction, Segment

SAME = ("overall", "by_category", "counts", "invalid_reasons", "intervals", "scale", "judge")


def varied(body):
    """A judge whose score depends on the request, with one unusable reply."""
    text = user_text(body)
    if "treehouse" in text:
        return Reply(content="no score here")
    return Reply(content=f"### Feedback\nok\n### Score\n{zlib.crc32(text.encode()) % 7}")


@pytest.fixture
def structure_inputs(tmp_path):
    data = load_benchmark("interleavedbench:sample")
    store = ImageStore(tmp_path / "images")  # beside predictions.jsonl: images it may use

    def kept(seg):
        return seg if seg.image is None else Segment.of_image(store.put_file(seg.image.path))

    # even samples keep only their first segment: scores differ by sample
    preds = [
        Prediction(s.id, "m", Interleaved(kept(g) for g in (s.gold if i % 2 else s.gold[:1])))
        for i, s in enumerate(data)
    ]
    file = tmp_path / "predictions.jsonl"
    file.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in preds))
    return data, preds, file


def test_structure_metric_equals_ibench_score(structure_inputs, tmp_path):
    data, preds, file = structure_inputs
    code, cli = cli_json(
        "score",
        "--bench",
        "interleavedbench:sample",
        "--predictions",
        str(file),
        "--protocol",
        "structure",
        "--out",
        str(tmp_path / "run"),
    )
    assert code == 0 and 0 < cli["overall"] < 1
    module = metrics.load("structure")
    assert isinstance(module, evaluate.EvaluationModule)
    got = module.compute(predictions=preds, references=list(data))
    for key in SAME:
        assert got[key] == cli[key], key
    # JSON records and `datasets` rows give the same result
    rows = list(data.to_hf())
    again = metrics.load("structure").compute(
        predictions=[p.to_dict() for p in preds], references=rows
    )
    assert {k: again[k] for k in SAME} == {k: got[k] for k in SAME}


def test_module_script_loads_offline_with_evaluate(structure_inputs, monkeypatch, tmp_path):
    data, preds, _ = structure_inputs
    monkeypatch.setattr(evaluate.config, "HF_MODULES_CACHE", tmp_path / "modules")
    folder = metrics.path("structure")
    module = evaluate.load(folder, keep_in_memory=True, cache_dir=str(tmp_path / "ev"))
    assert module.name == "structure"
    direct = metrics.load("structure").compute(predictions=preds, references=list(data))
    assert module.compute(predictions=preds, references=list(data)) == direct
    script = (tmp_path / "modules").rglob("structure.py")
    assert next(script).read_text().count("import") == 1  # one import per line in the script


def test_metric_info_names_the_official_protocol():
    info = metrics.load("mmie").info
    assert MMIE_URL in info.description and MMIE_URL in info.reference_urls
    assert all(h in info.description for h in MMIE_CONSTANTS.values())
    assert "MMIE" in info.citation
    assert set(metrics.names()) >= {"mmie", "structure", "opening_pairwise"}


def test_mmie_metric_equals_ibench_score_against_the_stand_in_judge(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    preds_file, prompts = mmie_predictions(tmp_path)
    out = tmp_path / "run"
    with FakeOpenAI(varied) as server:
        code, cli = cli_json(*score_args(server, preds_file, prompts, out))
        assert code == 0 and cli["counts"]["invalid"] == 1
        data = load_benchmark("mmie:sample")
        preds = [Prediction(s.id, "gold", s.gold) for s in data]
        sent = len(server.requests)
        got = metrics.load("mmie").compute(
            predictions=preds,
            references=list(data),
            judge=JudgeSpec(judge_model="MMIE-Score", judge_base_url=server.url),
            protocol_file=prompts,
            allow_unofficial=True,
            cache_dir=tmp_path / "metric-cache",
        )
        assert len(server.requests) == sent + 16  # preflight + 15 judged anew
        for key in (*SAME, "overall_percent", "comparable"):
            assert got[key] == cli[key], key
        assert got["metadata"]["prompt_sha256"] == cli["metadata"]["prompt_sha256"]
        # judge settings as keyword arguments, on the score run's own cache: nothing is sent
        sent = len(server.requests)
        cached = metrics.load("mmie").compute(
            predictions=preds,
            references=list(data),
            judge_model="MMIE-Score",
            judge_base_url=server.url,
            preflight=False,
            protocol_file=prompts,
            allow_unofficial=True,
            cache_dir=out,
        )
        assert len(server.requests) == sent
        assert cached["metadata"]["judge_stats"]["cache_hits"] == 15
        assert {k: cached[k] for k in SAME} == {k: cli[k] for k in SAME}


def test_pairwise_metric_equals_ibench_score_against_the_stand_in_judge(tmp_path, monkeypatch):
    """``predictions_b=``: the pairwise path gives ``ibench score``'s win rates and counts."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    data = load_benchmark("opening:sample", limit=4)
    good = [
        Prediction(s.id, "Good", Interleaved(g for g in s.gold if g.image is None)) for s in data
    ]
    bad = [Prediction(s.id, "Bad", Interleaved([Segment.of_text("I cannot help.")])) for s in data]
    files = []
    for name, preds in (("good", good), ("bad", bad)):
        (tmp_path / name).mkdir()
        files.append(tmp_path / name / "predictions.jsonl")
        files[-1].write_text("".join(json.dumps(p.to_dict()) + "\n" for p in preds))
    prompt = tmp_path / "judge_system.txt"
    prompt.write_text("Compare A and B.")

    def script(body):
        text = user_text(body)
        if "[Answer of Model A]" not in text:
            return Reply(content="OK")  # the preflight probe
        a_part = text.split("[Answer of Model A]")[1].split("[Answer of Model B]")[0]
        if data[0].input.text.split()[0] in text and "cannot help" in a_part:
            return Reply(content="Hard to say.")  # one verdict that cannot be read
        return Reply(content="B is better" if "cannot help" in a_part else "A is better")

    with FakeOpenAI(script) as server:
        code, cli = cli_json(
            "score", "--bench", "opening:sample", "--limit", "4",
            "--predictions", str(files[0]), "--predictions-b", str(files[1]),
            "--protocol", "opening_pairwise", "--protocol-file", str(prompt),
            "--allow-unofficial", "--swap", "--judge-base-url", server.url,
            "--judge-model", "gpt-4o", "--out", str(tmp_path / "run"),
        )  # fmt: skip
        assert code == 0, cli
        got = metrics.load("opening_pairwise").compute(
            predictions=good,
            references=list(data),
            predictions_b=bad,
            judge=JudgeSpec(judge_model="gpt-4o", judge_base_url=server.url),
            protocol_file=prompt,
            allow_unofficial=True,
            swap=True,
            cache_dir=tmp_path / "metric-cache",
        )
    assert cli["counts"] == {"valid": 7, "invalid": 1, "error": 0, "total": 8}
    for key in ("win_rates", "counts", "invalid_reasons", "models", "comparable", "judge", "swap"):
        assert got[key] == cli[key], key
