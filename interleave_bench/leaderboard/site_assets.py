"""The leaderboard pages' extra style and their one script (allowed by hash in the CSP).

The script never creates markup: it reorders existing table rows by their ``data-v`` values, so
no submitted string can reach an HTML parser through it. ``#sort=KEY&dir=asc|desc`` in the URL
sorts on load, which is also how the browser test drives it.
"""

from __future__ import annotations

from ..report.assets import CSS as REPORT_CSS

CSS = (
    REPORT_CSS
    + """
table.lb th button{font:inherit;font-weight:600;background:none;border:0;padding:0;cursor:pointer;
color:inherit}
table.lb th[aria-sort=ascending] button::after{content:" \\25B2"}
table.lb th[aria-sort=descending] button::after{content:" \\25BC"}
table.lb td.model{max-width:320px;word-break:break-word}table.lb td.date{white-space:nowrap}
.chart .bar.nc{fill:#9aa3b2}
nav a{margin-right:12px;color:var(--accent)}
.legend{font-size:12px;color:var(--muted)}
"""
)

JS = """
(() => {
  "use strict";
  const tables = Array.from(document.querySelectorAll("table.lb"));
  function sortTable(table, key, dir) {
    const ths = Array.from(table.tHead.rows[0].cells);
    const idx = ths.findIndex((th) => th.dataset.key === key);
    if (idx < 0) return;
    const numeric = ths[idx].dataset.type === "num";
    const body = table.tBodies[0];
    const rows = Array.from(body.rows);
    const sign = dir === "asc" ? 1 : -1;
    const val = (tr) => tr.cells[idx].dataset.v || "";
    rows.sort((a, b) => {
      const order = Number(a.dataset.i) - Number(b.dataset.i);
      const x = val(a), y = val(b);
      if (numeric) {
        if (x === "" || y === "") return (x === "") - (y === "") || order;
        return sign * (Number(x) - Number(y)) || order;
      }
      return sign * x.localeCompare(y) || order;
    });
    for (const tr of rows) body.appendChild(tr);
    for (const th of ths) th.removeAttribute("aria-sort");
    ths[idx].setAttribute("aria-sort", dir === "asc" ? "ascending" : "descending");
  }
  for (const table of tables) {
    for (const th of table.tHead.rows[0].cells) {
      const button = th.querySelector("button");
      if (!button) continue;
      button.addEventListener("click", () => {
        const now = th.getAttribute("aria-sort");
        const first = th.dataset.type === "num" ? "desc" : "asc";
        const dir = now === "descending" ? "asc" : now === "ascending" ? "desc" : first;
        sortTable(table, th.dataset.key, dir);
        history.replaceState(null, "", "#sort=" + encodeURIComponent(th.dataset.key) +
                             "&dir=" + dir);
      });
    }
  }
  if (location.hash.includes("=")) {
    const p = new URLSearchParams(location.hash.slice(1));
    const key = p.get("sort");
    if (key) for (const t of tables) sortTable(t, key, p.get("dir") === "asc" ? "asc" : "desc");
  }
  document.documentElement.setAttribute("data-js", "ready");
})();
"""
