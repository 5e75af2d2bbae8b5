"""Tool protocol, the episode's tool environment and a small JSON-schema checker.

Tools get model-written arguments, so every bad input must come back as readable text in a
ToolResult(error=...), never as an exception: the model reads the error and can try again.
"""
from __future__ import annotations

import hashlib
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from vlmagent.types import Sample, ToolResult

# Qwen-VL's defaults: 14 px patches merged 2x2 -> one visual token per 28x28 px.
FACTOR = 28
MIN_PIXELS = 56 * 56
MAX_PIXELS = 448 * 448
MAX_RATIO = 200


# ---------------------------------------------------------------- the model's resize rule
def smart_resize(height: int, width: int, factor: int = FACTOR, min_pixels: int = MIN_PIXELS,
                 max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(height, width) the Qwen-VL processor resizes an image to; same maths as qwen_vl_utils.

    Both sides become multiples of `factor` and the area lands in [min_pixels, max_pixels]
    with the aspect ratio kept as well as possible. Reimplemented so tools need no torch.
    """
    if max_pixels < min_pixels:
        raise ValueError("max_pixels must be >= min_pixels")
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
    return h_bar, w_bar


def default_seen_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) the model sees with Qwen's default 448x448 pixel budget."""
    h, w = smart_resize(height, width)
    return w, h


# ---------------------------------------------------------------- episode state
@dataclass
class ImageRef:
    """An image in the conversation: the ORIGINAL pixels, and the size the model saw them at."""

    image: Image.Image
    seen: tuple[int, int]  # (width, height) after the processor's resize

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


@dataclass
class ToolEnv:
    """What tools may touch during one episode. Images keep insertion order (last = newest)."""

    images: dict[str, ImageRef] = field(default_factory=dict)
    views: dict[str, Any] = field(default_factory=dict)  # name -> path or PIL image
    renderer: Any = None  # has screenshot_html(html, width, height) -> PNG bytes
    workdir: str | None = None  # root that render_html's "path" must stay inside
    seen_size: Callable[[int, int], tuple[int, int]] = default_seen_size

    def add_image(self, image: Image.Image, name: str | None = None) -> str:
        """Register an image (prompt or tool output) and return its name ("tool_N" by default)."""
        if name is None:
            n = 1 + sum(1 for k in self.images if k.startswith("tool_"))
            name = f"tool_{n}"
            while name in self.images:
                n += 1
                name = f"tool_{n}"
        self.images[name] = ImageRef(image, tuple(self.seen_size(*image.size)))
        return name

    @classmethod
    def from_sample(cls, sample: Sample, shown: list[str] | None = None, **kw: Any) -> ToolEnv:
        """Env for a sample: `shown` images (default all) go in images, the rest are views.

        Extra views may also come from sample.meta["views"] (name -> path).
        """
        env = cls(**kw)
        shown = list(sample.images) if shown is None else shown
        for name in shown:
            env.add_image(load_image(sample.images[name]), name)
        env.views = {k: v for k, v in sample.images.items() if k not in shown}
        env.views.update(sample.meta.get("views", {}))
        return env


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


def resize_seen(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`im` at the size the model sees it. reducing_gap: box-reduce first, then bicubic (~4x
    faster on large downscales); trajectories save these exact pixels, so training sees what
    sampling saw."""
    if im.size == tuple(size):
        return im
    return im.resize(tuple(size), Image.Resampling.BICUBIC, reducing_gap=3.0)


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

    def seen(self, im: Image.Image, size: tuple[int, int]) -> Image.Image:
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


# ---------------------------------------------------------------- JSON-schema subset
_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    # JSON Schema counts 2.0 as an integer; booleans are never numbers.
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
}


def _show(v: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object", type(None): "null"}.get(type(v), type(v).__name__)
    text = repr(v) if not isinstance(v, dict | list) else str(v)
    return f"{kind} {text[:40]}{'...' if len(text) > 40 else ''}"


def validate(value: Any, schema: dict[str, Any], where: str = "") -> str | None:
    """First violation of `schema` by `value` as a readable sentence, or None if it conforms.

    Covers type, required, enum, properties/additionalProperties false, items, min/maxItems,
    minimum/maximum, min/maxLength: enough for tool arguments, no dependency needed.
    """
    at = f"argument '{where}'" if where else "the arguments"
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_TYPES[t](value) for t in types):
            return f"{at}: expected {' or '.join(types)}, got {_show(value)}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{at}: must be one of {schema['enum']}, got {_show(value)}"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            return f"{at}: expected a finite number, got {value}"
        if "minimum" in schema and value < schema["minimum"]:
            return f"{at}: must be >= {schema['minimum']:g}, got {value:g}"
        if "maximum" in schema and value > schema["maximum"]:
            return f"{at}: must be <= {schema['maximum']:g}, got {value:g}"
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            return f"{at}: must have at least {schema['minLength']} characters"
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return f"{at}: must have at most {schema['maxLength']} characters, got {len(value)}"
    if isinstance(value, list):
        n = len(value)
        if n < schema.get("minItems", 0) or n > schema.get("maxItems", n):
            lo, hi = schema.get("minItems", 0), schema.get("maxItems")
            want = f"exactly {lo}" if lo == hi else f"at least {lo}" if hi is None else \
                f"{lo} to {hi}"
            return f"{at}: expected {want} items, got {n}"
        if "items" in schema:
            for i, item in enumerate(value):
                err = validate(item, schema["items"], f"{where}[{i}]")
                if err:
                    return err
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                return f"missing required argument '{_join(where, key)}'"
        if schema.get("additionalProperties", True) is False:
            extra = [k for k in value if k not in props]
            if extra:
                return (f"unexpected argument '{_join(where, extra[0])}' (allowed: "
                        f"{', '.join(props) or 'none'})")
        for key, sub in props.items():
            if key in value:
                err = validate(value[key], sub, _join(where, key))
                if err:
                    return err
    return None


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


# ---------------------------------------------------------------- the Tool protocol
class Tool:
    """A tool the model can call: a name, a description, a JSON schema for its arguments.

    Subclasses implement `run` (arguments already validated) and may override `check` for
    constraints a schema cannot say (e.g. "exactly one of html or path").
    """

    name: str = ""
    description: str = ""
    # Pure-pixel tools may run in threads, one episode each; a browser-backed tool may not
    # (Playwright's sync API belongs to one thread).
    thread_safe: bool = True
    parameters: dict[str, Any] = {"type": "object", "properties": {},
                                  "additionalProperties": False}

    def check(self, args: dict[str, Any]) -> str | None:
        """Why `args` are invalid for this tool (schema + extra rules), or None."""
        return validate(args, self.parameters)

    def run(self, args: dict[str, Any], env: ToolEnv) -> ToolResult:
        raise NotImplementedError

    def __call__(self, args: dict[str, Any], env: ToolEnv) -> ToolResult:
        """Validate then run; bad arguments and crashes come back as error results."""
        err = self.check(args)
        if err:
            return ToolResult(error=f"{self.name}: invalid arguments: {err}")
        try:
            return self.run(args, env)
        except Exception as e:  # a tool bug must not end the episode
            return ToolResult(error=f"{self.name} failed: {type(e).__name__}: {e}")

    def spec(self) -> dict[str, Any]:
        """OpenAI-style function spec, what chat templates expect in `tools=`."""
        return {"type": "function", "function": {"name": self.name,
                                                 "description": self.description,
                                                 "parameters": self.parameters}}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
