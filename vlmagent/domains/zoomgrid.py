"""ZoomGrid: the easy "zoom before you answer" task, small enough for a tiny model on a CPU.

A 224 px image split into a 2x2 grid; one cell holds a white card (black border) with a
striped swatch. The question asks for the swatch's ink colour (red, green, blue, black: chance
0.25). The stripes alternate the ink with its mirror about mid grey (ink + mirror = 255), so the
swatch's mean colour is the same grey for every answer, and each stripe is half the overview's
downscale factor wide, in phase with the grid. With the overview seen at 1/F of the original:

- every overview pixel averages one ink and one mirror stripe, so the colour is gone (not faint:
  gone, up to rounding; tests render the same scene in all four inks and compare);
- the zoom on the card's cell (half the image, seen at the same budget: F/2 original px per
  seen px) shows one stripe per seen pixel, ink on even columns: the colour is readable, even
  by a linear filter.

configs/zoomqa_cascade.yaml sees everything at 28x28 (max_pixels 784, F = 8, stripes 4 px):
the overview is one merged vision token whose four patches are the four cells, so WHERE is in
the token's content; the zoom is one token too. At 56x56 (F = 4, stripes 2 px; the default
when no seen size is given) it works the same with four tokens per image. The card itself is
large and plain, so the overview shows where to zoom; only the zoom shows what colour.
Drawing a sample costs under a millisecond (the PNG write about as much again).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from vlmagent.domains.common import (
    check,
    check_kinds,
    eval_metrics,
    load_samples,
    save_samples,
    seen_box,
)
from vlmagent.images import QWEN2_5_VL_DEFAULT, resize_seen
from vlmagent.protocol import get_format
from vlmagent.tools.base import ToolEnv
from vlmagent.tools.image import ZoomTool, to_seen
from vlmagent.types import Sample, ToolCall

DOMAIN = "zoomgrid"
VERSION = 1  # bump when the same arguments draw different samples (the sample cache key)
KINDS = ("color",)
SIZE = (224, 224)
GRID = 2  # cells per side
CELLS = GRID * GRID
INKS: dict[str, tuple[int, int, int]] = {
    "red": (225, 30, 30), "green": (30, 200, 40), "blue": (30, 50, 230), "black": (15, 15, 15)}
ANSWERS = {"color": list(INKS)}
CELL_NAMES = ("top left", "top right", "bottom left", "bottom right")
MID = 127.5
CARD_RGB = (235, 235, 230)
CLUTTER = [(200, 60, 40), (40, 120, 200), (60, 170, 80), (230, 180, 40), (90, 90, 90),
           (30, 30, 30), (240, 240, 240), (120, 70, 160), (0, 150, 150)]
QUESTION = ("One cell of this image holds a white card with a striped patch. What colour is the "
            "ink of the stripes? Options: red, green, blue, black.")
_INK = np.array(list(INKS.values()), np.float64)


def quarter_size(w: int, h: int, factor: int = QWEN2_5_VL_DEFAULT.factor) -> tuple[int, int]:
    """The seen size assumed when the caller gives none: a quarter of each side, rounded down to
    a multiple of `factor` (the named Qwen2.5-VL default: 224 -> 56)."""
    return max(factor, w // 4 // factor * factor), max(factor, h // 4 // factor * factor)


def stripe_width(size: tuple[int, int], seen_size: Callable[[int, int], tuple[int, int]]) -> int:
    """Original pixels per stripe: half the overview's downscale factor (2 at 224 -> 56)."""
    factor = size[0] / seen_size(*size)[0]
    if factor < 2:
        warnings.warn(f"zoomgrid: the overview is seen at {seen_size(*size)} for a {size} image; "
                      "it must shrink at least 2x or the colour is readable without zooming",
                      stacklevel=3)
    return max(1, round(factor / 2))


def cell_box(cell: int, size: tuple[int, int]) -> list[int]:
    """Cell `cell` (row-major) of the grid in original pixels."""
    cw, ch = size[0] // GRID, size[1] // GRID
    r, c = divmod(cell, GRID)
    return [c * cw, r * ch, (c + 1) * cw, (r + 1) * ch]


def make_image(seed: int | Sequence[int], size: tuple[int, int] = SIZE, stripe: int = 2,
               difficulty: float = 1.0, label: int | None = None
               ) -> tuple[Image.Image, dict[str, Any]]:
    """One image and its spec (cell, answer, card and swatch boxes in original pixels).
    `label` (an index into INKS) overrides the drawn ink and changes nothing else.

    `difficulty` in [0, 1] scales the clutter, the colour cast (0: a clean card on a
    plain background, for the perception warm-up's first steps)."""
    rng = np.random.default_rng(seed)
    w, h = size
    cw, ch = w // GRID, h // GRID
    cell = int(rng.integers(GRID * GRID))
    drawn = int(rng.integers(len(INKS)))
    label = drawn if label is None else label
    # A mild colour cast on everything (the swatch's mean stays the same grey for every ink).
    cast = 1 + 0.1 * difficulty * rng.uniform(-1, 1, 3)

    def tint(rgb: Sequence[float]) -> tuple[int, int, int]:
        return tuple(int(min(255.0, max(0.0, v * c + 0.5))) for v, c in zip(rgb, cast))

    # Background: a smooth gradient between four corner colours, then clutter.
    corners = rng.uniform(110, 200, 3) + 18 * rng.uniform(-1, 1, (2, 2, 3))
    bg = np.clip(corners * cast, 0, 255).astype(np.uint8)
    img = Image.fromarray(bg).resize((w, h), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    n = int(round(int(rng.integers(14, 24)) * difficulty))
    xy, wh = rng.integers(0, min(w, h), (n, 2)), rng.integers(6, 40, (n, 2))
    cols, kinds = rng.integers(len(CLUTTER), size=n), rng.random(n)
    for (x, y), (dx, dy), c, k in zip(xy.tolist(), wh.tolist(), cols.tolist(), kinds.tolist()):
        (draw.rectangle if k < 0.5 else draw.ellipse)([x, y, x + dx, y + dy],
                                                      fill=tint(CLUTTER[c]))
    # The card: large and plain, so the overview shows where it is.
    x0, y0, _, _ = cell_box(cell, size)
    side = int(rng.integers(int(0.75 * min(cw, ch)), int(0.9 * min(cw, ch))))
    cx = x0 + int(rng.integers(3, cw - side - 2))
    cy = y0 + int(rng.integers(3, ch - side - 2))
    line = max(2, min(cw, ch) // 40)
    draw.rectangle([cx, cy, cx + side - 1, cy + side - 1], fill=tint((20, 20, 20)))
    draw.rectangle([cx + line, cy + line, cx + side - 1 - line, cy + side - 1 - line],
                   fill=tint(CARD_RGB))
    # The swatch: ink/mirror stripes `stripe` px wide, ink where (x // stripe) is even (cells
    # start on a multiple of 2 * stripe), under a smooth (Hann) envelope across the stripes so
    # that its edges leave no coloured trace at the overview's resolution either.
    sw = int(rng.integers(int(0.5 * side), int(0.62 * side)))
    sh = int(rng.integers(int(0.35 * side), int(0.47 * side)))
    m = line + 3
    sx = cx + int(rng.integers(m, side - m - sw))
    sy = cy + int(rng.integers(m, side - m - sh))
    xs = np.arange(sx, sx + sw)
    carrier = np.where((xs // stripe) % 2 == 0, 1.0, -1.0)
    envelope = np.sin(np.pi * (np.arange(sw) + 0.5) / sw) ** 2
    wave = rng.uniform(0.8, 1.0) * envelope * carrier
    row = (MID + wave[:, None] * (_INK[label] - MID)) * cast
    a = np.array(img)
    a[sy:sy + sh, sx:sx + sw] = np.clip(row + 0.5, 0, 255).astype(np.uint8)[None]
    spec = {"cell": cell, "answer": list(INKS)[label], "label": label,
            "card": [cx, cy, cx + side, cy + side], "swatch": [sx, sy, sx + sw, sy + sh],
            "stripe": stripe, "size": [w, h]}
    return Image.fromarray(a), spec


# ---------------------------------------------------------------- samples
def make_samples(n: int, seed: int, out_dir: str | Path, kinds: Sequence[str] = KINDS,
                 size: tuple[int, int] | None = None,
                 seen_size: Callable[[int, int], tuple[int, int]] | None = None) -> list[Sample]:
    """n samples (PNGs under out_dir); the same arguments always give the same samples.

    `seen_size` (the policy's resize rule) sets the stripe width so that the overview hides the
    colour and the zoom shows it; without it the overview is assumed at a quarter of each side.
    """
    check_kinds(DOMAIN, kinds, KINDS)
    wh = tuple(size) if size else SIZE
    stripe = stripe_width(wh, seen_size or quarter_size)
    if (wh[0] // GRID) % (2 * stripe):
        raise ValueError(f"zoomgrid: cell width {wh[0] // GRID} must be a multiple of "
                         f"{2 * stripe} (two stripes) so the zoom sees ink on even columns")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(n):
        image, spec = make_image([seed, i], wh, stripe)
        sid = f"{DOMAIN}-{seed}-{i:05d}"
        path = out / f"{sid}.png"
        image.save(path, compress_level=1)
        prompt = f"{QUESTION} Give the final answer inside <answer></answer>."
        meta = {k: spec[k] for k in ("cell", "card", "swatch", "stripe", "size")}
        meta.update(kind="color", box=cell_box(spec["cell"], wh), seed=seed)
        samples.append(Sample(id=sid, prompt=prompt, images={"image": str(path)},
                              answer=spec["answer"], domain=DOMAIN, meta=meta))
    return samples


def expert_turns(sample: Sample, mode: str, seen_size_fn: Callable[[int, int], tuple[int, int]],
                 fmt: str = "hermes") -> list[str]:
    """Scripted assistant turns, kept short for tiny models. tool mode: [name the card's cell,
    zoom on it; answer]; text mode: [answer directly] (from the overview: a guess at best).

    Naming the cell first ("cell 2", row-major from 1) is what makes the recipe hold across
    seeds: the where-decision is then ONE token at ONE position. In the box alone it is spread
    over digits whose positions depend on each other (the row's digit comes one token later when
    the column is "14" than when it is "0"), and a 2-layer model learns each position's reading
    of the overview separately, each after a plateau of seed-dependent length (docs/training.md).
    The box then copies the named cell, which a small model learns at once."""
    ans = str(sample.answer)
    if mode == "text":
        return [f"<think_no_tools></think_no_tools><answer>{ans}</answer>"]
    if mode != "tool":
        raise ValueError(f"unknown mode {mode!r} (valid: tool, text)")
    call = get_format(fmt).render_call(ToolCall("zoom", {"bbox": seen_box(sample,
                                                                          seen_size_fn)}))
    return [f"<think_with_tools>cell {sample.meta['cell'] + 1}{call}",
            f"</think_with_tools><answer>{ans}</answer>"]


# ---------------------------------------------------------------- perception data
def views(image: Image.Image, box: Sequence[int],
          seen_size: Callable[[int, int], tuple[int, int]]) -> tuple[Image.Image, Image.Image]:
    """(overview, zoom) exactly as the agent shows them: the image at its seen size, and the zoom
    tool's output for `box` (seen frame) at its seen size."""
    env = ToolEnv(seen_size=seen_size)
    name = env.add_image(image, "image")
    result = ZoomTool().run({"image": name, "bbox": list(box)}, env)
    if result.error:
        raise ValueError(result.error)
    overview, zoom = env.images[name], env.images[next(reversed(env.images))]
    return resize_seen(overview.image, overview.seen), resize_seen(zoom.image, zoom.seen)


def perception_batch(n: int, seed: int, seen_size: Callable[[int, int], tuple[int, int]],
                     difficulty: float = 1.0) -> list[dict[str, Any]]:
    """n in-memory examples for the perception warm-up: {overview, zoom (of the target cell),
    cell (its index, row-major, < CELLS), label (index into ANSWERS['color'])}."""
    stripe = stripe_width(SIZE, seen_size)
    out = []
    for i in range(n):
        image, spec = make_image([seed, i, 7], SIZE, stripe, difficulty)
        box = to_seen(cell_box(spec["cell"], SIZE), SIZE, seen_size(*SIZE))
        overview, zoom = views(image, box, seen_size)
        out.append({"overview": overview, "zoom": zoom, "cell": spec["cell"],
                    "label": spec["label"]})
    return out


__all__ = ["ANSWERS", "CELLS", "DOMAIN", "KINDS", "VERSION", "check", "eval_metrics",
           "expert_turns", "load_samples", "make_image", "make_samples", "perception_batch",
           "save_samples", "seen_box", "views"]
