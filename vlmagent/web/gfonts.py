"""Google Fonts for the offline CDN mirror (cdn.py routes fonts.googleapis.com, fonts.bunny.net
and fonts.gstatic.com here). Google's stylesheets differ per browser and name hashed font URLs,
so none is mirrored: each is generated, its @font-face rules pointing at fontsource's latin woff2
files in the mirror, or at a local font for a family the mirror lacks.

A Google family maps to its fontsource package by rule ("Plus Jakarta Sans" ->
@fontsource/plus-jakarta-sans; ALIASES for renamed ones), so a family added to
web/cdn/package.json is answered without a table entry here. Pure: the mirror's package lookup
(`find`) is the only access to the install.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

if TYPE_CHECKING:  # cdn.py imports this module: the type only
    from vlmagent.web.cdn import Package

FILES = "https://fonts.gstatic.com/mirror/"  # where the generated CSS points: cdn.py answers it
ALIASES = {"source-sans-pro": "source-sans-3",  # Google renamed these; fontsource followed
           "source-serif-pro": "source-serif-4"}
# What stands in for a family not in the mirror: the DejaVu fonts setup.sh installs.
LOCAL = ((r"mono|code", "DejaVu Sans Mono"), (r"(?<!sans )serif", "DejaVu Serif"),
         (r"", "DejaVu Sans"))
DISPLAYS = ("auto", "block", "swap", "fallback", "optional")
# css (v1) weight words: "Open Sans:regular,bolditalic" is "Open Sans:400,700i"
LEGACY = {"regular": "400", "bold": "700", "b": "700", "bi": "700i", "italic": "400i",
          "i": "400i", "bolditalic": "700i"}
# Google's icon stylesheets add the class that renders ligatures as icons
ICON_CLASS = (".{cls} {{ font-family: '{name}'; font-weight: normal; font-style: normal; "
              "font-size: 24px; line-height: 1; letter-spacing: normal; text-transform: none; "
              "display: inline-block; white-space: nowrap; word-wrap: normal; direction: ltr; "
              "font-feature-settings: 'liga'; }}\n")


class Unanswered(Exception):
    """A Google Fonts URL this module cannot answer; cdn.py records it as a Miss."""


@dataclass(frozen=True)
class Sheet:
    css: bytes
    spec: str  # "Google Fonts Inter, Foo Sans"
    pinned: str  # "@fontsource/inter@5.3.0", or "local fonts"
    notes: tuple[str, ...]  # "Foo Sans: not in the mirror, local fallback"


def package(family: str) -> str:
    """The fontsource package of a Google family: lowercase, spaces -> dashes, then ALIASES."""
    slug = "-".join(family.lower().split())
    return f"@fontsource/{ALIASES.get(slug, slug)}"


def font_file(path: str) -> tuple[str, str]:
    """/mirror/<slug>/<file>.woff2, as the generated CSS names it -> (package, file in it).
    Google's own /s/<family>/v12/<hash>.woff2 URLs cannot be mapped to a file."""
    if (m := re.fullmatch(r"/mirror/([a-z0-9-]+)/([a-z0-9-]+\.woff2)", path)) is None:
        raise Unanswered("only the font files named by the mirror's Google Fonts CSS are mirrored")
    return f"@fontsource/{m.group(1)}", f"files/{m.group(2)}"


def latin_files(pkg: Package) -> dict[tuple[str, int], str]:
    """A fontsource package's latin woff2 files by (style, weight): the only ones setup.sh
    keeps besides latin-ext, and the range nearly every generated page uses."""
    slug, files = re.escape(pkg.name.partition("/")[2]), {}
    for f in os.listdir(pkg.dir / "files"):
        if m := re.fullmatch(rf"{slug}-latin-(\d+)-(normal|italic)\.woff2", f):
            files[(m.group(2), int(m.group(1)))] = f
    return files


def parse_family(family: str, css2: bool) -> tuple[str, list[tuple[str, int, int]]]:
    """"Inter:ital,wght@0,400;1,100..900" (css2) or "Open Sans:400,700italic" (css) -> the
    name and its (style, lowest weight, highest weight) faces; 400 normal when none parse."""
    name, _, axes = family.partition(":")
    name = " ".join(re.sub(r"[^\w -]", "", name).split())  # it goes between CSS quotes
    faces = []
    try:
        if css2 and "@" in axes:
            keys, _, tuples = axes.partition("@")
            for t in tuples.split(";"):
                vals = dict(zip(keys.split(","), t.split(",")))
                lo, _, hi = vals.get("wght", "400").partition("..")
                faces.append(("italic" if vals.get("ital") == "1" else "normal",
                              int(float(lo)), int(float(hi or lo))))
        elif not css2:
            for v in axes.split(":")[0].lower().split(","):
                v = LEGACY.get(v.strip(), v.strip())
                if v and (m := re.fullmatch(r"(\d*)(i|italic)?", v)):
                    faces.append(("italic" if m.group(2) else "normal",
                                  int(m.group(1) or 400), int(m.group(1) or 400)))
    except ValueError:  # a malformed axis list: the default face, as Google is lenient too
        faces = []
    return name, faces or [("normal", 400, 400)]


def _src(pkg: Package | None, files: dict, style: str, weight: int, name: str) -> str:
    """A mirrored face: the file of the nearest weight fontsource has (same style first).
    Otherwise a local font of the same kind, its Bold for heavy weights (DejaVu has no
    others), so text keeps roughly its metrics instead of Chromium's default serif."""
    if pkg is None:
        local = next(f for pattern, f in LOCAL if re.search(pattern, name, re.I))
        return (f'local("{local} Bold"), ' if weight >= 600 else "") + f'local("{local}")'
    near = min(files, key=lambda k: (k[0] != style, abs(k[1] - weight)))
    return f"url({FILES}{pkg.name.partition('/')[2]}/{files[near]}) format('woff2')"


def stylesheet(path: str, query: str, find: Callable[[str], Package | None]) -> Sheet:
    """css2?family=Inter:wght@400;700, css?family=Open+Sans:400,700i|Lato, icon?family=...:
    an @font-face per requested face (a css2 range: one per weight fontsource has in it).
    `find`: an npm name -> its pinned package in the mirror, or None."""
    if path not in ("/css", "/css2", "/icon"):
        raise Unanswered(f"not a Google Fonts stylesheet: {path}")
    params, css2 = parse_qsl(query), path == "/css2"
    families = [f for k, v in params if k == "family"  # css2 repeats family=, css joins with |
                for f in ([v] if css2 else v.split("|")) if f.strip()]
    if not families:
        raise Unanswered("no family= in the request")
    display = dict(params).get("display", "swap")
    display = display if display in DISPLAYS else "swap"  # it is written into the CSS
    css, used, notes, names = [], [], [], []
    for family in families:
        name, faces = parse_family(family, css2)
        names.append(name)
        pkg = find(package(name))
        files = latin_files(pkg) if pkg is not None else {}
        if not files:  # not installed, or no latin files to point at
            pkg = None
            notes.append(f"{name}: not in the mirror, local fallback")
        else:
            used.append(pkg.label)
        for style, lo, hi in faces:
            inside = sorted({w for s, w in files if s == style and lo <= w <= hi})
            for weight in inside if lo != hi and inside else [lo]:
                css.append(f"@font-face {{\n  font-family: '{name}';\n  font-style: {style};\n"
                           f"  font-weight: {weight};\n  font-display: {display};\n"
                           f"  src: {_src(pkg, files, style, weight, name)};\n}}\n")
        if name.startswith("Material ") and pkg is not None:
            css.append(ICON_CLASS.format(cls=name.lower().replace(" ", "-"), name=name))
    return Sheet("".join(css).encode(), f"Google Fonts {', '.join(dict.fromkeys(names))}",
                 ", ".join(dict.fromkeys(used)) or "local fonts", tuple(dict.fromkeys(notes)))
