"""`ibench score` end to end against a real OpenAI-compatible server on 127.0.0.1."""

import json
import logging
import shutil

from fake_openai import FakeOpenAI, Reply, user_text
from helpers import cli_json, run_cli, write_opening_outputs

from interleave_bench.benchmarks.base import MINISET_DIR
from interleave_bench.scorers.opening import CRITERIA
from interleave_bench.types import Prediction

KEY = "sk-test-SECRET-key-must-never-be-written-0123456789"
PROMPTS = 'SA_SYSTEM_PROMPT = "Judge SA. "\nPBL_SYSTEM_PROMPT = "Judge PBL. "\nMSR_PROMPT = "Judge MSR. "\n'


def mmie_predictions(tmp_path):
    """An MMIE-format predictions file (the official scorer's input), images relative to it."""
    folder = tmp_path / "preds"
    run_cli("data", "inspect", "mmie:sample", "--images", "none")  # extracts the bundled images
    shutil.copytree(MINISET_DIR / "mmie", folder)
    import tarfile

    with tarfile.open(folder / "images.tar.gz") as tf:
        tf.extractall(folder, filter="data")
    prompts = tmp_path / "prompts.py"
    prompts.write_text(PROMPTS)
    return folder / "data.json", prompts


def score_args(server, preds, prompts, out):
    return [
        "score",
        "--bench",
        "mmie",
        "--predictions",
        str(preds),
        "--protocol",
        "mmie",
        "--protocol-file",
        str(prompts),
        "--allow-unofficial",
        "--judge-base-url",
        server.url,
        "--judge-model",
        "MMIE-Score",
        "--out",
        str(out),
    ]


def test_mmie_score_results_files_and_free_rerun(tmp_path, monkeypatch, caplog, capfd):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    preds, prompts = mmie_predictions(tmp_path)
    out = tmp_path / "out"
    with FakeOpenAI() as server:
        code, result = cli_json(*score_args(server, preds, prompts, out))
        sent = len(server.requests)
        code2, again = cli_json(*score_args(server, preds, prompts, out))
        assert len(server.requests) == sent  # served from the cache, no preflight either
    assert code == 0 and code2 == 0
    assert sent == 16  # preflight + 15 items
    for key in (
        "protocol",
        "judge",
        "comparable",
        "overall",
        "by_category",
        "counts",
        "invalid_reasons",
        "overall_percent",
    ):
        assert key in result
    assert result["judge"] == "MMIE-Score" and result["comparable"] is False
    assert result["overall"] == 4.0 and result["overall_percent"] == 66.67
    assert result["by_category"]["situational_analysis"]["n"] == 5
    assert result["counts"] == {"valid": 15, "invalid": 0, "error": 0, "total": 15}
    assert again["overall"] == result["overall"]
    assert again["metadata"]["judge_stats"]["cache_hits"] == 15
    assert again["metadata"]["judge_stats"]["calls"] == 0
    assert {p.name for p in out.iterdir()} >= {
        "judgments.sqlite",
        "judgments.jsonl",
        "results.json",
        "manifest.json",
    }
    assert len((out / "judgments.jsonl").read_text().splitlines()) == 15
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["judge"]["api_key_env"] == "OPENAI_API_KEY"
    # the key reached the server, and nowhere else
    assert all(h["authorization"] == f"Bearer {KEY}" for h in server.headers)
    for f in out.rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f
    captured = capfd.readouterr()
    assert KEY not in captured.out + captured.err and KEY not in caplog.text


def test_faults_are_retried_or_recorded_and_run_completes(tmp_path):
    preds, prompts = mmie_predictions(tmp_path)
    plan = {
        "A girl finds": [Reply(status=429, headers={"Retry-After": "0"}), Reply()],
        "bakery": [Reply(status=429), Reply()],
        "planetarium": [Reply(status=500), Reply()],
        "Grandpa": [Reply(reset=True), Reply()],
        "treehouse": [Reply(content="")],
        "Cactus": [Reply(content="Looks good to me.")],
        "Fitted Sheet": [Reply(content="### Score\n9")],
        "Cast Iron": [Reply(status=400)],
        "Vegetable Journal": [Reply(status=500)] * 10,
    }

    def script(body):
        text = user_text(body)
        for needle, queue in plan.items():
            if needle in text:
                return queue.pop(0) if len(queue) > 1 else queue[0]
        return Reply()

    out = tmp_path / "out"
    with FakeOpenAI(script) as server:
        code, result = cli_json(
            *score_args(server, preds, prompts, out),
            "--max-retries",
            "2",
            "--no-preflight",
            "--judge-transport",
            "aiohttp",
        )
    assert code == 3  # two judge errors: incomplete, a rerun retries them
    assert result["complete"] is False and result["not_scored"] == {"judge error": 2}
    assert result["counts"] == {"valid": 10, "invalid": 3, "error": 2, "total": 15}
    assert result["invalid_reasons"] == {
        "empty reply": 1,
        "judge error": 2,
        "no score": 1,
        "score out of range": 1,
    }
    lines = [json.loads(x) for x in (out / "judgments.jsonl").read_text().splitlines()]
    assert len(lines) == 15 and {x["status"] for x in lines} == {"ok", "invalid", "error"}
    assert all(x["overall"] is None for x in lines if x["status"] != "ok")


def test_opening_output_folder_with_scores(tmp_path):
    folder = tmp_path / "gen_outputs" / "Gold_output"
    write_opening_outputs(folder, skip="0102011")
    prompt = tmp_path / "detailed_score_system.txt"
    prompt.write_text("Score with seven criteria.")
    full = json.dumps({c: {"Score": 7, "Justification": "ok"} for c in CRITERIA})
    with FakeOpenAI(lambda body: Reply(content=full)) as server:
        code, result = cli_json(
            "score",
            "--bench",
            "opening:sample",
            "--predictions",
            str(folder),
            "--protocol",
            "opening_scores",
            "--protocol-file",
            str(prompt),
            "--allow-unofficial",
            "--judge-base-url",
            server.url,
            "--judge-model",
            "gpt-4o",
            "--out",
            str(tmp_path / "o"),
        )
    assert code == 3  # one sample without an output file: incomplete, and said so
    assert result["not_scored"] == {"no prediction": 1}
    assert result["counts"] == {"valid": 11, "invalid": 0, "error": 1, "total": 12}
    assert result["invalid_reasons"] == {"no prediction": 1}
    assert result["overall"] == 7.0
    assert len(server.requests) == 12  # preflight + 11


def test_offline_structure_protocol_on_predictions_jsonl(tmp_path):
    from interleave_bench import load_benchmark
    from interleave_bench.media import ImageStore
    from interleave_bench.types import Interleaved, Segment

    data = load_benchmark("isg:sample")
    path = tmp_path / "predictions.jsonl"
    store = ImageStore(tmp_path / "images")  # images must live beside the predictions file

    def stored(seq):
        return Interleaved(
            [Segment.of_image(store.put_file(x.image.path)) if x.image else x for x in seq]
        )

    with open(path, "w") as f:
        for s in data:
            f.write(json.dumps(Prediction(s.id, "gold", stored(s.gold)).to_dict()) + "\n")
        f.write("{broken\n")
    code, result = cli_json(
        "score",
        "--bench",
        "isg:sample",
        "--predictions",
        str(path),
        "--protocol",
        "structure",
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 0 and result["overall"] == 1.0 and result["counts"]["valid"] == 12
    assert result["metadata"]["problems"] == 1


def test_bad_options_are_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")  # past the missing-key check to the prompts
    preds, prompts = mmie_predictions(tmp_path)
    r = run_cli(
        "score",
        "--bench",
        "mmie",
        "--predictions",
        str(preds),
        "--protocol",
        "mmie",
        "--protocol-file",
        str(prompts),
        "--judge-model",
        "m",
        "--out",
        str(tmp_path / "o"),
    )
    assert r.exit_code == 1 and "do not match the official SHA-256" in r.stderr
    r = run_cli(
        "score",
        "--bench",
        "mmie",
        "--predictions",
        str(preds),
        "--protocol",
        "mmie",
        "--protocol-file",
        str(prompts),
        "--allow-unofficial",
        "--out",
        str(tmp_path / "o2"),
    )
    assert r.exit_code == 1 and "--judge-model is required" in r.stderr
    r = run_cli("score", "--bench", "mmie", "--predictions", str(preds), "--protocol", "nope")
    assert r.exit_code == 2
    with FakeOpenAI(lambda body: Reply(status=401)) as server:
        r = run_cli(*score_args(server, preds, prompts, tmp_path / "p"))
    assert r.exit_code == 1 and "not usable" in r.stderr and "401" in r.stderr


def test_opening_pairwise_between_two_output_folders(tmp_path):
    good = tmp_path / "gen_outputs" / "Good_output"
    write_opening_outputs(good, limit=4)
    bad = tmp_path / "gen_outputs" / "Bad_output"
    bad.mkdir(parents=True)
    for f in good.glob("*.json"):
        row = json.loads(f.read_text())
        row["conversations"][1]["output"] = [{"text": "I cannot help.", "image": None}]
        (bad / f.name).write_text(json.dumps(row))
    prompt = tmp_path / "judge_system.txt"
    prompt.write_text("Compare A and B.")

    def script(body):
        text = user_text(body)
        if "[Answer of Model A]" not in text:
            return Reply(content="OK")  # the preflight probe
        a_part = text.split("[Answer of Model A]")[1].split("[Answer of Model B]")[0]
        return Reply(content="B is better" if "cannot help" in a_part else "A is better")

    with FakeOpenAI(script) as server:
        code, result = cli_json(
            "score",
            "--bench",
            "opening:sample",
            "--predictions",
            str(good),
            "--predictions-b",
            str(bad),
            "--protocol",
            "opening_pairwise",
            "--protocol-file",
            str(prompt),
            "--allow-unofficial",
            "--swap",
            "--judge-base-url",
            server.url,
            "--judge-model",
            "gpt-4o",
            "--out",
            str(tmp_path / "o"),
        )
        sent = len(server.requests)
    assert code == 0, result
    assert sent == 1 + 4 * 2  # preflight + both orders of 4 pairs
    assert result["counts"] == {"valid": 8, "invalid": 0, "error": 0, "total": 8}
    assert result["win_rates"]["fdt"] == {"Bad": 0.0, "Good": 1.0}
    assert result["comparable"] is False and result["swap"] is True
    r = run_cli(
        "score",
        "--bench",
        "opening:sample",
        "--predictions",
        str(good),
        "--protocol",
        "opening_pairwise",
        "--protocol-file",
        str(prompt),
        "--allow-unofficial",
        "--judge-model",
        "m",
        "--out",
        str(tmp_path / "p"),
    )
    assert r.exit_code == 1 and "--predictions-b" in r.stderr
