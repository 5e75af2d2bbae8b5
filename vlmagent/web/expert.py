"""Expert projects for the web-generation prompts (web/briefs.py): the SFT data of webgen training.

`expert_files(rec, compact)` builds the project a record asks for; `expert_response` writes it
as a model's answer (fenced blocks named by path, no prose) that webgen.parse_response reads
back to exactly those files.

compact=True is for tiny models trained on CPU: one fixed skeleton in which only the record's
words and colours change (title, header, nav, one section per spec section, a button that shows
a hidden line, footer; the same inline handler in every record), as short as a complete page can
be. compact=False is a fuller page for GPU-size models: a hero, section cards and a working
widget per `interactive` kind (counter, toggle, tabs, filter, form, quiz, calculator).

Every widget changes the page on every click in document order, because the execution stage's
crawler clicks each candidate once, top to bottom, and counts a click that changed nothing as
dead: tabs and filters start on their LAST button, so the first click already switches.
"""
from __future__ import annotations

import html
import json
from typing import Any

from vlmagent.web.briefs import load_prompts, slug

YEAR = 2025
# A compact static response's size limit: the fixed skeleton (head, header, button, footer, CSS,
# fences) is ~560 characters and each spec section ~105 more (nav link, h2, sentence), so 2-4
# sections land at ~840-1130; a tiny model's context must hold the longest.
COMPACT_MAX_CHARS = 1150


def _h(s: str) -> str:
    return html.escape(str(s), quote=False)


def _jsx(s: str) -> str:
    """Text inside JSX: HTML entities work there; braces would open an expression."""
    return _h(s).replace("{", "&#123;").replace("}", "&#125;")


def _js(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False)


def _tint(accent: str, keep: float) -> str:
    """The accent mixed with white (keep = share of the accent): a pale background of its hue."""
    rgb = [int(accent[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(255 - (255 - c) * keep):02x}" for c in rgb)


def _secs(spec: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(slug(t), t, b) for t, b in zip(spec["sections"], spec["blurbs"])]


# ---------------------------------------------------------------- compact (tiny models)
def _compact_css(accent: str) -> str:
    return (f"body{{max-width:40em;margin:auto;padding:1em;font:18px/1.5 sans-serif;"
            f"background:{_tint(accent, .12)}}}\n"
            f"header,button{{background:{accent};color:#fff;padding:1em;border:0;font:inherit}}\n"
            f"a{{color:#fff}}\nh2{{color:{accent}}}\n")


def _compact_static(spec: dict[str, Any]) -> dict[str, str]:
    name, w, secs = _h(spec["name"]), spec["widget"], _secs(spec)
    nav = " ".join(f"<a href=#s{k}>{_h(t)}</a>" for k, (_, t, _) in enumerate(secs, 1))
    body = "".join(f"<section id=s{k}><h2>{_h(t)}</h2>{_h(b)}</section>\n"
                   for k, (_, t, b) in enumerate(secs, 1))
    page = ("<!doctype html>\n<html lang=en>\n<meta charset=utf-8>\n"
            '<meta name=viewport content="width=device-width">\n'
            f'<title>{name}</title>\n<link rel="stylesheet" href="style.css">\n'
            f"<header><h1>{name}</h1><p>{_h(spec['tagline'])}</p><nav>{nav}</nav></header>\n"
            f'{body}<p><button onclick="out.hidden=!out.hidden">{_h(w["action"])}</button></p>\n'
            f"<p id=out hidden>{_h(w['result'])}</p>\n"
            f"<footer>\u00a9 {YEAR} {name}</footer>\n</html>\n")
    return {"index.html": page, "style.css": _compact_css(spec["accent"])}


def _compact_react(spec: dict[str, Any]) -> dict[str, str]:
    name, w, secs = _jsx(spec["name"]), spec["widget"], _secs(spec)
    nav = " ".join(f'<a href="#s{k}">{_jsx(t)}</a>' for k, (_, t, _) in enumerate(secs, 1))
    body = "".join(f'      <section id="s{k}"><h2>{_jsx(t)}</h2>{_jsx(b)}</section>\n'
                   for k, (_, t, b) in enumerate(secs, 1))
    app = ('import { useState } from "react";\nimport "./App.css";\n\n'
           "export default function App() {\n  const [open, setOpen] = useState(false);\n"
           f"  return (\n    <>\n      <header><h1>{name}</h1><p>{_jsx(spec['tagline'])}</p>"
           f"<nav>{nav}</nav></header>\n      <main>\n{body}"
           f"      <p><button onClick={{() => setOpen(!open)}}>{_jsx(w['action'])}</button></p>\n"
           f"      {{open && <p>{_jsx(w['result'])}</p>}}\n      </main>\n"
           f"      <footer>\u00a9 {YEAR} {name}</footer>\n    </>\n  );\n}}\n")
    return {"src/App.tsx": app, "src/App.css": _compact_css(spec["accent"])}


# ---------------------------------------------------------------- full (GPU-size models)
HEADINGS = {"counter": "Try it", "toggle": "Details", "tabs": "At a glance", "filter": "Browse",
            "form": "", "quiz": "Quick quiz", "calculator": "Calculator"}


def _full_css(accent: str) -> str:
    return f"""\
:root {{ --accent: {accent}; --tint: {_tint(accent, .1)}; --ink: #1f2328; --muted: #4b5563; }}
* {{ box-sizing: border-box; }}
body {{ margin: 0; font: 17px/1.6 system-ui, "DejaVu Sans", sans-serif; color: var(--ink);
  background: var(--tint); }}
.wrap {{ max-width: 60rem; margin: 0 auto; padding: 0 1.25rem; }}
.top, .hero {{ background: var(--accent); color: #fff; }}
.top {{ border-bottom: 1px solid rgb(255 255 255 / .25); }}
.top .wrap {{ display: flex; flex-wrap: wrap; gap: .5rem 1.5rem; align-items: center;
  justify-content: space-between; padding-block: .9rem; }}
.brand {{ font-weight: 700; font-size: 1.15rem; }}
.top nav {{ display: flex; flex-wrap: wrap; gap: .25rem 1.25rem; }}
.top nav a {{ color: #fff; text-decoration: none; border-bottom: 2px solid transparent; }}
.top nav a:hover {{ border-color: #fff; }}
.hero {{ text-align: center; padding: 3rem 0 3.5rem; margin-bottom: 2rem; }}
.hero h1 {{ font-size: clamp(2rem, 6vw, 3rem); line-height: 1.15; margin: 0 0 .5rem; }}
.lead {{ font-size: 1.2rem; max-width: 36rem; margin: 0 auto; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(13rem, 1fr));
  gap: 1.25rem; }}
.card {{ background: #fff; border-radius: 12px; padding: 1.25rem 1.5rem;
  box-shadow: 0 1px 3px rgb(0 0 0 / .12); }}
.card h2 {{ margin: 0 0 .4rem; font-size: 1.25rem; color: var(--accent); }}
.card p {{ margin: 0; }}
.widget {{ margin: 2rem auto; }}
.widget .card {{ max-width: 36rem; margin: 0 auto; }}
button {{ font: inherit; cursor: pointer; border-radius: 8px; padding: .55rem 1.1rem;
  border: 2px solid var(--accent); background: var(--accent); color: #fff; }}
button.ghost, button[aria-pressed="false"] {{ background: #fff; color: var(--accent); }}
.row {{ display: flex; flex-wrap: wrap; gap: .5rem; margin: .75rem 0; }}
.out {{ font-weight: 600; margin: .75rem 0 0; }}
.fields + button {{ margin-top: .75rem; }}
ul.items {{ list-style: none; padding: 0; margin: .5rem 0 0; }}
ul.items li {{ padding: .35rem 0; border-bottom: 1px solid #e5e7eb; }}
form, .fields {{ display: grid; gap: .75rem; }}
label {{ display: grid; gap: .25rem; font-weight: 600; }}
input {{ font: inherit; font-weight: 400; padding: .5rem .6rem; border: 1px solid #9ca3af;
  border-radius: 6px; width: 100%; }}
footer {{ margin-top: 2rem; padding: 1.5rem 1.25rem; background: #fff; color: var(--muted);
  text-align: center; }}
footer p {{ max-width: 36rem; margin: 0 auto; }}
"""


def _widget_html(w: dict[str, Any], kind: str) -> str:
    """The widget's markup (static); app.js brings it to life."""
    if kind == "counter":
        return (f'<p class="out"><span id="count">{w["start"]}</span> {_h(w["label"])}</p>\n'
                f'<button id="add" type="button">{_h(w["action"])}</button>')
    if kind == "toggle":
        return (f'<button id="toggle" type="button" aria-expanded="false" '
                f'aria-controls="more">{_h(w["action"])}</button>\n'
                f'<p id="more" class="out" hidden>{_h(w["result"])}</p>')
    if kind in ("tabs", "filter", "quiz"):
        opts = w["options"] + (["All"] if kind == "filter" else [])
        last = len(opts) - 1
        btns = "".join(f'<button type="button" data-i="{k}"'
                       + (f' aria-pressed="{str(k == last).lower()}"' if kind != "quiz" else "")
                       + f">{_h(o)}</button>" for k, o in enumerate(opts))
        if kind == "tabs":
            return f'<div class="row">{btns}</div>\n<p id="panel" class="out">' \
                   f'{_h(w["panels"][-1])}</p>'
        if kind == "quiz":
            return f'<p>{_h(w["question"])}</p>\n<div class="row">{btns}</div>\n' \
                   '<p id="verdict" class="out">Pick an answer.</p>'
        items = "".join(f'<li data-tag="{_h(t)}">{_h(n)} <small>({_h(t)})</small></li>'
                        for n, t in w["items"])
        return f'<div class="row">{btns}</div>\n<ul id="items" class="items">{items}</ul>'
    if kind == "form":
        fields = "".join(f'<label>{_h(lab)}<input name="{slug(lab)}" type="{t}" required>'
                         "</label>" for lab, t in w["fields"])
        return (f'<form id="form">{fields}<button type="submit">{_h(w["action"])}</button>'
                '</form>\n<p id="thanks" class="out" role="status" hidden></p>')
    fields = "".join(f'<label>{_h(lab)}<input id="in{k}" type="number" value="{v}"></label>'
                     for k, (lab, v) in enumerate(w["inputs"]))
    return (f'<div class="fields">{fields}</div>\n<button id="calculate" type="button">'
            f'{_h(w["action"])}</button>\n<p id="result" class="out" role="status">'
            f'Press {_h(w["action"])} to see the result.</p>')


def _widget_js(w: dict[str, Any], kind: str) -> str:
    g = "document.getElementById"
    if kind == "counter":
        return (f'let n = {w["start"]};\n{g}("add").addEventListener("click", () => {{\n'
                f'  n += 1;\n  {g}("count").textContent = n;\n}});\n')
    if kind == "toggle":
        return (f'const more = {g}("more");\n{g}("toggle").addEventListener("click", e => {{\n'
                "  more.hidden = !more.hidden;\n"
                '  e.currentTarget.setAttribute("aria-expanded", String(!more.hidden));\n});\n')
    if kind in ("tabs", "filter", "quiz"):
        if kind == "tabs":
            act = f'  {g}("panel").textContent = {_js(w["panels"])}[i];\n'
        elif kind == "filter":
            act = ('  const tag = b.textContent;\n  for (const li of document.querySelectorAll('
                   '"#items li"))\n    li.hidden = tag !== "All" && li.dataset.tag !== tag;\n')
        else:
            act = (f'  {g}("verdict").textContent = i === {w["answer"]}\n'
                   '    ? `Right! ${b.textContent} is the answer.`\n'
                   '    : `Not quite: ${b.textContent} is not it. Try again.`;\n')
        press = ('  for (const o of buttons) o.setAttribute("aria-pressed", String(o === b));\n'
                 if kind != "quiz" else "")
        index = "  const i = Number(b.dataset.i);\n" if kind != "filter" else ""
        return ('const buttons = document.querySelectorAll("[data-i]");\n'
                "for (const b of buttons) b.addEventListener(\"click\", () => {\n"
                f"{index}{press}{act}}});\n")
    if kind == "form":
        return (f'{g}("form").addEventListener("submit", e => {{\n  e.preventDefault();\n'
                f'  const thanks = {g}("thanks");\n  thanks.textContent = {_js(w["result"])};\n'
                "  thanks.hidden = false;\n  e.currentTarget.reset();\n});\n")
    return (f'{g}("calculate").addEventListener("click", () => {{\n'
            f'  const a = Number({g}("in0").value), b = Number({g}("in1").value);\n'
            f'  const v = {w["formula"]};\n'
            f'  {g}("result").textContent = Number.isFinite(v) ? `{w["output"]}: ${{v.toFixed(2)'
            '}` : "Please enter two numbers.";\n});\n')


def _full_static(spec: dict[str, Any]) -> dict[str, str]:
    name, w, kind = _h(spec["name"]), spec["widget"], spec["interactive"]
    nav = "".join(f'<a href="#{i}">{_h(t)}</a>' for i, t, _ in _secs(spec))
    cards = "\n".join(f'<section class="card" id="{i}"><h2>{_h(t)}</h2><p>{_h(b)}</p></section>'
                      for i, t, b in _secs(spec))
    title = HEADINGS[kind] or _h(w["action"])
    page = f"""\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{name}</title>
<meta name="description" content="{_h(spec['tagline'])}">
<link rel="stylesheet" href="style.css">
</head>
<body>
<header class="top"><div class="wrap"><span class="brand">{name}</span><nav>{nav}</nav></div>
</header>
<main>
<section class="hero"><div class="wrap"><h1>{name}</h1>
<p class="lead">{_h(spec['tagline'])}</p></div></section>
<div class="grid wrap">
{cards}
</div>
<section class="widget wrap" id="try"><div class="card"><h2>{title}</h2>
{_widget_html(w, kind)}
</div></section>
</main>
<footer><p>&copy; {YEAR} {name} &middot; {_h(spec['topic'])}</p></footer>
<script src="app.js"></script>
</body>
</html>
"""
    return {"index.html": page, "style.css": _full_css(spec["accent"]),
            "app.js": _widget_js(w, kind)}


def _widget_tsx(w: dict[str, Any], kind: str) -> tuple[str, str]:
    """(state hooks and handlers, JSX) of the widget for App.tsx."""
    if kind == "counter":
        return (f"  const [count, setCount] = useState({w['start']});\n",
                f'<p className="out">{{count}} {_jsx(w["label"])}</p>\n'
                f'            <button type="button" onClick={{() => setCount(count + 1)}}>'
                f'{_jsx(w["action"])}</button>')
    if kind == "toggle":
        return ("  const [open, setOpen] = useState(false);\n",
                '<button type="button" aria-expanded={open} onClick={() => setOpen(!open)}>'
                f'{_jsx(w["action"])}</button>\n'
                f'            {{open && <p className="out">{_jsx(w["result"])}</p>}}')
    if kind in ("tabs", "filter"):
        opts = w["options"] + (["All"] if kind == "filter" else [])
        hook = (f"  const options = {_js(opts)};\n"
                f"  const [pick, setPick] = useState({len(opts) - 1});\n")
        btns = ('<div className="row">{options.map((o, i) => (\n'
                '              <button key={o} type="button" aria-pressed={i === pick} '
                "onClick={() => setPick(i)}>{o}</button>))}</div>")
        if kind == "tabs":
            return (hook + f"  const panels = {_js(w['panels'])};\n",
                    btns + '\n            <p className="out">{panels[pick]}</p>')
        return (hook + f"  const items = {_js(w['items'])};\n",
                btns + '\n            <ul className="items">{items.filter(([, t]) => '
                'options[pick] === "All" || t === options[pick]).map(([n, t]) => (\n'
                "              <li key={n}>{n} <small>({t})</small></li>))}</ul>")
    if kind == "quiz":
        return (f"  const options = {_js(w['options'])};\n"
                "  const [verdict, setVerdict] = useState(\"Pick an answer.\");\n",
                f"<p>{_jsx(w['question'])}</p>\n"
                '            <div className="row">{options.map((o, i) => (\n'
                '              <button key={o} type="button" onClick={() => setVerdict(i === '
                f'{w["answer"]}\n                ? `Right! ${{o}} is the answer.` : `Not quite: '
                '${o} is not it. Try again.`)}>{o}</button>))}</div>\n'
                '            <p className="out">{verdict}</p>')
    if kind == "form":
        return ("  const [sent, setSent] = useState(false);\n",
                "<form onSubmit={e => { e.preventDefault(); setSent(true); "
                "e.currentTarget.reset(); }}>\n"
                + "".join(f'              <label>{_jsx(lab)}<input name="{slug(lab)}" '
                          f'type="{t}" required /></label>\n' for lab, t in w["fields"])
                + f'              <button type="submit">{_jsx(w["action"])}</button>\n'
                f'            </form>\n            {{sent && <p className="out" role="status">'
                f'{_jsx(w["result"])}</p>}}')
    (la, va), (lb, vb) = w["inputs"]
    return (f'  const [a, setA] = useState("{va}");\n  const [b, setB] = useState("{vb}");\n'
            '  const [result, setResult] = useState("");\n'
            "  const calculate = () => {\n    const [a1, b1] = [Number(a), Number(b)];\n"
            f"    const v = {w['formula'].replace('a', 'a1').replace('b', 'b1')};\n"
            f"    setResult(Number.isFinite(v) ? `{w['output']}: ${{v.toFixed(2)}}` "
            ': "Please enter two numbers.");\n  };\n',
            f'<label>{_jsx(la)}<input type="number" value={{a}} onChange={{e => '
            'setA(e.target.value)} /></label>\n'
            f'            <label>{_jsx(lb)}<input type="number" value={{b}} onChange={{e => '
            'setB(e.target.value)} /></label>\n'
            f'            <button type="button" onClick={{calculate}}>{_jsx(w["action"])}'
            '</button>\n'
            f'            <p className="out" role="status">{{result || "Press '
            f'{w["action"]} to see the result."}}</p>')


def _full_react(spec: dict[str, Any]) -> dict[str, str]:
    name, w, kind = _jsx(spec["name"]), spec["widget"], spec["interactive"]
    hooks, widget = _widget_tsx(w, kind)
    nav = "".join(f'<a href="#{i}">{_jsx(t)}</a>' for i, t, _ in _secs(spec))
    cards = "".join(f'          <section className="card" id="{i}"><h2>{_jsx(t)}</h2>'
                    f"<p>{_jsx(b)}</p></section>\n" for i, t, b in _secs(spec))
    title = _jsx(HEADINGS[kind] or w["action"])
    app = f"""\
import {{ useEffect, useState }} from "react";
import "./App.css";

export default function App() {{
{hooks}  useEffect(() => {{ document.title = {_js(spec["name"])}; }}, []);
  return (
    <>
      <header className="top"><div className="wrap"><span className="brand">{name}</span>
        <nav>{nav}</nav></div></header>
      <main>
        <section className="hero"><div className="wrap"><h1>{name}</h1>
          <p className="lead">{_jsx(spec["tagline"])}</p></div></section>
        <div className="grid wrap">
{cards}        </div>
        <section className="widget wrap" id="try">
          <div className="card"><h2>{title}</h2>
            {widget}
          </div>
        </section>
      </main>
      <footer><p>&copy; {YEAR} {name} &middot; {_jsx(spec["topic"])}</p></footer>
    </>
  );
}}
"""
    return {"src/App.tsx": app, "src/App.css": _full_css(spec["accent"])}


# ---------------------------------------------------------------- public
LANG = {"html": "html", "css": "css", "js": "js", "tsx": "tsx"}


def expert_files(rec: dict[str, Any], compact: bool = False) -> dict[str, str]:
    """Relative path -> text of the expert project for one prompt record."""
    react = rec["scaffold"] == "vite-react"
    if compact:
        return (_compact_react if react else _compact_static)(rec["spec"])
    return (_full_react if react else _full_static)(rec["spec"])


def expert_response(rec: dict[str, Any], compact: bool = False) -> str:
    """The project as a model writes it: one fenced block per file, path in the info string."""
    return "".join(f"```{LANG[p.rsplit('.', 1)[-1]]} path={p}\n{text}```\n"
                   for p, text in expert_files(rec, compact).items())


def web_corpus(n: int = 400) -> list[str]:
    """Lines of the compact and full expert responses of the first n train records: text to
    train a small BPE tokenizer on, so HTML, CSS and TSX pieces become few tokens. Train only:
    held-out names should not even be merges in the vocabulary."""
    lines: list[str] = []
    for rec in load_prompts(split="train")[:n]:
        for compact in (True, False):
            lines += [ln for ln in expert_response(rec, compact).split("\n") if ln.strip()]
    return lines
