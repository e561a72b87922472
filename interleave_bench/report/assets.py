"""The page's only style sheet and script, inlined so the report is one file that opens offline.

The script never builds markup: it reads the JSON data block, then toggles ``hidden`` and moves
existing cards, so no untrusted string can reach an HTML parser through it. The Content-Security-
Policy allows this script by hash and nothing else, as a second wall behind the escaping.
"""

from __future__ import annotations

import base64
import hashlib

CSS = """
:root{--fg:#1d2330;--muted:#5b6475;--line:#d9dee7;--bg:#f6f7f9;--card:#fff;--accent:#3b6fd8}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
background:var(--bg)}
main{max-width:1280px;margin:0 auto;padding:16px 20px 48px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:18px;margin:28px 0 8px}
h3{font-size:15px;margin:0}h4{font-size:13px;margin:0 0 6px;color:var(--muted);
text-transform:uppercase;letter-spacing:.04em}
code,pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
pre{white-space:pre-wrap;word-break:break-word;background:#f0f2f6;padding:8px;border-radius:4px;
max-height:420px;overflow:auto}
table{border-collapse:collapse;background:var(--card);margin:6px 0 10px}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f6;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:var(--muted)}.notes{background:#fff7e0;border:1px solid #ecd38a;padding:8px 12px;
border-radius:6px}
.result{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 16px;
margin:12px 0}
.chart .bar{fill:var(--accent)}.chart .ci{stroke:#1d2330;stroke-width:1.5;fill:none}
.chart .grid{stroke:#e3e7ee}.chart text{font-size:11px;fill:var(--fg)}
.chart .tick{fill:var(--muted)}
.badge{display:inline-block;padding:1px 7px;border-radius:10px;font-size:12px;margin:2px 4px 2px 0;
border:1px solid transparent}
.st-ok{background:#e3f5e8;border-color:#9fd5ad}.st-invalid{background:#fff1d6;
border-color:#e9c46a}
.st-error{background:#fde2e2;border-color:#ee9a9a}.st-none{background:#eceef2;
border-color:#cfd4dc}
.yes{color:#17733a;font-weight:600}.no{color:#a23b1f;font-weight:600}
#ib-controls{position:sticky;top:0;z-index:2;background:var(--bg);padding:8px 0;
border-bottom:1px solid var(--line);display:flex;flex-wrap:wrap;gap:10px;align-items:center}
#ib-controls label{display:flex;gap:4px;align-items:center}
#ib-controls input[type=search]{min-width:220px}#ib-controls select{max-width:260px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;margin:14px 0;
padding:12px 16px}
.card>header{display:flex;flex-wrap:wrap;gap:8px;align-items:baseline;margin-bottom:8px}
.card>header a{color:var(--accent);text-decoration:none}
.cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:14px}
.seg-text{white-space:pre-wrap;word-break:break-word;margin:0 0 8px}
figure{margin:0 0 8px}figure img{max-width:100%;max-height:384px;border:1px solid var(--line);
border-radius:4px;display:block}
figcaption{font-size:11px;color:var(--muted)}
.missing{display:flex;align-items:center;justify-content:center;min-height:80px;max-width:260px;
padding:8px;border:2px dashed #c9ced8;border-radius:4px;color:var(--muted);font-size:12px;
background:repeating-linear-gradient(45deg,#f6f7f9,#f6f7f9 8px,#eef0f4 8px,#eef0f4 16px)}
.perr{background:#fde2e2;border-radius:4px;padding:6px 8px}
details{margin:4px 0}summary{cursor:pointer;color:var(--accent)}
[hidden]{display:none!important}
"""

JS = """
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const data = JSON.parse($("ib-data").textContent);
  const list = $("ib-cards");
  const controls = $("ib-controls");
  if (!list || !controls) return;
  const f = {cat: $("ib-cat"), status: $("ib-status"), scorer: $("ib-scorer"), q: $("ib-q"),
             sort: $("ib-sort"), count: $("ib-count")};
  const cards = new Map();
  for (const el of list.querySelectorAll("article.card")) cards.set(el.dataset.idx, el);
  const num = (v) => (typeof v === "number" && isFinite(v) ? v : null);
  function score(item, scorer) {
    if (scorer) return num(item.scores[scorer]);
    const vs = Object.values(item.scores).map(num).filter((v) => v !== null);
    return vs.length ? vs.reduce((a, b) => a + b, 0) / vs.length : null;
  }
  function statuses(item, scorer) {
    if (scorer) return [item.status[scorer] || "none"];
    const vs = Object.values(item.status);
    return vs.length ? vs : ["none"];
  }
  function matches(item) {
    const c = f.cat.value;
    if (c === "none" && item.category !== null) return false;
    if (c !== "" && c !== "none" && item.category !== data.categories[Number(c)]) return false;
    if (f.status.value && !statuses(item, f.scorer.value).includes(f.status.value)) return false;
    const q = f.q.value.trim().toLowerCase();
    return !q || item.search.includes(q);
  }
  function apply() {
    const items = data.cards.slice();
    const dir = f.sort.value === "asc" ? 1 : f.sort.value === "desc" ? -1 : 0;
    if (dir) {
      items.sort((a, b) => {
        const x = score(a, f.scorer.value), y = score(b, f.scorer.value);
        if (x === null || y === null) return (x === null) - (y === null) || a.idx - b.idx;
        return dir * (x - y) || a.idx - b.idx;
      });
    }
    let shown = 0;
    for (const item of items) {
      const el = cards.get(String(item.idx));
      if (!el) continue;
      const ok = matches(item);
      el.hidden = !ok;
      if (ok) shown += 1;
      list.appendChild(el);
    }
    f.count.textContent = shown + " of " + items.length + " samples shown";
  }
  function setSelect(sel, value) {
    if (Array.from(sel.options).some((o) => o.value === value)) sel.value = value;
  }
  function readHash() {
    if (!location.hash.includes("=")) return;
    const p = new URLSearchParams(location.hash.slice(1));
    if (p.has("category")) {
      const i = data.categories.indexOf(p.get("category"));
      setSelect(f.cat, p.get("category") === "" ? "none" : i >= 0 ? String(i) : "");
    }
    if (p.has("status")) setSelect(f.status, p.get("status"));
    if (p.has("scorer")) setSelect(f.scorer, p.get("scorer"));
    if (p.has("sort")) setSelect(f.sort, p.get("sort"));
    if (p.has("q")) f.q.value = p.get("q");
  }
  function writeHash() {
    const p = new URLSearchParams();
    const c = f.cat.value;
    if (c !== "") p.set("category", c === "none" ? "" : data.categories[Number(c)]);
    if (f.status.value) p.set("status", f.status.value);
    if (f.scorer.value) p.set("scorer", f.scorer.value);
    if (f.sort.value !== "orig") p.set("sort", f.sort.value);
    if (f.q.value) p.set("q", f.q.value);
    const h = p.toString();
    history.replaceState(null, "", h ? "#" + h : location.pathname + location.search);
  }
  readHash();
  for (const el of [f.cat, f.status, f.scorer, f.sort]) {
    el.addEventListener("change", () => { apply(); writeHash(); });
  }
  f.q.addEventListener("input", () => { apply(); writeHash(); });
  controls.hidden = false;
  apply();
  document.documentElement.setAttribute("data-js", "ready");
})();
"""


def script_hash(source: str) -> str:
    """The CSP source expression that allows exactly this inline script."""
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def content_security_policy(script: str) -> str:
    """No network at all: images only from data URLs, the one hashed script, inline styles."""
    return (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src {script_hash(script)}; base-uri 'none'; form-action 'none'"
    )
