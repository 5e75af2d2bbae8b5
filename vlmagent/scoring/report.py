"""HTML report of a scoring run: batch metrics, a sortable table of sites, then one card per site
with its screenshots and the reasons it lost points.

Everything a site produced (titles, console messages, URLs) is escaped, and the page carries a
CSP whose only allowed script is the report's own sorter (pinned by its sha256), so a hostile
site cannot run code in the report: even markup that slipped through would find no script
source it may use.
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Sorts the table by the clicked column; cells carry their sort key in data-v (numbers sort as
# numbers). Kept tiny and static: its hash is in the CSP, so editing it changes the hash too.
SORTER = """
document.querySelectorAll('th[data-k]').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = document.querySelector('#sites tbody');
    var rows = Array.prototype.slice.call(body.rows);
    var asc = th.getAttribute('aria-sort') !== 'ascending';
    document.querySelectorAll('th[data-k]').forEach(function (h) {
      h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
    var i = th.cellIndex;
    function key(r) { var v = r.cells[i].getAttribute('data-v'); var f = parseFloat(v);
      return isNaN(f) ? v : f; }
    rows.sort(function (a, b) { var x = key(a), y = key(b);
      var c = (typeof x === 'number' && typeof y === 'number') ? x - y
        : String(x).localeCompare(String(y));
      return asc ? c : -c; });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""
SORTER_HASH = base64.b64encode(hashlib.sha256(SORTER.encode()).digest()).decode()
CSP = (f"default-src 'none'; img-src * data:; style-src 'unsafe-inline'; "
       f"script-src 'sha256-{SORTER_HASH}'")
CSS = """
body{font:14px/1.45 system-ui,DejaVu Sans,sans-serif;margin:24px auto;max-width:1240px;
  color:#1d2330;background:#f6f7f9;padding:0 12px}
h1{font-size:22px}
table{border-collapse:collapse;background:#fff}
td,th{padding:4px 10px;text-align:left;border-bottom:1px solid #e3e6ea;vertical-align:middle}
th[data-k]{cursor:pointer;user-select:none;white-space:nowrap}
th[aria-sort=ascending]::after{content:" \\25B2"}
th[aria-sort=descending]::after{content:" \\25BC"}
.metrics{display:flex;gap:14px;flex-wrap:wrap;margin:12px 0}
.metric{background:#fff;border:1px solid #e3e6ea;border-radius:8px;padding:10px 16px;
  min-width:170px}
.metric b{display:block;font-size:24px}
.card{background:#fff;border:1px solid #e3e6ea;border-radius:8px;padding:14px 18px;margin:14px 0}
.head{display:flex;gap:14px;align-items:center;flex-wrap:wrap}
.name{font-weight:600;font-size:16px}
.bar{display:inline-block;width:120px;height:10px;background:#e3e6ea;border-radius:5px;overflow:hidden}
.bar i{display:block;height:100%;background:#3b7ddd}
.chip{padding:2px 8px;border-radius:10px;font-size:12px;white-space:nowrap}
.pass{background:#dcf3e2;color:#17602c}
.fail{background:#fbe0e0;color:#8a1c1c}
.skip{background:#eceef1;color:#68707c}
.shots{display:flex;gap:10px;margin:10px 0;flex-wrap:wrap;align-items:flex-start}
.shots img{border:1px solid #d5d9de;max-height:260px}
.thumb img{border:1px solid #d5d9de;max-height:60px;margin-right:4px;vertical-align:middle}
.err{color:#8a1c1c}
ul{margin:6px 0 0 18px;padding:0}
li{white-space:pre-wrap}
pre{background:#f2f3f5;padding:8px;overflow:auto;max-height:400px;font-size:12px}
.muted{color:#68707c}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _stage(d: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((s for s in d.get("stages", []) if s["name"] == name), None)


# ---------------------------------------------------------------- batch metrics (WebGen-R1)
def batch_metrics(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """The paper's three numbers. Functional success: the execution stage passed. Valid render:
    the index page rendered something (not blank). Aesthetic score: mean 0-5 over the sites the
    aesthetics stage scored (gated sites have none; n says how many)."""
    n = len(lines)
    ex = [_stage(d, "execution") for d in lines]
    ok = sum(1 for s in ex if s and s["passed"])
    renders = sum(1 for s in ex if s and s["details"].get("gate", {}).get("index_renders"))
    aes = [s["details"]["aesthetic_score"] for d in lines
           if (s := _stage(d, "aesthetics")) and "aesthetic_score" in s.get("details", {})]
    return {"sites": n,
            "functional_success_rate": ok / n if n else 0.0,
            "valid_render_ratio": renders / n if n else 0.0,
            "aesthetic_score": sum(aes) / len(aes) if aes else None,
            "aesthetic_n": len(aes),
            "mean_reward": sum(d["reward"] for d in lines) / n if n else 0.0}


# ---------------------------------------------------------------- why a site lost points
def reasons(d: dict[str, Any], stages: list[str]) -> list[str]:
    """Plain sentences, most important first: errors, gates, failed checks, out-of-band measures,
    then stages that never ran because an earlier one failed."""
    out: list[str] = [f"error: {d['error']}"] if d.get("error") else []
    ran = {s["name"] for s in d.get("stages", [])}
    for s in d.get("stages", []):
        name, det = s["name"], s.get("details", {}) or {}
        if det.get("error"):
            out.append(f"{name}: {det['error']}")
        for g, passed in (det.get("gate") or {}).items():
            if not passed:
                out.append(f"{name}: gate failed: {g}")
        for c, v in (det.get("checks") or {}).items():
            if v is False or (not isinstance(v, bool) and isinstance(v, (int, float)) and v < 1):
                out.append(f"{name}: check {c}" + ("" if v is False else f" scored {v:.2f}"))
        out += [f"{name}: {f['file']}: {f['problem']}" for f in det.get("failures", [])]
        out += [f"{name}: {p}" for p in det.get("problems", [])]
        for m in det.get("measures", []):
            if m.get("score", 1.0) < 1 - 1e-9:
                where = " ".join(str(x) for x in (m.get("viewport"), m.get("page")) if x)
                band = _band(*(list(m.get("band") or []) + [None, None])[:2])
                why = f": {m['why']}" if m.get("why") else ""
                out.append(f"{name}: {m['name']} {_num(m.get('value'))}{band}, score "
                           f"{m['score']:.2f}{' on ' + where if where else ''}{why}")
        if det.get("problem") and not det.get("failures"):
            out.append(f"{name}: {det['problem']}")
        log = det.get("log_tail") or det.get("log")
        if log and not s.get("passed", True):  # the head of a failed tool's log says why
            out.append(f"{name}: log:\n{str(log).strip()[:600]}")
        out += [f"{name}: {f['file']}: ignored ({f['reason']})"
                for f in det.get("ignored_files", [])]
    out += [f"{s}: not run (an earlier stage failed its gate)" for s in stages if s not in ran
            and not d.get("error")]
    return out


def _band(lo: Any, hi: Any) -> str:
    if lo is None and hi is None:
        return ""
    text = f">= {_num(lo)}" if hi is None else f"<= {_num(hi)}" if lo is None else \
        f"{_num(lo)}-{_num(hi)}"
    return f" (band {text})"


def _num(x: Any) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}" if isinstance(x, float) else str(x)


# ---------------------------------------------------------------- page pieces
def _shots(d: dict[str, Any], rel: Callable[[str], str], pages: int = 4,
           widths: tuple[int, int] = (320, 100)) -> list[str]:
    ex = _stage(d, "execution")
    imgs = []
    for p in (ex["details"].get("pages", []) if ex else [])[:pages]:
        for key, w in zip(("screenshot_desktop", "screenshot_mobile"), widths):
            if p.get(key):
                src = rel(p[key])
                imgs.append(f'<a href="{_e(src)}"><img src="{_e(src)}" width="{w}" '
                            f'alt="{_e(p["path"])} {key[11:]}" title="{_e(p["path"])}"></a>')
    return imgs


def _chips(d: dict[str, Any], stages: list[str]) -> str:
    out = []
    for name in stages:
        s = _stage(d, name)
        if s is None:
            out.append(f'<span class="chip skip">{_e(name)}: not run</span>')
        else:
            cls = "pass" if s["passed"] else "fail"
            out.append(f'<span class="chip {cls}">{_e(name)} {s["score"]:.2f}</span>')
    return " ".join(out)


def _row(d: dict[str, Any], stages: list[str], rel: Callable[[str], str], why: list[str]) -> str:
    name = _e(d["site"])
    cells = [f'<td data-v="{name}"><a href="#site-{name}">{name}</a></td>',
             f'<td data-v="{d["reward"]:.6f}"><span class="bar"><i style="width:'
             f'{100 * d["reward"]:.1f}%"></i></span> {d["reward"]:.3f}</td>']
    for name in stages:
        s = _stage(d, name)
        cells.append('<td data-v="-1" class="muted">-</td>' if s is None else
                     f'<td data-v="{s["score"]:.6f}"><span class="chip '
                     f'{"pass" if s["passed"] else "fail"}">{s["score"]:.2f}</span></td>')
    a = _stage(d, "aesthetics")
    aes = a["details"].get("aesthetic_score") if a else None
    cells.append(f'<td data-v="{-1 if aes is None else aes}">'
                 f'{"-" if aes is None else f"{aes:.2f}"}</td>')
    cells.append(f'<td class="thumb">{"".join(_shots(d, rel, 1, (96, 30)))}</td>')
    cells.append(f'<td data-v="{len(why)}">{len(why)}</td>')
    cells.append(f'<td data-v="{d["seconds"]:.3f}">{d["seconds"]:.1f} s</td>')
    return "<tr>" + "".join(cells) + "</tr>"


def _network(d: dict[str, Any]) -> str:
    """Requests to other hosts: answered by the offline CDN mirror, blocked by the sandbox, or
    navigations that left the site (not followed)."""
    ex = (_stage(d, "execution") or {}).get("details") or {}
    rows = [("mirrored", r) for r in ex.get("mirrored_requests", [])] + [
        ("blocked", r) for r in ex.get("blocked_requests", [])] + [
        ("left", r) for r in ex.get("left_site", [])]
    if not rows:
        return ""
    chip = {"mirrored": "pass", "blocked": "fail", "left": ""}
    items = "".join(f'<li><span class="chip {chip[k]}">{k}</span> {_e(r)}</li>' for k, r in rows)
    n = {k: sum(k == kind for kind, _ in rows) for k in chip}
    left = f", left the site {n['left']} times" if n["left"] else ""
    return (f"<details><summary>other hosts: {n['mirrored']} mirrored, {n['blocked']} blocked"
            f"{left}</summary><ul>{items}</ul></details>")


def _card(d: dict[str, Any], stages: list[str], rel: Callable[[str], str], why: list[str]) -> str:
    shots = _shots(d, rel)
    items = "".join(f"<li>{_e(w)}</li>" for w in why[:40])
    more = f"<li class=muted>... {len(why) - 40} more</li>" if len(why) > 40 else ""
    lost = (f"<p><b>Lost points:</b></p><ul>{items}{more}</ul>" if why
            else '<p class="muted">No points lost.</p>')
    return (f'<div class="card" id="site-{_e(d["site"])}"><div class="head">'
            f'<span class="name">{_e(d["site"])}</span>'
            f'<span class="bar"><i style="width:{100 * d["reward"]:.1f}%"></i></span>'
            f'<b>{d["reward"]:.3f}</b>{_chips(d, stages)}'
            f'<span class="muted">{d["seconds"]:.1f} s</span></div>'
            f'{"<div class=shots>" + "".join(shots) + "</div>" if shots else ""}{lost}'
            f'{_network(d)}'
            f'<details><summary>all details</summary><pre>'
            f'{_e(json.dumps(d.get("stages", []), indent=1)[:60000])}</pre></details></div>')


def render(lines: list[dict[str, Any]], summary: Any,
           rel: Callable[[str], str] = lambda s: s) -> str:
    """The report page; `rel` maps a screenshot path (relative to the results file) to a link."""
    stages = list(summary.stage_pass)
    m = batch_metrics(lines)
    aes = "-" if m["aesthetic_score"] is None else f"{m['aesthetic_score']:.2f}"
    metrics = "".join(
        f'<div class="metric" data-metric="{k}"><span class="muted">{label}</span><b>{v}</b>'
        f'<span class="muted">{note}</span></div>' for k, label, v, note in [
            ("functional_success_rate", "functional success rate",
             f"{100 * m['functional_success_rate']:.1f}%", "execution stage passed"),
            ("valid_render_ratio", "valid render ratio", f"{100 * m['valid_render_ratio']:.1f}%",
             "index renders a non-blank page"),
            ("aesthetic_score", "mean aesthetic score (0-5)", aes,
             f"over {m['aesthetic_n']} sites that reached it"),
            ("mean_reward", "mean reward", f"{m['mean_reward']:.3f}", f"{m['sites']} sites")])
    n = max(1, summary.sites)
    passes = "".join(f"<tr><td>{_e(k)}</td><td>{p}/{summary.sites}</td><td>{100 * p / n:.0f}%"
                     f"</td></tr>" for k, (p, _) in summary.stage_pass.items())
    ordered = sorted(lines, key=lambda d: -d["reward"])
    why = {id(d): reasons(d, stages) for d in ordered}
    head = "".join(f'<th data-k="{_e(k)}">{_e(k)}</th>' for k in
                   ["site", "reward", *stages, "aesthetic 0-5"]) + \
        '<th>index (desktop, mobile)</th><th data-k="problems">problems</th>' \
        '<th data-k="seconds">time</th>'
    rows = "".join(_row(d, stages, rel, why[id(d)]) for d in ordered)
    cards = "".join(_card(d, stages, rel, why[id(d)]) for d in ordered)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>vlmagent score report</title><style>{CSS}</style></head><body>
<h1>vlmagent score: {summary.sites} sites, mean reward {summary.mean_reward:.3f}</h1>
<div class="metrics">{metrics}</div>
<p class="muted">{summary.scored} scored, {summary.resumed} resumed, {summary.duplicates} duplicate
content, {len(summary.errors)} errors, {summary.seconds:.1f} s. The reward is gated: a site that
fails a stage scores below every site that passes it. Click a column to sort.</p>
<table><tr><th>stage</th><th>passed</th><th></th></tr>{passes}</table>
<h2>Sites</h2>
<table id="sites"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>
<h2>Why each site lost points</h2>
{cards}<script>{SORTER}</script></body></html>"""


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
