"""The one owner of the seen-size rule (what size the model's processor resizes an image to) and
of image identity: `smart_resize`, `Budget`, `resize_seen`, `image_key`, `load_image`,
`ImageCache`.

Qwen-VL's image processor resizes every image so that both sides are multiples of `factor`
(patch size x spatial merge size: 14 x 2 = 28 for Qwen2/2.5-VL, 16 x 2 = 32 for Qwen3-VL) and
its area lies in [min_pixels, max_pixels]. The agent resizes each image to that "seen size"
itself, so the processor's own resize is a no-op, tools read boxes in that frame and map them
back to the original pixels, and training sees exactly the pixels sampling saw. The factor
always comes from the processor (`Budget.from_processor`); the one fixed budget,
`QWEN2_5_VL_DEFAULT`, is for places that have no processor (the debugger without a model, the
synthetic domains when the caller gives no seen size), and says so in its name.

Sizes are (width, height) everywhere in this module and in every caller, PIL's order
(`Image.size`). Qwen's own smart_resize (transformers, qwen_vl_utils) takes and returns
(height, width): convert at that boundary only.

Why not call `qwen_vl_utils.smart_resize`: that module imports torch, torchvision and requests
at import time, while the tools, the domain generators and the debugger without a model must
work without torch; the rule is twenty lines. tests/test_images.py pins this copy to
transformers' (the code the processor runs when it encodes) for factors 28 and 32, and to the
sizes the tiny models' processors actually produce (image_grid_thw x patch size).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

MAX_RATIO = 200  # Qwen's processors refuse images longer than this many times their width

Size = tuple[int, int]  # (width, height)
SeenSize = Callable[[int, int], Size]  # (width, height) of an image -> the size the model sees


# ---------------------------------------------------------------- the processor's resize rule
def smart_resize(width: int, height: int, factor: int, min_pixels: int,
                 max_pixels: int) -> Size:
    """(width, height) the Qwen-VL processor resizes a width x height image to.

    Both sides become multiples of `factor` and the area lands in [min_pixels, max_pixels],
    keeping the aspect ratio as well as possible: the maths of transformers' and qwen_vl_utils'
    smart_resize, in (width, height) order.
    """
    if max_pixels < min_pixels:
        raise ValueError(f"max_pixels ({max_pixels}) must be >= min_pixels ({min_pixels})")
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(f"absolute aspect ratio must be smaller than {MAX_RATIO}, "
                         f"got {max(height, width) / min(height, width)}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        # max(factor, ...): a long thin image under a small budget keeps one patch row, as
        # in transformers' own smart_resize (without it a side rounds down to 0)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return w_bar, h_bar


@dataclass(frozen=True)
class Budget:
    """How a processor sizes images: sides multiples of `factor` (patch size x merge size),
    area within [min_pixels, max_pixels]. A config or a router narrows the pixel bounds with
    `with_pixels`; the factor belongs to the model and never changes."""

    factor: int
    min_pixels: int
    max_pixels: int

    def __post_init__(self) -> None:
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")
        if self.max_pixels < self.min_pixels:
            raise ValueError(f"max_pixels ({self.max_pixels}) must be >= min_pixels "
                             f"({self.min_pixels})")

    @classmethod
    def from_processor(cls, processor: Any) -> Budget:
        """The budget of a transformers processor (or its image processor): factor =
        patch_size x merge_size, bounds = size["shortest_edge"] / size["longest_edge"] (older
        configs: min_pixels / max_pixels)."""
        ip = getattr(processor, "image_processor", processor)
        size = getattr(ip, "size", None) or {}
        lo = _get(size, "shortest_edge")
        hi = _get(size, "longest_edge")
        lo = lo if lo is not None else getattr(ip, "min_pixels", None)
        hi = hi if hi is not None else getattr(ip, "max_pixels", None)
        if lo is None or hi is None:
            raise ValueError(f"{type(ip).__name__} states no pixel budget (size shortest_edge/"
                             "longest_edge or min_pixels/max_pixels)")
        return cls(int(ip.patch_size) * int(ip.merge_size), int(lo), int(hi))

    def with_pixels(self, min_pixels: int | None = None, max_pixels: int | None = None
                    ) -> Budget:
        """This budget with the pixel bounds replaced where given (None keeps this one's)."""
        return dataclasses.replace(
            self, min_pixels=self.min_pixels if min_pixels is None else min_pixels,
            max_pixels=self.max_pixels if max_pixels is None else max_pixels)

    def seen_size(self, width: int, height: int) -> Size:
        """(width, height) the model sees a width x height image at under this budget."""
        return smart_resize(width, height, self.factor, self.min_pixels, self.max_pixels)

    def tokens(self, size: Size) -> int:
        """Visual tokens of an image already at a seen size (w, h): one per factor x factor."""
        w, h = size
        if w <= 0 or h <= 0 or w % self.factor or h % self.factor:
            raise ValueError(f"image size {w}x{h} is not a multiple of {self.factor}; resize it "
                             "to its seen size first (policy.seen_size)")
        return (w // self.factor) * (h // self.factor)


def _get(size: Any, key: str) -> Any:
    """size[key] for a dict or transformers' SizeDict; None when absent."""
    try:
        return size[key]
    except (KeyError, TypeError):
        return getattr(size, key, None)


# The budget for places with no processor to ask (the debugger without a model; the synthetic
# domains when the caller passes no seen size): Qwen2/2.5-VL's factor (14 px patches merged
# 2x2) with the agent's default bounds (config.AgentConfig min_pixels / max_pixels). Anything
# that has a model passes Budget.from_processor(...) or policy.seen_size instead.
QWEN2_5_VL_DEFAULT = Budget(factor=14 * 2, min_pixels=56 * 56, max_pixels=448 * 448)


# ---------------------------------------------------------------- pixels
def resize_seen(im: Image.Image, size: Size) -> Image.Image:
    """`im` at the size the model sees it. reducing_gap: box-reduce first, then bicubic (~4x
    faster on large downscales); trajectories save these exact pixels, so training sees what
    sampling saw."""
    if im.size == tuple(size):
        return im
    return im.resize(tuple(size), Image.Resampling.BICUBIC, reducing_gap=3.0)


def load_image(src: Any) -> Image.Image:
    """PIL image from a path or an image, converted to RGB (fully loaded, file closed)."""
    if isinstance(src, Image.Image):
        return src if src.mode == "RGB" else src.convert("RGB")
    with Image.open(Path(src)) as im:
        return im.convert("RGB")


def image_key(im: Image.Image) -> str:
    """A content key: equal for images with the same size, mode and pixels."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{im.size}{im.mode}".encode())
    h.update(im.tobytes())
    return h.hexdigest()


class ImageCache:
    """Decoded images by (path, mtime, size), and their resized copies at the sizes the model
    saw them, least recently used out beyond `max_bytes`.

    RL revisits the same samples every epoch and G times per group; decoding a large PNG costs
    tens of milliseconds and resizing it about ten, more than a tiny model's whole turn. Callers
    hold the cache (one per training run); images are shared, read-only: tools crop and resize,
    never draw in place.
    """

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, Image.Image] = OrderedDict()  # key or (key, size)
        self._keys: dict[int, tuple] = {}  # id of a cached decoded image -> its key
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, src: Any) -> Image.Image:
        if isinstance(src, Image.Image):
            return load_image(src)
        st = os.stat(src)
        key = (str(src), st.st_mtime_ns, st.st_size)
        im = self._lookup(key)
        if im is not None:
            return im
        im = load_image(src)  # decode outside the lock: threads overlap their decodes
        return self._store(key, im, decoded=True)

    def seen(self, im: Image.Image, size: Size) -> Image.Image:
        """resize_seen(im, size), computed once per cached image and size (a GRPO group's
        members and later epochs share it); images the cache did not decode are just resized."""
        with self._lock:
            key = self._keys.get(id(im))
            ok = key is not None and self._items.get(key) is im  # not a recycled id
        if not ok or im.size == tuple(size):
            return resize_seen(im, size)
        k = (key, tuple(size))
        out = self._lookup(k)
        return out if out is not None else self._store(k, resize_seen(im, size))

    def _lookup(self, key: tuple) -> Image.Image | None:
        with self._lock:
            im = self._items.get(key)
            if im is not None:
                self._items.move_to_end(key)
                self.hits += 1
            return im

    def _store(self, key: tuple, im: Image.Image, decoded: bool = False) -> Image.Image:
        with self._lock:
            self.misses += 1
            if key in self._items:  # another thread got there first: keep one copy
                return self._items[key]
            self._items[key] = im
            if decoded:
                self._keys[id(im)] = key
            self._bytes += im.width * im.height * 3
            while self._bytes > self.max_bytes and len(self._items) > 1:
                old_key, old = self._items.popitem(last=False)
                self._bytes -= old.width * old.height * 3
                if self._keys.get(id(old)) == old_key:
                    del self._keys[id(old)]
        return im


__all__ = ["MAX_RATIO", "QWEN2_5_VL_DEFAULT", "Budget", "ImageCache", "SeenSize", "Size",
           "image_key", "load_image", "resize_seen", "smart_resize"]
