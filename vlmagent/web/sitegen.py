"""Deterministic generated websites for tests and benchmarks.

`generate_sites` makes plausible small multi-page sites, some with the faults the execution
reward must notice; `write_hostile_sites` makes the sites the sandbox must survive. The same
seed always gives the same bytes, so benchmark runs compare like with like.
"""
from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path

from PIL import Image

FAULTS = ("missing_image", "console_error", "broken_link", "no_viewport", "overflow")
_TOPICS = [
    ("Bakery", "Fresh bread and pastries baked every morning."),
    ("Bike Repair", "Tune-ups, flat fixes and full rebuilds."),
    ("Yoga Studio", "Classes for every level, seven days a week."),
    ("Law Office", "Clear advice on contracts, leases and small claims."),
    ("Photography", "Portraits, weddings and product shoots."),
    ("Bookshop", "New and second-hand books, and a reading corner."),
    ("Plant Nursery", "Houseplants, herbs and garden advice."),
    ("Coffee Roasters", "Single-origin beans roasted in small batches."),
]
_EXTRA_PAGES = ["about", "services", "contact"]
_COLORS = ["#2a6f97", "#7b2d26", "#386641", "#6a4c93", "#c77d3a", "#264653"]


def write_site(directory: str | Path, files: dict[str, str | bytes]) -> Path:
    """Write `files` (relative path -> text or bytes) under `directory`; returns the directory."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode("utf-8") if isinstance(content, str) else content
        path.write_bytes(data)
    return root


def png_bytes(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A PNG of a horizontal gradient from `rgb` (left) to white (right)."""
    row = bytes(c + (255 - c) * x // max(1, width - 1) for x in range(width) for c in rgb)
    buf = io.BytesIO()
    Image.frombytes("RGB", (width, height), row * height).save(buf, format="PNG")
    return buf.getvalue()


def _page(title: str, nav: str, body: str, viewport: bool, head_extra: str = "") -> str:
    meta = ('<meta name="viewport" content="width=device-width, initial-scale=1">'
            if viewport else "")
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">{meta}'
            f'<title>{title}</title><link rel="stylesheet" href="style.css">{head_extra}</head>\n'
            f"<body><header><img src=\"logo.png\" alt=\"logo\" width=\"48\" height=\"48\">"
            f"<nav>{nav}</nav></header>\n<main>{body}</main>\n"
            f"<footer>&copy; 2024 {title.split(' - ')[0]}</footer></body></html>\n")


def _site(rng: random.Random) -> tuple[dict[str, str | bytes], list[str]]:
    name, tagline = rng.choice(_TOPICS)
    color = rng.choice(_COLORS)
    pages = ["index"] + rng.sample(_EXTRA_PAGES, rng.randint(0, 3))
    faults = sorted(rng.sample(FAULTS, rng.choice([0, 0, 1, 1, 2])))
    nav = " ".join(f'<a href="{p}.html">{p.title() if p != "index" else "Home"}</a>'
                   for p in pages)
    if "broken_link" in faults:
        nav += ' <a href="pricing.html">Pricing</a>'
    files: dict[str, str | bytes] = {
        "style.css": (f"body{{font-family:sans-serif;margin:0;color:#222}}"
                      f"header{{background:{color};padding:8px;display:flex;gap:12px}}"
                      f"nav a{{color:#fff;margin-right:10px}}main{{padding:16px}}"
                      f".hidden{{display:none}}footer{{padding:16px;color:#666}}"
                      f".wide{{width:1200px;background:#eee}}\n"),
        "logo.png": png_bytes(rng.randint(8, 24), rng.randint(8, 24), (
            int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16))),
    }
    for i, page in enumerate(pages):
        title = name if page == "index" else f"{name} - {page.title()}"
        body = f"<h1>{title}</h1><p>{tagline}</p>"
        body += "".join(f"<p>{rng.choice(_TOPICS)[1]} Item {k + 1} of our list.</p>"
                        for k in range(rng.randint(1, 4)))
        script = ""
        if page == "index" or rng.random() < 0.4:
            body += ('<button id="more">Show more</button><p id="extra" class="hidden">'
                     "Opening hours: 8 to 18, Monday to Saturday.</p>"
                     '<button id="count">Liked 0 times</button>')
            script = ("<script>let n=0;document.getElementById('more').onclick=()=>"
                      "document.getElementById('extra').classList.toggle('hidden');"
                      "document.getElementById('count').onclick=e=>{n++;"
                      "e.target.textContent='Liked '+n+' times'};</script>")
        if page == "contact" or (page == "index" and rng.random() < 0.3):
            body += ('<form id="contact"><input name="name" required placeholder="Name">'
                     '<input type="email" name="email" required><textarea name="msg">'
                     '</textarea><button type="submit">Send</button></form>'
                     '<p id="thanks" class="hidden">Thanks, we will write back.</p>')
            script += ("<script>document.getElementById('contact').onsubmit=e=>{"
                       "e.preventDefault();document.getElementById('thanks')"
                       ".classList.remove('hidden')};</script>")
        if i == 0:
            if "missing_image" in faults:
                body += '<img src="images/hero.jpg" alt="hero">'
            if "console_error" in faults:
                script += "<script>console.error('failed to init widget');</script>"
            if "overflow" in faults:
                body += '<div class="wide">A table that is far too wide for phones.</div>'
        files[f"{page}.html"] = _page(title, nav, body + script, "no_viewport" not in faults)
    return files, faults


def generate_sites(out_dir: str | Path, n: int, seed: int = 0) -> list[Path]:
    """Write `n` sites to out_dir/site000.. and out_dir/manifest.json (site -> its faults)."""
    rng = random.Random(seed)
    out = Path(out_dir)
    paths, manifest = [], {}
    for i in range(n):
        files, faults = _site(rng)
        paths.append(write_site(out / f"site{i:03d}", files))
        manifest[paths[-1].name] = faults
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return paths


# Rows of the huge_dom site: ten times a heavy real page, about a second to lay out.
HUGE_DOM_ROWS = 30_000
_OK = '<!doctype html><html><head><meta charset="utf-8"><title>{t}</title></head><body>{b}</body>'
HOSTILE = {
    "infinite_loop": _OK.format(t="Loop", b="<p>before</p><script>while(true){}</script>"),
    "alert_spam": _OK.format(t="Alerts", b="<p>Alert spam survived.</p><script>for(let i=0;"
                             "i<500;i++){alert('spam '+i);confirm('sure?');prompt('name?')}"
                             "print()</script>"),
    "reload_loop": _OK.format(t="Reload", b="<p>reloading</p><script>addEventListener("
                              "'load',()=>location.reload())</script>"),
    "external_assets": _OK.format(
        t="External", b='<link rel="stylesheet" href="//fonts.example.net/css?family=X">'
        '<script src="https://cdn.example.com/lib.js"></script>'
        '<img src="https://cdn.example.com/logo.png"><p>external assets</p>'),
    "file_fetch": _OK.format(
        t="Files", b="<p>file fetch</p><iframe src=\"file:///etc/passwd\"></iframe>"
        "<img src=\"file:///etc/hostname\"><pre id=\"out\"></pre><script>"
        "fetch('file:///etc/passwd').then(r=>r.text()).then(t=>{out.textContent=t;"
        "document.title+='|'+t.slice(0,40)})"
        ".catch(e=>console.log('blocked'))</script>"),
    "symlink_escape": _OK.format(
        t="Symlinks", b='<a href="secret.txt">secret</a> <a href="etc/passwd">passwd</a>'
        '<img src="etc/hostname"><iframe src="secret.txt"></iframe><pre id="out"></pre>'
        "<script>for(const u of ['secret.txt','etc/passwd','%2e%2e/%2e%2e/etc/passwd'])"
        "fetch(u).then(r=>r.text()).then(t=>{out.textContent+=t;"
        "document.title+='|'+t.slice(0,40)})</script>"),
    "missing_index": _OK.format(t="About", b="<p>There is no index page here.</p>"),
    "memory_hog": _OK.format(t="Hog", b="<p>hog</p><script>const a=[];while(true)"
                             "{a.push(new Array(1e6).fill(Math.random()))}</script>"),
    "huge_dom": _OK.format(t="Huge", b="<script>const f=document.createDocumentFragment();"
                           f"for(let i=0;i<{HUGE_DOM_ROWS};i++){{const d=document.createElement("
                           "'div');d.textContent='row '+i;f.appendChild(d)}"
                           "document.body.appendChild(f)</script>"),
    "popup_spam": _OK.format(t="Popups", b="<p>popups</p><a href=\"#top\" target=\"_blank\">"
                             "open</a><script>for(let i=0;i<200;i++)"
                             "window.open('https://ads.example.com/'+i)</script>"),
    "port_probe": _OK.format(t="Ports", b="<p>ports</p><img src=\"http://localhost:3/x.png\">"
                             "<script>fetch('http://127.0.0.1:1/').catch(()=>0);"
                             "try{new WebSocket('ws://127.0.0.1:2/')}catch(e){}</script>"),
}


def write_hostile_sites(out_dir: str | Path) -> dict[str, Path]:
    """Write every hostile site under out_dir; returns name -> site folder."""
    out = Path(out_dir)
    sites: dict[str, Path] = {}
    for name, html in HOSTILE.items():
        page = "about.html" if name == "missing_index" else "index.html"
        sites[name] = write_site(out / name, {page: html})
    sites["binary_garbage"] = write_site(out / "binary_garbage", {
        "index.html": b"\x00\xff\xfe" + random.Random(7).randbytes(4096) + b"\x00"})
    sites["empty"] = write_site(out / "empty", {})
    root = sites["symlink_escape"]
    for link, target in (("secret.txt", "/etc/passwd"), ("etc", "/etc")):
        if not (root / link).is_symlink():
            os.symlink(target, root / link)
    return sites
