"""HTML report of a scoring run: summary, then one card per site with screenshots and problems.

Everything a site produced (titles, console messages, URLs) is escaped, and the page carries a
CSP that forbids scripts, so a hostile site cannot run code in the report either.
"""
from __future__ import annotations

import html
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

CSP = "default-src 'none'; img-src * data:; style-src 'unsafe-inline'"  # no scripts, ever
CSS = """
body{font:14px/1.45 system-ui,DejaVu Sans,sans-serif;margin:24px auto;max-width:1200px;
  color:#1d2330;background:#f6f7f9}
h1{font-size:22px}
table{border-collapse:collapse}
td,th{padding:4px 10px;text-align:left;border-bottom:1px solid #e3e6ea}
.card{background:#fff;border:1px solid #e3e6ea;border-radius:8px;padding:14px 18px;margin:14px 0}
.head{display:flex;gap:14px;align-items:center;flex-wrap:wrap}
.name{font-weight:600;font-size:16px}
.bar{width:160px;height:10px;background:#e3e6ea;border-radius:5px;overflow:hidden}
.bar i{display:block;height:100%;background:#3b7ddd}
.chip{padding:2px 8px;border-radius:10px;font-size:12px}
.pass{background:#dcf3e2;color:#17602c}
.fail{background:#fbe0e0;color:#8a1c1c}
.skip{background:#eceef1;color:#68707c}
.shots{display:flex;gap:10px;margin:10px 0;flex-wrap:wrap;align-items:flex-start}
.shots img{border:1px solid #d5d9de;max-height:260px}
.err{color:#8a1c1c}
ul{margin:6px 0 0 18px;padding:0}
pre{background:#f2f3f5;padding:8px;overflow:auto;max-height:400px;font-size:12px}
.muted{color:#68707c}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _chips(d: dict[str, Any], stages: list[str]) -> str:
    ran = {s["name"]: s for s in d["stages"]}
    out = []
    for name in stages:
        s = ran.get(name)
        if s is None:
            out.append(f'<span class="chip skip">{_e(name)}: not run</span>')
        else:
            cls = "pass" if s["passed"] else "fail"
            out.append(f'<span class="chip {cls}">{_e(name)} {s["score"]:.2f}</span>')
    return " ".join(out)


def _shots(d: dict[str, Any], rel: Callable[[str], str]) -> str:
    ex = next((s for s in d["stages"] if s["name"] == "execution"), None)
    if not ex:
        return ""
    imgs = []
    for p in ex["details"].get("pages", [])[:4]:
        for key in ("screenshot_desktop", "screenshot_mobile"):
            src = p.get(key)
            if src:
                src = rel(src)
                w = 320 if key.endswith("desktop") else 100
                imgs.append(f'<a href="{_e(src)}"><img src="{_e(src)}" width="{w}" '
                            f'alt="{_e(p["path"])} {key[11:]}" title="{_e(p["path"])}"></a>')
    return f'<div class="shots">{"".join(imgs)}</div>' if imgs else ""


def _problems(d: dict[str, Any]) -> str:
    items: list[str] = []
    for s in d["stages"]:
        det = s.get("details", {})
        items += [f"{s['name']}: {f['file']}: {f['problem']}" for f in det.get("failures", [])]
        items += [f"{s['name']}: {p}" for p in det.get("problems", [])]
        if det.get("error"):
            items.append(f"{s['name']}: {det['error']}")
    if not items:
        return ""
    more = f"<li class=muted>... {len(items) - 30} more</li>" if len(items) > 30 else ""
    return "<ul>" + "".join(f"<li>{_e(i)}</li>" for i in items[:30]) + more + "</ul>"


def render(lines: list[dict[str, Any]], summary: Any,
           rel: Callable[[str], str] = lambda s: s) -> str:
    """The report page; `rel` maps a screenshot path (relative to the results file) to a link."""
    stages = list(summary.stage_pass)
    n = max(1, summary.sites)
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{p}/{summary.sites}</td><td>{100 * p / n:.0f}%</td>"
                   f"</tr>" for k, (p, _) in summary.stage_pass.items())
    cards = []
    for d in sorted(lines, key=lambda d: -d["reward"]):
        err = f'<div class="err">error: {_e(d["error"])}</div>' if d["error"] else ""
        cards.append(
            f'<div class="card" id="{_e(d["site"])}"><div class="head">'
            f'<span class="name">{_e(d["site"])}</span>'
            f'<span class="bar"><i style="width:{100 * d["reward"]:.1f}%"></i></span>'
            f'<b>{d["reward"]:.3f}</b>{_chips(d, stages)}'
            f'<span class="muted">{d["seconds"]:.1f} s</span></div>{err}{_shots(d, rel)}'
            f'{_problems(d)}<details><summary>details</summary><pre>'
            f'{_e(json.dumps(d["stages"], indent=1)[:60000])}</pre></details></div>')
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>vlmagent score report</title><style>{CSS}</style></head><body>
<h1>vlmagent score: {summary.sites} sites, mean reward {summary.mean_reward:.3f}</h1>
<p class="muted">{summary.scored} scored, {summary.resumed} resumed, {summary.duplicates} duplicate
content, {len(summary.errors)} errors, {summary.seconds:.1f} s. The reward is gated: a site that
fails a stage scores below every site that passes it.</p>
<table><tr><th>stage</th><th>passed</th><th></th></tr>{rows}</table>
{"".join(cards)}</body></html>"""


def write_report(lines: list[dict[str, Any]], path: Path, summary: Any,
                 results_dir: Path | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    base = (results_dir or path.parent).resolve()
    here = path.parent.resolve()

    def rel(src: str) -> str:
        return Path(os.path.relpath(base / src, here)).as_posix()

    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(render(lines, summary, rel), encoding="utf-8")
    tmp.replace(path)
