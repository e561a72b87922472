"""The HTML report: built from a real run folder, checked as source and in headless Chromium.

Untrusted strings carry payloads that, if they ever ran, would request ``/pwned`` from a local
server; the browser tests count those requests (and any request besides the page itself), and a
control page with one deliberately unescaped payload proves the detector sees execution.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from interleave_bench.aggregate import summarize
from interleave_bench.media import ImageStore
from interleave_bench.report import load_run, write_report
from interleave_bench.types import (
    ImageRef,
    Interleaved,
    Judgment,
    Prediction,
    Sample,
    Segment,
)


def _pay(n: int) -> str:
    """Script body that leaves three traces if it ever runs: a request, a global, an attribute."""
    return (
        f"window.__pwned={n};fetch('/pwned?{n}');"
        f"document.documentElement.setAttribute('data-pwned','{n}')"
    )


OUT_SCRIPT = f"<script>{_pay(1)}</script>"
OUT_IMG = f'<img src=x onerror="{_pay(2)}">'
QUESTION = f"</script><script>{_pay(3)}</script>"
CATEGORY = f'"><svg onload="{_pay(4)}">'
MODEL = f"m'><script>{_pay(5)}</script>"
RAW = f"</pre></details><script>{_pay(6)}</script>"
RED, GREEN, BLUE = (220, 30, 30), (30, 180, 60), (30, 60, 220)


def _png(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> ImageRef:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="PNG")
    return ImageRef(path=str(path))


def _jsonl(path: Path, records) -> None:
    path.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records), encoding="utf-8")


def make_run(tmp_path: Path) -> Path:
    """A finished run with three samples: scored, invalid (carrying payloads) and failed."""
    run = tmp_path / "run"
    data = tmp_path / "data"
    store = ImageStore(run / "images")
    T, I = Segment.of_text, Segment.of_image  # noqa: E741, N806
    samples = [
        Sample(
            id="s1",
            benchmark="mini",
            category="story",
            input=Interleaved([T("Continue the story."), I(_png(data / "a.png", (800, 600), RED))]),
            gold=Interleaved([T("The fox ran."), I(_png(data / "g.png", (64, 64), BLUE))]),
        ),
        Sample(id="s2", benchmark="mini", category=CATEGORY, input=Interleaved([T(QUESTION)])),
        Sample(
            id="s3",
            benchmark="mini",
            category="story",
            input=Interleaved([T("Draw a cat."), I(ImageRef(path=str(data / "gone.png")))]),
        ),
    ]
    out_img = store.put_image(Image.new("RGB", (300, 200), GREEN))
    preds = [
        Prediction("s1", "tiny-model", Interleaved([T("A fox appears."), I(out_img)])),
        Prediction("s2", MODEL, Interleaved([T(OUT_SCRIPT), T(OUT_IMG), I(out_img)])),
        Prediction("s3", "tiny-model", Interleaved([]), error="generation timed out"),
    ]
    judgments = [
        Judgment("s1", "judge", "v1", "ok", {"coherence": 4.0}, 0.8, raw='{"score": 4}'),
        Judgment("s2", "judge", "v1", "invalid", reason="unparseable reply", raw=RAW),
        Judgment("s3", "judge", "v1", "error", reason="judge HTTP 500"),
        Judgment("s1", "structure", "v1", "ok", overall=1.0),
        Judgment("s2", "structure", "v1", "ok", overall=0.25),
    ]
    cats = {s.id: s.category for s in samples}
    results = [
        summarize(
            [j for j in judgments if j.scorer == name],
            cats,
            benchmark="mini",
            scorer=name,
            protocol="v1",
            judge="gpt-judge" if name == "judge" else None,
            scale="0-1",
            resamples=50,
        )
        for name in ("judge", "structure")
    ]
    run.mkdir(parents=True, exist_ok=True)
    _jsonl(run / "samples.jsonl", samples)
    _jsonl(run / "predictions.jsonl", preds)
    _jsonl(run / "judgments.jsonl", judgments)
    results_doc = {"results": [r.to_dict() for r in results]}
    (run / "results.json").write_text(json.dumps(results_doc), encoding="utf-8")
    manifest = {"command": "eval", "argv": ["--model", MODEL], "seed": 0}
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return run


# --------------------------------------------------------------------------- source checks


def test_report_escapes_every_untrusted_string(tmp_path):
    page = write_report(make_run(tmp_path)).read_text(encoding="utf-8")
    for raw in (OUT_SCRIPT, OUT_IMG, QUESTION, CATEGORY, MODEL, RAW):
        assert raw not in page
    for escaped in (
        "&lt;script&gt;window.__pwned=1;",
        "&lt;img src=x onerror=&quot;window.__pwned=2;",
        "&lt;/script&gt;&lt;script&gt;window.__pwned=3;",
        "&quot;&gt;&lt;svg onload=&quot;window.__pwned=4;",
        "m&#x27;&gt;&lt;script&gt;window.__pwned=5;",
        "&lt;/pre&gt;&lt;/details&gt;&lt;script&gt;window.__pwned=6;",
    ):
        assert escaped in page
    # only the page's own two script elements exist, and no injected tag or handler anywhere
    assert page.count("<script") == 2 and page.count("</script>") == 2
    # without JavaScript everything shows: no card starts hidden, only the (inert) controls do
    assert re.findall(r"<[^<>]*\shidden[\s>]", page) == ['<div id="ib-controls" hidden>']
    assert not re.search(r"<(img|svg)[^>]*\son\w+=", page, re.I)
    block = re.search(r'<script type="application/json" id="ib-data">(.*?)</script>', page, re.S)
    assert block is not None and "<" not in block.group(1) and "&" not in block.group(1)
    data = json.loads(block.group(1))
    assert QUESTION.lower() in data["cards"][1]["search"]  # the data survives the escaping
    assert [c["status"] for c in data["cards"]] == [
        {"judge": "ok", "structure": "ok"},
        {"judge": "invalid", "structure": "ok"},
        {"judge": "error"},
    ]


def test_report_shows_summary_images_and_placeholders(tmp_path):
    page = write_report(make_run(tmp_path), tmp_path / "out" / "r.html").read_text("utf-8")
    assert page.count('<article class="card"') == 3
    assert page.count('<div class="result">') == 2 and page.count('<svg class="chart"') == 2
    assert "1 valid · 1 invalid · 1 error · 3 total" in page
    assert "judge HTTP 500: 1; unparseable reply: 1" in page
    assert "image missing: input image 1" in page and "generation timed out" in page
    assert "Raw judge reply: judge" in page and "<h4>Gold</h4>" in page
    urls = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', page)
    assert len(urls) == 4  # input, gold, and the output image in two cards
    sizes = {Image.open(io.BytesIO(base64.b64decode(u))).size for u in urls}
    assert (384, 288) in sizes and max(max(s) for s in sizes) <= 384
    # self-contained: every link is in-page, every source a data URL, no URL beyond the SVG xmlns
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', page))
    assert all(u.startswith("data:image/") for u in re.findall(r'src="([^"]*)"', page))
    assert re.findall(r"https?://[^\s\"']+", page) == ["http://www.w3.org/2000/svg"] * 2


def test_report_reads_single_result_and_partial_runs(tmp_path):
    run = make_run(tmp_path)
    doc = json.loads((run / "results.json").read_text())
    (run / "results.json").write_text(json.dumps(doc["results"][0]))
    with (run / "judgments.jsonl").open("a") as f:
        f.write('{"sample_id": "s1", "scor')  # a run killed mid-write
    loaded = load_run(run)
    assert [r.scorer for r in loaded.results] == ["judge"]
    assert len(loaded.judgments) == 5 and "judgments.jsonl line 6" in loaded.problems[0]
    page = write_report(run).read_text("utf-8")
    assert "judgments.jsonl line 6 skipped" in page and page.count('<div class="result">') == 1
    (run / "results.json").unlink()
    assert "absent" in write_report(run).read_text("utf-8")


# --------------------------------------------------------------------------- browser checks


def _chromium() -> str:
    exe = "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return exe


def _browse(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--no-proxy-server",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


class _Site:
    """A local server for one folder that records every path the browser asks for."""

    def __init__(self, root: Path) -> None:
        hits = self.hits = []

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/favicon.ico":  # the browser's own request, not the page's
                    hits.append(self.path)
                super().do_GET()

            def do_POST(self) -> None:
                hits.append(self.path)
                self.send_error(405)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{name}"

    def __enter__(self) -> _Site:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _dump(exe: str, profile: Path, url: str) -> str:
    proc = _browse(exe, profile, "--dump-dom", "--virtual-time-budget=2000", url)
    assert proc.returncode == 0 and "<html" in proc.stdout, proc.stderr[-2000:]
    return proc.stdout


def test_report_screenshot_is_not_blank(tmp_path):
    exe = _chromium()
    page = write_report(make_run(tmp_path))
    shot = tmp_path / "shot.png"
    proc = _browse(
        exe,
        tmp_path / "profile",
        f"--screenshot={shot}",
        "--window-size=1200,2000",
        page.resolve().as_uri(),
    )
    assert shot.is_file() and shot.stat().st_size > 0, proc.stderr[-2000:]
    with Image.open(shot) as img:
        colors = img.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colors is None or len(colors) > 1


def test_injected_payloads_never_run_in_chromium(tmp_path):
    exe = _chromium()
    page = write_report(make_run(tmp_path))
    html = page.read_text("utf-8")
    site = page.parent
    # the same page without its CSP, so escaping alone must hold; a control page with one raw
    # payload proves this browser set-up reports an executed script; with the CSP kept, the
    # same raw payloads must stay blocked (the second wall)
    no_csp = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html)
    assert no_csp != html
    raw = f'<script>{_pay(98)}</script><img src=x onerror="{_pay(99)}"></body>'
    (site / "nocsp.html").write_text(no_csp, encoding="utf-8")
    (site / "control.html").write_text(no_csp.replace("</body>", raw), encoding="utf-8")
    (site / "cspcontrol.html").write_text(html.replace("</body>", raw), encoding="utf-8")
    with _Site(site) as srv:
        filtered = _dump(exe, tmp_path / "p1", srv.url("nocsp.html#status=error"))
        ordered = _dump(exe, tmp_path / "p2", srv.url("report.html#scorer=structure&sort=asc"))
        assert srv.hits == ["/nocsp.html", "/report.html"]  # nothing ran, nothing was fetched
        _dump(exe, tmp_path / "p3", srv.url("cspcontrol.html"))
        assert srv.hits[2:] == ["/cspcontrol.html"]
        _dump(exe, tmp_path / "p4", srv.url("control.html"))
        assert {"/x", "/pwned?98", "/pwned?99"} <= set(srv.hits[3:])  # the detector works
    for dom in (filtered, ordered):
        assert 'data-js="ready"' in dom  # the page's own script ran (under its CSP too)
        assert not re.search(r"<[a-z][^<>]*\sdata-pwned=", dom)  # no trace in any real tag
    # the filter from the URL (#status=error) left only the failed sample visible
    cards = re.findall(r'<article class="card" id="(s\d)"([^>]*)>', filtered)
    assert [(i, "hidden" in rest) for i, rest in cards] == [
        ("s0", True),
        ("s1", True),
        ("s2", False),
    ]
    assert "1 of 3 samples shown" in filtered
    # sorting by the structure score, low first: 0.25, 1.0, then the unscored sample last
    cards = re.findall(r'<article class="card" id="(s\d)"([^>]*)>', ordered)
    assert [(i, "hidden" in rest) for i, rest in cards] == [
        ("s1", False),
        ("s0", False),
        ("s2", False),
    ]
