"""ZoomRes: a mixed task for the visual-resolution router (vlmagent/router): some images need
the full pixel budget, the others are answered as well at a quarter of it, and which is which
shows in the image content.

A 112 px image holds a large light card with a patch; the question asks for the patch's colour
(red, green, blue, black: chance 0.25). Two kinds (the router's two levels):

- "fine" (cell 0, needs level 0): the patch is striped like zoomgrid's swatch, ink and its
  mirror about mid grey (ink + mirror = 255) alternating, each stripe one seen pixel wide at the
  FULL level and in phase with its pixel grid (ink on even columns). At the low level (half the
  side) every seen pixel averages an ink and a mirror stripe: the patch is a uniform grey, the
  same for every ink, up to rounding. A short raised-cosine taper at the patch's left and right
  ends keeps its edges from leaking the ink at the low level (a hard end leaks ~0.14 x the ink's
  offset from grey into the edge column).
- "coarse" (cell 1, low level suffices): the same card with a solid patch of the ink.

Everything else is smooth (a gentle gradient, a few large blurred shapes, a blurred card), so
the stripes are the image's only fine detail: the detail an image loses when scaled to half its
side and back (the heuristic router's statistic) separates the kinds. zoomgrid's green is too
close to mid grey in luminance for that (its stripes nearly vanish in grey), so this domain's
green is darker; the other inks are zoomgrid's.

The default budget (FULL: max_pixels 112 x 112, factor 28) sees the image as is at level 0
(4 x 4 = 16 visual tokens, stripe 1 px) and at 56 x 56 at level 1 (4 tokens).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from vlmagent.domains import zoomgrid
from vlmagent.domains.common import (
    check,
    check_kinds,
    eval_metrics,
    load_samples,
    save_samples,
    seen_box,
)
from vlmagent.images import QWEN2_5_VL_DEFAULT, Size, resize_seen
from vlmagent.protocol import get_format
from vlmagent.types import Sample, ToolCall

DOMAIN = "zoomres"
VERSION = 1  # bump when the same arguments draw different samples (the sample cache key)
KINDS = ("fine", "coarse")  # index = the perception warm-up's cell (0: needs full resolution)
CELLS = 2
SIZE = (112, 112)
INKS: dict[str, tuple[int, int, int]] = {**zoomgrid.INKS, "green": (20, 130, 30)}
ANSWERS = {"color": list(INKS)}
MID = 127.5
TAPER = 6  # stripes of raised-cosine taper at each end of a fine patch
FULL = QWEN2_5_VL_DEFAULT.with_pixels(max_pixels=SIZE[0] * SIZE[1])  # the budget SIZE fits
QUESTION = "What colour is the patch on the card? Answer red, green, blue or black."
PROMPT = f"{QUESTION} Give the final answer inside <answer></answer>."
SHADES = [(170, 120, 100), (100, 140, 170), (120, 160, 110), (180, 170, 110), (140, 130, 150)]
_INK = np.array(list(INKS.values()), np.float64)


def low_size(full: Size, factor: int = QWEN2_5_VL_DEFAULT.factor) -> Size:
    """The low level's seen size (a quarter of the pixels) from the full one: each side halved
    and rounded down to `factor`, at least `factor` (112 -> 56)."""
    return tuple(max(factor, side // 2 // factor * factor) for side in full)


def stripe_width(size: Size, seen_size: Callable[[int, int], Size]) -> int:
    """Original pixels per stripe: one seen pixel at the full level (1 at 112 -> 112)."""
    return max(1, round(size[0] / seen_size(*size)[0]))


def make_image(seed: int | Sequence[int], size: Size = SIZE, stripe: int = 1,
               kind: str = "fine", label: int | None = None, difficulty: float = 1.0
               ) -> tuple[Image.Image, dict[str, Any]]:
    """One image and its spec (answer, label, card and swatch boxes in original pixels).
    `label` (an index into INKS) and `kind` change the patch only, never the scene.
    `difficulty` in [0, 1] scales the background's gradient and shapes (0: plain)."""
    if kind not in KINDS:
        raise ValueError(f"unknown {DOMAIN} kind {kind!r} (valid: {', '.join(KINDS)})")
    rng = np.random.default_rng(seed)
    w, h = size
    drawn = int(rng.integers(len(INKS)))
    label = drawn if label is None else label
    # Background: a gentle gradient between four corner colours, a few large shapes, a card;
    # all blurred, so that none of it is fine detail.
    base = rng.uniform(120, 190, 3)
    corners = base + 25 * difficulty * rng.uniform(-1, 1, (2, 2, 3))
    img = Image.fromarray(np.clip(corners, 0, 255).astype(np.uint8)).resize(
        (w, h), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    n = int(round(int(rng.integers(1, 4)) * difficulty))
    xy, wh = rng.uniform(-0.2, 0.9, (n, 2)), rng.uniform(0.3, 0.6, (n, 2))
    for (x, y), (dx, dy), c in zip(xy.tolist(), wh.tolist(),
                                   rng.integers(len(SHADES), size=n).tolist()):
        draw.ellipse([x * w, y * h, (x + dx) * w, (y + dy) * h], fill=SHADES[c])
    a2 = 2 * stripe  # boxes start on multiples of two stripes: ink on even seen columns
    cw, ch = int(rng.uniform(0.74, 0.86) * w), int(rng.uniform(0.70, 0.84) * h)
    cx, cy = int(rng.integers(2, w - cw - 1)), int(rng.integers(2, h - ch - 1))
    card = tuple(int(v) for v in rng.integers(225, 246, 3))
    draw.rectangle([cx, cy, cx + cw - 1, cy + ch - 1], fill=card)
    sw = int(rng.uniform(0.46, 0.56) * w) // a2 * a2
    sh = int(rng.uniform(0.36, 0.46) * h)
    m = max(4, w // 28)
    lo, hi = -(-(cx + m) // a2) * a2, (cx + cw - m - sw) // a2 * a2
    sx = lo + a2 * int(rng.integers(0, max(0, hi - lo) // a2 + 1))
    sy = cy + m + int(rng.integers(0, ch - sh - 2 * m + 1))
    ink = _INK[label]
    if kind == "coarse":  # solid, drawn before the blur: soft edges like everything else
        draw.rectangle([sx, sy, sx + sw - 1, sy + sh - 1], fill=tuple(int(v) for v in ink))
    radius = 1.5 * w / SIZE[0]
    a = np.array(img.filter(ImageFilter.GaussianBlur(radius)))
    if kind == "coarse":  # the patch's inside exact, whatever the blur did at its edges
        a[sy + 2:sy + sh - 2, sx + 2:sx + sw - 2] = ink.astype(np.uint8)
    else:
        xs = np.arange(sw)
        carrier = np.where((xs // stripe) % 2 == 0, 1.0, -1.0)
        envelope = np.ones(sw)
        t = min(TAPER * stripe, sw // 2)
        ramp = np.sin(np.pi / 2 * (np.arange(t) + 0.5) / t) ** 2
        envelope[:t], envelope[sw - t:] = ramp, ramp[::-1]
        row = MID + (envelope * carrier)[:, None] * (ink - MID)
        a[sy:sy + sh, sx:sx + sw] = np.clip(row + 0.5, 0, 255).astype(np.uint8)[None]
    spec = {"kind": kind, "cell": KINDS.index(kind), "answer": list(INKS)[label],
            "label": label, "card": [cx, cy, cx + cw, cy + ch],
            "swatch": [sx, sy, sx + sw, sy + sh], "stripe": stripe, "size": [w, h]}
    return Image.fromarray(a), spec


# ---------------------------------------------------------------- samples
def make_samples(n: int, seed: int, out_dir: str | Path, kinds: Sequence[str] = KINDS,
                 size: Size | None = None, seen_size: Callable[[int, int], Size] | None = None,
                 fine_fraction: float = 0.3) -> list[Sample]:
    """n samples (PNGs under out_dir); the same arguments always give the same samples.

    With both kinds requested each sample is fine with probability `fine_fraction` (drawn from
    the seed), else all samples are of the one kind. `seen_size` is the FULL level's resize
    rule (default: FULL's); it sets the stripe width (one seen pixel at that level)."""
    check_kinds(DOMAIN, kinds, KINDS)
    if not 0.0 <= fine_fraction <= 1.0:
        raise ValueError(f"fine_fraction must be in [0, 1], got {fine_fraction}")
    wh = tuple(size) if size else SIZE
    stripe = stripe_width(wh, seen_size or FULL.seen_size)
    if wh[0] != stripe * (seen_size or FULL.seen_size)(*wh)[0]:
        raise ValueError(f"zoomres: a {wh} image must be seen at 1/{stripe} of its width at the "
                         "full level, or the stripes drift out of phase with its pixels")
    fine = np.random.default_rng([seed, 2]).random(n) < fine_fraction
    if len(set(kinds)) == 1:
        fine[:] = kinds[0] == "fine"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(n):
        image, spec = make_image([seed, i], wh, stripe, "fine" if fine[i] else "coarse")
        sid = f"{DOMAIN}-{seed}-{i:05d}"
        path = out / f"{sid}.png"
        image.save(path, compress_level=1)
        meta = {k: spec[k] for k in ("kind", "cell", "card", "swatch", "stripe", "size")}
        meta.update(box=spec["swatch"], seed=seed)
        samples.append(Sample(id=sid, prompt=PROMPT, images={"image": str(path)},
                              answer=spec["answer"], domain=DOMAIN, meta=meta))
    return samples


def expert_mode(sample: Sample) -> str:
    """What a good self-routing policy does: ask for full resolution on fine images only."""
    return "tool" if sample.meta["kind"] == "fine" else "text"


def expert_turns(sample: Sample, mode: str, seen_size_fn: Callable[[int, int], Size],
                 fmt: str = "hermes") -> list[str]:
    """Scripted assistant turns. tool mode (self-routing, VisionThink style: the episode starts
    at the low level): [ask for the image at full resolution; answer]; text mode: [answer
    directly] (right for coarse images, a guess on fine ones). `seen_size_fn` is unused: the
    call names the image, no box (kept for the Domain protocol)."""
    ans = str(sample.answer)
    if mode == "text":
        return [f"<think_no_tools></think_no_tools><answer>{ans}</answer>"]
    if mode != "tool":
        raise ValueError(f"unknown mode {mode!r} (valid: tool, text)")
    call = get_format(fmt).render_call(ToolCall("full_resolution", {"image": "image"}))
    return [f"<think_with_tools>{call}", f"</think_with_tools><answer>{ans}</answer>"]


# ---------------------------------------------------------------- perception data
def perception_batch(n: int, seed: int, seen_size: Callable[[int, int], Size],
                     difficulty: float = 1.0) -> list[dict[str, Any]]:
    """n in-memory examples for the perception warm-up, half fine, half coarse: {overview (the
    image at the low level's seen size), zoom (at the full level's), cell (0 fine: needs full
    resolution, 1 coarse), label (index into ANSWERS['color'])}. `seen_size`: the full level."""
    full = tuple(seen_size(*SIZE))
    low = low_size(full)
    stripe = stripe_width(SIZE, seen_size)
    cells = np.random.default_rng([seed, 3]).permutation(np.arange(n) % 2).tolist()
    out = []
    for i, cell in enumerate(cells):
        image, spec = make_image([seed, i, 7], SIZE, stripe, KINDS[cell], difficulty=difficulty)
        out.append({"overview": resize_seen(image, low), "zoom": resize_seen(image, full),
                    "cell": cell, "label": spec["label"]})
    return out


__all__ = ["ANSWERS", "CELLS", "DOMAIN", "FULL", "INKS", "KINDS", "SIZE", "VERSION", "check",
           "eval_metrics", "expert_mode", "expert_turns", "load_samples", "low_size",
           "make_image", "make_samples", "perception_batch", "save_samples", "seen_box",
           "stripe_width"]
