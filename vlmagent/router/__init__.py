"""The visual-resolution router: a pixel budget level for every image the policy sees.

Visual tokens dominate the cost of multimodal rollouts, and most images do not need the full
budget. The router picks, per image (prompt images and tool outputs alike), one of a few
LEVELS: level i caps the image's area at `levels[i] x agent.max_pixels` (default levels
[1.0, 0.25]: full, and a quarter of the pixels = a quarter of the visual tokens). The choice
happens at the input, before the processor sees the image, so the tokens sampled are the tokens
trained on: the image is stored in the trajectory at the size the model saw it, and its level
beside it (`Trajectory.image_levels`). Pruning tokens inside the language model instead would
break that match between rollout and training.

Routers (a plain dict, ROUTERS):
- `fixed`: every image at `router.fixed_level` (0 = full: the behaviour without a router);
- `heuristic`: image statistics: the detail an image loses at the low level (mean absolute
  difference between the image at the full level and the low-level image scaled back up, 0-255
  grey levels); above `router.threshold` it keeps the full budget;
- `learned`: a small head on the vision tower's pooled features of a cheap low-level pass,
  trained ViCO-style (router/learned.py).

Self-routing (VisionThink) is not a router: the episode starts at the low level and the policy
may call `full_resolution` (tools/image.py) to see the same image at full budget.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from vlmagent.images import Size

Route = Callable[[Image.Image], tuple[Size, int]]  # image -> (seen size, level)


def level_pixels(levels: list[float], level: int, min_pixels: int, max_pixels: int
                 ) -> tuple[int, int]:
    """(min_pixels, max_pixels) at `level`: the area cap scales, the floor never exceeds it."""
    if not 0 <= level < len(levels):
        raise ValueError(f"router level {level} out of range: levels are {levels}")
    hi = max(1, int(round(levels[level] * max_pixels)))
    return min(min_pixels, hi), hi


def detail_lost(image: Image.Image, full: Size, low: Size) -> float:
    """Mean absolute grey-level difference (0-255) between the image at the full seen size and
    the low-level image scaled back up to it: what the low level would throw away."""
    ref = np.asarray(image.convert("L").resize(full, Image.BICUBIC), np.float32)
    down = image.convert("L").resize(low, Image.BICUBIC).resize(full, Image.BICUBIC)
    return float(np.abs(ref - np.asarray(down, np.float32)).mean())


class FixedRouter:
    """Every image at one level."""

    def __init__(self, level: int = 0):
        self.level = level

    def choose(self, image: Image.Image, seen_at: Callable[[Image.Image, int], Size]) -> int:
        return self.level


class HeuristicRouter:
    """Full budget when the low level would lose more than `threshold` grey levels of detail."""

    def __init__(self, threshold: float = 6.0, low: int = 1):
        self.threshold = threshold
        self.low = low

    def choose(self, image: Image.Image, seen_at: Callable[[Image.Image, int], Size]) -> int:
        lost = detail_lost(image, seen_at(image, 0), seen_at(image, self.low))
        return 0 if lost > self.threshold else self.low


def _learned(cfg: Any, policy: Any) -> Any:
    from vlmagent.router.learned import LearnedRouter

    return LearnedRouter.from_pretrained(cfg.path, policy, low=len(cfg.levels) - 1)


ROUTERS: dict[str, Callable[[Any, Any], Any]] = {
    "fixed": lambda cfg, policy: FixedRouter(cfg.fixed_level),
    "heuristic": lambda cfg, policy: HeuristicRouter(cfg.threshold, len(cfg.levels) - 1),
    "learned": _learned,
}


def route_for(policy: Any, acfg: Any) -> Route | None:
    """The route of an agent config's router for this policy (None: no router configured), made
    once per policy and config (a learned router loads its head once)."""
    cfg = acfg.router
    if cfg.kind == "fixed" and cfg.fixed_level == 0:
        return None  # today's behaviour: every image at the agent's own budget
    key = (repr(cfg), acfg.min_pixels, acfg.max_pixels)
    cache = policy.__dict__.setdefault("_routes", {})
    if key not in cache:
        cache[key] = make_route(cfg, policy.seen_size, acfg.min_pixels, acfg.max_pixels, policy)
    return cache[key]


def make_route(cfg: Any, seen_size: Callable[..., Size], min_pixels: int, max_pixels: int,
               policy: Any = None) -> Route:
    """The agent's per-image rule from a RouterConfig: image -> (seen size, level).

    `seen_size(w, h, min_pixels, max_pixels)` is the model's resize rule (policy.seen_size)."""
    if cfg.kind not in ROUTERS:
        raise ValueError(f"unknown router.kind {cfg.kind!r} (valid: {', '.join(ROUTERS)})")
    router = ROUTERS[cfg.kind](cfg, policy)

    def seen_at(image: Image.Image, level: int) -> Size:
        lo, hi = level_pixels(cfg.levels, level, min_pixels, max_pixels)
        return tuple(seen_size(*image.size, lo, hi))

    def route(image: Image.Image) -> tuple[Size, int]:
        level = int(router.choose(image, seen_at))
        return seen_at(image, level), level

    def prefetch(images: list[Image.Image]) -> None:
        """Routers that decide in batch (learned) decide for these images now, at once."""
        if hasattr(router, "prefetch"):
            router.prefetch(images, seen_at)

    route.prefetch = prefetch  # type: ignore[attr-defined]
    return route
