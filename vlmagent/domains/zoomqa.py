"""ZoomQA: a synthetic "look closer" task, generated from a seed.

Large cluttered images (sides not multiples of 28) with ONE small target inside a thin magenta
frame. The frame is visible at the model's default resolution (so it knows where to look), but
the target is drawn from bitmap cells smaller than one seen pixel, so it can only be read after
zooming into the frame (the zoom tool crops from the original pixels). Targets: a digit, a
4-letter sign word, a shape, or the colour of one of three shapes. Answers are a closed set.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw

from vlmagent.domains.common import (
    check,
    check_kinds,
    eval_metrics,
    load_samples,
    normalize,
    save_samples,
    seen_box,
)
from vlmagent.images import QWEN2_5_VL_DEFAULT
from vlmagent.protocol import get_format
from vlmagent.types import Sample, ToolCall

DOMAIN = "zoomqa"
VERSION = 1  # bump when the same arguments draw different samples (the sample cache key)
KINDS = ("digit", "color", "shape", "word")
# Large enough that, under the default 448x448 budget, one bitmap cell is <= 0.35 seen px: then
# even an ideal reader that knows where the glyph is reads it at about chance (tests measure it).
SIZES = ((1600, 1200), (1921, 1081), (1250, 1700), (1777, 1333), (2048, 1536), (1500, 1125))
FRAME_RGB = (230, 0, 230)  # magenta; never used by clutter or answers
GRAIN = 20.0
FRAME_SEEN = 20  # smallest side of the marker frame in seen pixels
CELL_SEEN = 0.35  # seen pixels per bitmap cell, at most (when the image is large enough)
DECOY_RGB = ((120, 120, 120), (150, 100, 40))

# 5x7 (glyphs) and 7x7 (shapes) bitmaps; each row an int, leftmost cell = highest bit.
GLYPHS: dict[str, tuple[int, ...]] = {
    "0": (14, 17, 19, 21, 25, 17, 14), "1": (4, 12, 4, 4, 4, 4, 14),
    "2": (14, 17, 1, 2, 4, 8, 31), "3": (31, 2, 4, 2, 1, 17, 14),
    "4": (2, 6, 10, 18, 31, 2, 2), "5": (31, 16, 30, 1, 1, 17, 14),
    "6": (6, 8, 16, 30, 17, 17, 14), "7": (31, 1, 2, 4, 8, 8, 8),
    "8": (14, 17, 17, 14, 17, 17, 14), "9": (14, 17, 17, 15, 1, 2, 12),
    "A": (14, 17, 17, 17, 31, 17, 17), "E": (31, 16, 16, 30, 16, 16, 31),
    "F": (31, 16, 16, 30, 16, 16, 16), "I": (14, 4, 4, 4, 4, 4, 14),
    "L": (16, 16, 16, 16, 16, 16, 31), "N": (17, 17, 25, 21, 19, 17, 17),
    "O": (14, 17, 17, 17, 17, 17, 14), "P": (30, 17, 17, 30, 16, 16, 16),
    "S": (15, 16, 16, 14, 1, 1, 30), "T": (31, 4, 4, 4, 4, 4, 4),
    "W": (17, 17, 17, 21, 21, 21, 10), "X": (17, 17, 10, 4, 10, 17, 17),
}
SHAPES: dict[str, tuple[int, ...]] = {
    "circle": (28, 62, 127, 127, 127, 62, 28), "square": (127,) * 7,
    "triangle": (8, 28, 28, 62, 62, 127, 127), "cross": (28, 28, 127, 127, 127, 28, 28),
}
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (20, 160, 40), "blue": (30, 60, 220),
    "yellow": (235, 200, 0), "black": (20, 20, 20),
}
WORDS = ("STOP", "EXIT", "OPEN", "SALE", "SLOW", "WAIT", "LEFT", "TAXI")
DIGITS = "0123456789"
ANSWERS = {"digit": list(DIGITS), "word": [w.lower() for w in WORDS], "shape": list(SHAPES),
           "color": list(COLORS)}


def bitmap(rows: Sequence[int], width: int) -> np.ndarray:
    """(7, width) bool array from row ints."""
    return np.array([[(r >> (width - 1 - c)) & 1 for c in range(width)] for r in rows], bool)


def cell_size(seen_scale: float) -> int:
    """Original pixels per bitmap cell: as big as possible while a cell stays below CELL_SEEN
    seen pixels (never below one original pixel)."""
    return max(1, int(CELL_SEEN / seen_scale))


# ---------------------------------------------------------------- drawing
def _paint(canvas: np.ndarray, cells: np.ndarray, x: int, y: int, cell: int,
           rgb: tuple[int, int, int]) -> None:
    """Paint the True cells of `cells` at (x, y), each cell a cell x cell pixel square."""
    mask = np.kron(cells, np.ones((cell, cell), bool))
    region = canvas[y:y + mask.shape[0], x:x + mask.shape[1]]
    region[mask] = rgb


def _target(rng: np.random.Generator, kind: str) -> tuple[list, str, str]:
    """([(cells, x offset in cells, rgb), ...], answer, question) for one target kind."""
    ink = tuple(int(v) for v in rng.integers(0, 60, 3))
    opts = ", ".join(ANSWERS[kind])
    if kind == "digit":
        d = str(rng.choice(list(DIGITS)))
        parts = [(bitmap(GLYPHS[d], 5), 0, ink)]
        return parts, d, "Which digit is written inside the magenta frame? Answer with one digit."
    if kind == "word":
        word = str(rng.choice(WORDS))
        parts = [(bitmap(GLYPHS[ch], 5), 6 * i, ink) for i, ch in enumerate(word)]
        return parts, word.lower(), (f"What word is written on the tiny sign inside the magenta "
                                     f"frame? Options: {opts}.")
    if kind == "shape":
        shape = str(rng.choice(list(SHAPES)))
        color = COLORS[str(rng.choice(list(COLORS)))]
        return [(bitmap(SHAPES[shape], 7), 0, color)], shape, \
            f"What shape is the small symbol inside the magenta frame? Options: {opts}."
    if kind == "color":
        shapes = [str(s) for s in rng.choice(list(SHAPES), 3, replace=False)]
        colors = [str(c) for c in rng.choice(list(COLORS), 3, replace=False)]
        parts = [(bitmap(SHAPES[s], 7), 9 * i, COLORS[c]) for i, (s, c) in
                 enumerate(zip(shapes, colors, strict=True))]
        return parts, colors[0], (f"Inside the magenta frame there are three tiny symbols. What "
                                  f"colour is the {shapes[0]}? Options: {opts}.")
    raise ValueError(f"unknown zoomqa kind {kind!r} (valid: {', '.join(KINDS)})")


def _overlaps(box: Sequence[int], boxes: list[Sequence[int]], margin: int) -> bool:
    return any(box[0] < b[2] + margin and b[0] < box[2] + margin and box[1] < b[3] + margin
               and b[1] < box[3] + margin for b in boxes)


def _frame(canvas: np.ndarray, box: Sequence[int], width: int, rgb: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    canvas[y0:y1, x0:x1] = (250, 250, 245)
    for sl in (np.s_[y0:y0 + width, x0:x1], np.s_[y1 - width:y1, x0:x1],
               np.s_[y0:y1, x0:x0 + width], np.s_[y0:y1, x1 - width:x1]):
        canvas[sl] = rgb


def make_image(seed: int | Sequence[int], kind: str, size: tuple[int, int],
               seen_size: Callable[[int, int], tuple[int, int]] | None = None
               ) -> tuple[Image.Image, dict[str, Any]]:
    """One image and its spec (question, answer, frame box, target box in ORIGINAL pixels).

    `seen_size` (the policy's rule) sizes the frame and glyphs for what the model sees; without
    it, the named Qwen2.5-VL default budget (images.QWEN2_5_VL_DEFAULT)."""
    rng = np.random.default_rng(seed)
    w, h = size
    sw, sh = (seen_size or QWEN2_5_VL_DEFAULT.seen_size)(w, h)
    scale = max(sw / w, sh / h)
    cell = cell_size(scale)
    parts, answer, question = _target(rng, kind)
    tw = max(x + c.shape[1] for c, x, _ in parts) * cell
    th = 7 * cell
    line = max(2, round(1.5 / scale))  # the frame stays ~1.5 seen px thick: visible
    side = max(44, math.ceil(FRAME_SEEN / scale))  # well above zoom's 28 px minimum
    pad_x = max(4 * cell + line, (side - tw) // 2)
    pad_y = max(4 * cell + line, (side - th) // 2)
    fw, fh = tw + 2 * pad_x, th + 2 * pad_y
    fx, fy = int(rng.integers(20, w - fw - 20)), int(rng.integers(20, h - fh - 20))
    frame = [fx, fy, fx + fw, fy + fh]

    # Background: a soft gradient and low-frequency blotches (cheap, and PNG-friendly), then
    # clutter, decoy frames and tiny unreadable glyphs, then the marker frame and target on top.
    gx = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    gy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    blotch = rng.normal(0, 10, (h // 32 + 2, w // 32 + 2)).astype(np.float32)
    base = rng.integers(150, 230, 3)
    base[1] = max(base[1], min(base[0], base[2]))  # no magenta tint: the frame must stand out
    canvas = (base + 30 * gx * rng.uniform(-1, 1, 3)
              + 30 * gy * rng.uniform(-1, 1, 3)).astype(np.float32)
    canvas = canvas + cv2.resize(blotch, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
    canvas = np.clip(canvas, 0, 255).astype(np.uint8)
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    palette = [(200, 60, 40), (40, 120, 200), (60, 170, 80), (230, 180, 40), (90, 90, 90),
               (30, 30, 30), (240, 240, 240), (120, 70, 160), (0, 150, 150)]
    for _ in range(int(rng.integers(30, 60))):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        dx, dy = (int(v) for v in rng.integers(8, 160, 2))
        col = palette[int(rng.integers(len(palette)))]
        shape = int(rng.integers(3))
        if shape == 0:
            draw.rectangle([x, y, x + dx, y + dy], fill=col)
        elif shape == 1:
            draw.ellipse([x, y, x + dx, y + dy], fill=col)
        else:
            draw.line([x, y, x + dx * rng.choice([-1, 1]), y + dy], fill=col,
                      width=int(rng.integers(1, 6)))
    canvas = np.array(img)
    taken: list[Sequence[int]] = [frame]
    for _ in range(int(rng.integers(8, 20))):  # tiny unreadable glyphs everywhere
        cells = bitmap(GLYPHS[str(rng.choice(list(GLYPHS)))], 5)
        x, y = int(rng.integers(0, w - 6 * cell)), int(rng.integers(0, h - 8 * cell))
        if not _overlaps([x, y, x + 5 * cell, y + 7 * cell], taken, 12):
            _paint(canvas, cells, x, y, cell, (20, 20, 20))
    for rgb in DECOY_RGB[:int(rng.integers(1, 3))]:
        dx, dy = int(rng.integers(20, w - fw - 20)), int(rng.integers(20, h - fh - 20))
        decoy = [dx, dy, dx + fw, dy + fh]
        if not _overlaps(decoy, taken, 20):
            _frame(canvas, decoy, line, rgb)
            _paint(canvas, bitmap(GLYPHS[str(rng.choice(list(GLYPHS)))], 5),
                   dx + pad_x, dy + pad_y, cell, (20, 20, 20))
            taken.append(decoy)
    _frame(canvas, frame, line, FRAME_RGB)
    tx, ty = fx + pad_x, fy + pad_y
    for cells, x_cell, rgb in parts:
        _paint(canvas, cells, tx + x_cell * cell, ty, cell, rgb)
    x0, y0, x1, y1 = fx + line, fy + line, fx + fw - line, fy + fh - line
    grain = rng.normal(0, GRAIN, (y1 - y0, x1 - x0, 1))  # sensor-like grain on the sign
    canvas[y0:y1, x0:x1] = np.clip(canvas[y0:y1, x0:x1] + grain, 0, 255).astype(np.uint8)
    spec = {"kind": kind, "question": question, "answer": answer, "box": frame,
            "target_box": [tx, ty, tx + tw, ty + th], "cell": cell, "size": [w, h],
            "frame_width": line}
    return Image.fromarray(canvas), spec


# ---------------------------------------------------------------- samples
def make_samples(n: int, seed: int, out_dir: str | Path, kinds: Sequence[str] = KINDS[:3],
                 size: tuple[int, int] | None = None,
                 seen_size: Callable[[int, int], tuple[int, int]] | None = None) -> list[Sample]:
    """n samples (PNGs written under out_dir), kinds cycled, sizes drawn from SIZES unless given.

    The same (n, seed, kinds, size) always gives the same images and answers.
    """
    check_kinds(DOMAIN, kinds, KINDS)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        wh = size or SIZES[int(np.random.default_rng([seed, i, 1]).integers(len(SIZES)))]
        image, spec = make_image([seed, i], kind, wh, seen_size)
        sid = f"{DOMAIN}-{seed}-{i:05d}"
        path = out / f"{sid}.png"
        image.save(path, compress_level=1)  # fast; the images are large
        prompt = f"{spec['question']} Give the final answer inside <answer></answer>."
        meta = {k: spec[k] for k in ("kind", "box", "target_box", "cell", "size", "frame_width")}
        meta["seed"] = seed
        samples.append(Sample(id=sid, prompt=prompt, images={"image": str(path)},
                              answer=spec["answer"], domain=DOMAIN, meta=meta))
    return samples


def expert_turns(sample: Sample, mode: str, seen_size_fn: Callable[[int, int], tuple[int, int]],
                 fmt: str = "hermes") -> list[str]:
    """Scripted assistant turns for SFT. tool mode: [describe + zoom call, read + answer];
    text mode: [one turn answering directly]."""
    box = seen_box(sample, seen_size_fn)
    sw, sh = seen_size_fn(*sample.meta["size"])
    cx, cy = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
    kind, ans = sample.meta["kind"], str(sample.answer)
    what = {"digit": "a digit", "word": "a short word", "shape": "a small symbol",
            "color": "three small coloured symbols"}[kind]
    desc = (f"<description>A cluttered {sw}x{sh} image; a thin magenta frame marks a small "
            f"region around ({cx}, {cy}) that contains {what}.</description>")
    final = (f"<prediction>The answer is {ans}.</prediction>")
    if mode == "text":
        return [f"<think_no_tools>{desc}<reasoning>The content of the frame answers the "
                f"question.</reasoning>{final}</think_no_tools><answer>{ans}</answer>"]
    if mode != "tool":
        raise ValueError(f"unknown mode {mode!r} (valid: tool, text)")
    call = get_format(fmt).render_call(ToolCall("zoom", {"image": "image", "bbox": box}))
    return [f"<think_with_tools>{desc}<reasoning>The content of the frame is too small to read "
            f"at this resolution, so I zoom into the frame.{call}",
            f"The zoomed image shows the content of the frame clearly.</reasoning>{final}"
            f"</think_with_tools><answer>{ans}</answer>"]


__all__ = ["ANSWERS", "DOMAIN", "KINDS", "VERSION", "check", "eval_metrics", "expert_turns",
           "load_samples", "make_image", "make_samples", "normalize", "save_samples", "seen_box"]
