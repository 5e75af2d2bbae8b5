"""Raw aesthetic measures of rendered pages: pure functions of a screenshot (numpy RGB) and of
the DOM facts that web/js/measure.js returns. Each returns (value, why); aesthetics.py maps
values to scores by their bands. Formulas, bands and sources: docs/rewards.md, section 4.
"""
from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

Rect = list[float]  # [x, y, w, h] in CSS (= screenshot) pixels of the document
LARGE_PX, LARGE_BOLD_PX = 24.0, 18.66  # WCAG "large text": 18 pt, or 14 pt bold
SAME_COLOUR = 24.0  # RGB distance under which two palette colours read as one (about 3 JND)


def decode_png(png: bytes) -> np.ndarray:
    """H x W x 3 uint8 RGB."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


# ---------------------------------------------------------------- pixels
def colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003): sqrt(var rg + var yb) + 0.3 sqrt(mean rg^2 + mean yb^2)."""
    x = rgb.reshape(-1, 3).astype(np.float64)
    rg = x[:, 0] - x[:, 1]
    yb = 0.5 * (x[:, 0] + x[:, 1]) - x[:, 2]
    return float(math.sqrt(rg.var() + yb.var()) + 0.3 * math.sqrt(rg.mean() ** 2
                                                                  + yb.mean() ** 2))


def edge_density(rgb: np.ndarray) -> float:
    """Share of Canny edge pixels (grey, Gaussian sigma 2, thresholds 0.11/0.27 of 255), as in
    the Aalto Interface Metrics; a proxy for visual clutter."""
    import cv2

    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    blur = cv2.GaussianBlur(gray, (0, 0), 2.0)
    edges = cv2.Canny(blur, 28, 69)
    return float(np.count_nonzero(edges)) / float(edges.size or 1)


# ---------------------------------------------------------------- text
def luminance(rgb: Any) -> float:
    """WCAG 2 relative luminance of an sRGB colour (0..255 channels)."""
    def lin(c: float) -> float:
        c = c / 255.0
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (lin(float(v)) for v in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(fg: Any, bg: Any) -> float:
    """(L1 + 0.05) / (L2 + 0.05), lighter over darker; fg may carry alpha (blended over bg)."""
    a = float(fg[3]) if len(fg) > 3 else 1.0
    fg = [fg[i] * a + bg[i] * (1 - a) for i in range(3)]
    hi, lo = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _pixel_bg(rgb: np.ndarray | None, rect: Rect) -> list[float] | None:
    """Median colour under a text box: glyphs cover a minority of it, so this is the backdrop
    (used where a background image makes the DOM colour unreliable)."""
    if rgb is None:
        return None
    x, y, w, h = (int(round(v)) for v in rect)
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(rgb.shape[1], x + w), min(rgb.shape[0], y + h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return np.median(rgb[y0:y1, x0:x1].reshape(-1, 3), axis=0).tolist()


def text_contrast(dom: dict, rgb: np.ndarray | None) -> tuple[float, str] | None:
    """Share of visible text characters meeting WCAG 2 AA (4.5:1, 3:1 for large text)."""
    total = ok = 0
    worst: tuple[float, str] | None = None
    for t in dom["texts"]:
        if t["fg"][3] < 0.05:  # transparent fill (gradient text): no colour to judge
            continue
        bg = (_pixel_bg(rgb, t["r"][0]) if t["img"] else None) or t["bg"]
        ratio = contrast_ratio(t["fg"], bg)
        large = t["fs"] >= LARGE_PX or (t["fs"] >= LARGE_BOLD_PX and t["fw"] >= 700)
        total += t["n"]
        if ratio >= (3.0 if large else 4.5) - 1e-9:
            ok += t["n"]
        elif worst is None or ratio < worst[0]:
            worst = (ratio, t["t"])
    if not total:
        return None
    why = f"{100 * ok / total:.0f}% of {total} text characters meet WCAG AA"
    if worst:
        why += f"; worst {worst[0]:.2f}:1 on {worst[1]!r}"
    return ok / total, why


def text_overlap(dom: dict) -> tuple[float, str] | None:
    """Area where visible text boxes overlap other text / all text area (0 is right)."""
    area = float(dom.get("text_area") or 0.0)
    if area <= 0:
        return None
    v = min(1.0, float(dom["overlap"]) / area)
    return v, f"{100 * v:.1f}% of the text area lies on other text"


def line_length(dom: dict) -> tuple[float, str] | None:
    """Column width in characters (block width / 0.5 em, a typical mean glyph width), the
    character-weighted median over sentence-length texts (>= 40 characters)."""
    cols = sorted((t["bw"] / (0.5 * t["fs"]), t["n"]) for t in dom["texts"]
                  if t["n"] >= 40 and t["fs"] > 0 and t.get("bw", 0) > 0)
    if not cols:
        return None
    half, acc = sum(n for _, n in cols) / 2, 0
    for v, n in cols:
        acc += n
        if acc >= half:
            return v, f"text columns are about {v:.0f} characters wide"
    return None  # unreachable: acc reaches the total


def typefaces(dom: dict) -> tuple[float, str] | None:
    """Font families carrying at least 2% of the text (typography: two or three at most)."""
    fonts = dom.get("fonts") or {}
    total = sum(fonts.values())
    if not total:
        return None
    used = sorted(f for f, n in fonts.items() if n >= 0.02 * total)
    return float(len(used)), f"{len(used)} font families: {', '.join(used)[:160]}"


# ---------------------------------------------------------------- layout
def _clip(rects: list[Rect], x1: float, y1: float) -> np.ndarray:
    """Rects as [x0, y0, x1, y1] clipped to [0, x1] x [0, y1], empty ones dropped."""
    if not rects:
        return np.zeros((0, 4))
    r = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
    b = np.stack([r[:, 0], r[:, 1], r[:, 0] + r[:, 2], r[:, 1] + r[:, 3]], axis=1)
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, x1)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, y1)
    return b[(b[:, 2] - b[:, 0] > 0) & (b[:, 3] - b[:, 1] > 0)]


def whitespace(dom: dict, max_height: float) -> tuple[float, str] | None:
    """1 - area covered by content (text line boxes, images, controls) / page area, on a 4 px
    grid so overlapping boxes count once."""
    w, h = float(dom["vw"]), float(min(dom["doc_h"], max_height))
    b = _clip(dom["ink"], w, h)
    if w <= 0 or h <= 0:
        return None
    cell = 4.0
    grid = np.zeros((int(math.ceil(h / cell)), int(math.ceil(w / cell))), dtype=bool)
    for x0, y0, x1, y1 in (b / cell):
        grid[int(y0):int(math.ceil(y1)), int(x0):int(math.ceil(x1))] = True
    v = 1.0 - float(grid.mean())
    return v, f"{100 * v:.0f}% of the page is empty space"


def balance(dom: dict) -> tuple[float, str] | None:
    """Visual balance of the first screen: 1 - (|dx| + |dy|) / 2, where (dx, dy) is the offset
    of the area-weighted centre of the content from the screen centre, in half-screens (the
    centre-of-mass form of Ngo et al.'s balance)."""
    w, h = float(dom["vw"]), float(dom["vh"])
    b = _clip(dom["ink"], w, h)
    a = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    if not len(b) or a.sum() <= 0:
        return None
    cx = float((a * (b[:, 0] + b[:, 2]) / 2).sum() / a.sum())
    cy = float((a * (b[:, 1] + b[:, 3]) / 2).sum() / a.sum())
    dx, dy = abs(cx - w / 2) / (w / 2), abs(cy - h / 2) / (h / 2)
    v = 1.0 - (dx + dy) / 2
    side = ("left" if cx < w / 2 else "right") if dx >= dy else ("top" if cy < h / 2 else "bottom")
    return v, f"content centre is off by {100 * dx:.0f}% horizontally, {100 * dy:.0f}% " \
              f"vertically (heavier {side})"


def alignment(dom: dict, tol: float = 3.0) -> tuple[float, str] | None:
    """Distinct left and right edges of content blocks / (2 x blocks): a layout on a grid
    reuses few edges. Edges closer than `tol` px are one edge."""
    blocks = [r for r in dom["blocks"] if r[0] + r[2] > 0 and r[0] < dom["vw"]]
    if len(blocks) < 3:
        return None

    def distinct(xs: list[float]) -> int:
        n, last = 0, -1e9
        for x in sorted(xs):
            if x - last > tol:
                n, last = n + 1, x
        return n
    lefts = distinct([r[0] for r in blocks])
    rights = distinct([r[0] + r[2] for r in blocks])
    v = (lefts + rights) / (2 * len(blocks))
    return v, f"{lefts} left and {rights} right edges for {len(blocks)} blocks"


def mobile_overflow(dom: dict) -> tuple[float, str]:
    """Horizontal overflow at the mobile width, as a share of that width."""
    px = float(dom["overflow"])
    return px / float(dom["vw"] or 1), f"{px:.0f} px wider than the {dom['vw']} px screen"


# ---------------------------------------------------------------- across pages
def _norm_path(p: str) -> str:
    return p[: -len("index.html")] if p.endswith("/index.html") else p


def palette_of(dom: dict) -> dict[tuple[int, int, int], float]:
    """Colours carrying at least 0.1% of the page's colour mass, weighted by sqrt(mass) so the
    page background does not drown the accents that give a site its identity."""
    pal = {tuple(int(c) for c in k.split(",")): float(m) for k, m in dom["palette"].items()}
    total = sum(pal.values()) or 1.0
    return {c: math.sqrt(m) for c, m in pal.items() if m >= 0.001 * total}


def _weighted_match(a: dict, b: dict, same: Any) -> float:
    """Weighted share of a's items that have a counterpart in b."""
    total = sum(a.values())
    if not total:
        return 1.0
    return sum(w for x, w in a.items() if any(same(x, y) for y in b)) / total


def _sym(a: dict, b: dict, same: Any) -> float:
    return 0.5 * (_weighted_match(a, b, same) + _weighted_match(b, a, same))


def _near(c1: tuple, c2: tuple) -> bool:
    return math.dist(c1, c2) <= SAME_COLOUR


def consistency(doms: list[tuple[str, dict]]) -> list[tuple[str, str, float, str]]:
    """(measure, page, value, why): palette, font and navigation agreement of every other
    page with the first (index) page."""
    if len(doms) < 2:
        return []
    (p0, d0), rest = doms[0], doms[1:]

    def fonts(d: dict) -> dict[str, float]:
        total = sum(d["fonts"].values()) or 1
        return {f: n / total for f, n in d["fonts"].items() if n >= 0.02 * total}

    def nav(d: dict) -> set[str]:
        return {_norm_path(p) for p in (d["nav"] or d["links"])}

    out = []
    for name, what, fn in (
            ("palette_consistency", "colours", lambda d: _sym(palette_of(d0), palette_of(d),
                                                               _near)),
            ("font_consistency", "font families", lambda d: _sym(fonts(d0), fonts(d),
                                                                  lambda x, y: x == y)),
            ("nav_consistency", "navigation links", lambda d: _jaccard(nav(d0), nav(d)))):
        for p, d in rest:
            v = fn(d)
            out.append((name, p, v, f"{100 * v:.0f}% of its {what} shared with {p0}"))
    return out


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0
