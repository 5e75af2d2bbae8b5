"""Crop and zoom with DriveAgent-R1's RoI-inspection semantics.

The model writes boxes in the pixel frame of the image AS IT SAW IT (after the processor's
resize). We map the box back to the original pixels and crop FROM THE ORIGINAL, so zooming
recovers detail the model could not see, then upsample so each side is at least half the
model's input size.
"""
from __future__ import annotations

import math
from typing import Any

from PIL import Image

from vlmagent.images import Size
from vlmagent.tools.base import ImageRef, Tool, ToolEnv
from vlmagent.types import ToolResult

# Each side of the box must exceed this many ORIGINAL pixels: DriveAgent-R1's rule, a fixed
# count of original pixels (not the processor's patch factor, which lives in images.Budget).
MIN_SIDE = 28
MIN_INSIDE = 0.5  # a box with less than this fraction of its area inside the image is rejected
MAX_FACTOR = 4.0
MAX_OUT_PIXELS = 2048 * 2048  # cap on the upsampled output (more than any pixel budget uses)

Box = tuple[float, float, float, float]


def scale_of(size: Size, seen: Size) -> tuple[float, float]:
    """Original pixels per seen pixel, per axis; sizes are (width, height)."""
    return size[0] / seen[0], size[1] / seen[1]


def to_original(box: Box, size: Size, seen: Size) -> tuple[int, int, int, int]:
    """A seen-frame box [x0, y0, x1, y1] (pixel edges) in original pixels, rounded to nearest."""
    sx, sy = scale_of(size, seen)
    x0, y0, x1, y1 = box
    return (_round(x0 * sx), _round(y0 * sy), _round(x1 * sx), _round(y1 * sy))


def to_seen(box: Box, size: Size, seen: Size) -> tuple[int, int, int, int]:
    """An original-frame box in the seen frame, rounded outwards so it still covers the region."""
    sx, sy = scale_of(size, seen)
    x0, y0, x1, y1 = box
    sw, sh = seen
    eps = 1e-9  # keep exact multiples from rounding outwards by float noise
    return (max(0, math.floor(x0 / sx + eps)), max(0, math.floor(y0 / sy + eps)),
            min(sw, math.ceil(x1 / sx - eps)), min(sh, math.ceil(y1 / sy - eps)))


def _round(v: float) -> int:
    return math.floor(v + 0.5)


def _fmt(box: Any) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"


class CropTool(Tool):
    """Cut a region out of an image at the original resolution."""

    name = "crop"
    description = ("Crop a region of an image to look at it closer. bbox is [x0, y0, x1, y1] in "
                   "pixels of the image as you see it; the crop is taken from the full-resolution "
                   "original, so small details become readable.")
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "image": {"type": "string",
                      "description": "name of the image (default: the most recent one)"},
            "bbox": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4,
                     "description": "[x0, y0, x1, y1], top-left and bottom-right corners"},
        },
        "required": ["bbox"],
        "additionalProperties": False,
    }

    def magnification(self, args: dict[str, Any]) -> float:
        """Minimum scale applied to the crop, on top of the 'half the input size' rule."""
        return 1.0

    def run(self, args: dict[str, Any], env: ToolEnv) -> ToolResult:
        got = self.image_arg(args, env)
        if isinstance(got, ToolResult):
            return got
        name, ref = got
        region = self._region(args["bbox"], ref, name, f"image {name!r}")
        if isinstance(region, str):
            return ToolResult(error=f"{self.name}: {region}")
        box, note, (ox0, oy0, ox1, oy1) = region
        crop = self._cut(ref, (ox0, oy0, ox1, oy1), self.magnification(args))
        out = env.add_image(crop)
        seen = env.images[out].seen
        text = (f"{self.name} of image {name!r} at bbox {_fmt(box)} (original pixels "
                f"{_fmt((ox0, oy0, ox1, oy1))}){note}: new image {out!r}, "
                f"{seen[0]}x{seen[1]} as you see it.")
        return ToolResult(text=text, images=[crop])

    @staticmethod
    def _cut(ref: ImageRef, box: tuple[int, int, int, int], magnification: float = 1.0,
             resample: Image.Resampling = Image.Resampling.BICUBIC) -> Image.Image:
        """The original-pixel `box` of `ref`, enlarged by at least `magnification` and so that
        each side is at least half the source's seen size, capped at MAX_OUT_PIXELS."""
        ox0, oy0, ox1, oy1 = box
        ow, oh = ox1 - ox0, oy1 - oy0
        crop = ref.image.crop(box)
        scale = max(magnification, ref.seen[0] / 2 / ow, ref.seen[1] / 2 / oh)
        scale = min(scale, math.sqrt(MAX_OUT_PIXELS / (ow * oh)))
        if scale > 1:
            crop = crop.resize((max(1, math.floor(ow * scale + 1e-6)),
                                max(1, math.floor(oh * scale + 1e-6))), resample)
        return crop

    def _region(self, bbox: list[float], ref: ImageRef, name: str, where: str
                ) -> tuple[Box, str, Box] | str:
        """(the box clipped in the seen frame, a note on the clipping, the box in original
        pixels), or why it cannot be cropped (`where` names the image in that message)."""
        box, note, err = self._clip(bbox, ref, name)
        if err:
            return err
        ox0, oy0, ox1, oy1 = to_original(box, ref.size, ref.seen)
        ow, oh = ox1 - ox0, oy1 - oy0
        sx, sy = scale_of(ref.size, ref.seen)
        if ow <= MIN_SIDE or oh <= MIN_SIDE:
            return (f"bbox {_fmt(box)} is too small: it covers {ow}x{oh} original pixels and "
                    f"each side must exceed {MIN_SIDE}: make it more than {MIN_SIDE / sx:.1f} px "
                    f"wide and {MIN_SIDE / sy:.1f} px tall in {where} as you see it "
                    f"({ref.seen[0]}x{ref.seen[1]})")
        return box, note, (ox0, oy0, ox1, oy1)

    def _clip(self, bbox: list[float], ref: ImageRef, name: str) -> tuple[Box, str, str | None]:
        """Clip small overhangs; reject inverted or mostly-outside boxes (with the valid range)."""
        x0, y0, x1, y1 = (float(v) for v in bbox)
        sw, sh = ref.seen
        valid = (f"valid range for image {name!r} as you see it: x in [0, {sw}], "
                 f"y in [0, {sh}]")
        if x1 <= x0 or y1 <= y0:
            return (x0, y0, x1, y1), "", (
                f"bbox {_fmt(bbox)} is inverted or empty: use [x0, y0, x1, y1] with x0 < x1 "
                f"and y0 < y1; {valid}")
        cx0, cy0, cx1, cy1 = max(0.0, x0), max(0.0, y0), min(float(sw), x1), min(float(sh), y1)
        inside = max(0.0, cx1 - cx0) * max(0.0, cy1 - cy0)
        if inside < MIN_INSIDE * (x1 - x0) * (y1 - y0):
            return (x0, y0, x1, y1), "", f"bbox {_fmt(bbox)} lies mostly outside the image; {valid}"
        clipped = (cx0, cy0, cx1, cy1)
        note = "" if clipped == (x0, y0, x1, y1) else f" (clipped from {_fmt(bbox)})"
        return clipped, note, None


class ZoomTool(CropTool):
    """Crop from the original and enlarge by `factor` (at least), for fine detail."""

    name = "zoom"
    description = ("Zoom into a region of an image: bbox is [x0, y0, x1, y1] in pixels of the "
                   "image as you see it; the region is cut from the full-resolution original and "
                   "enlarged by factor (default 2).")
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            **CropTool.parameters["properties"],
            "factor": {"type": "number", "minimum": 1, "maximum": MAX_FACTOR,
                       "description": f"magnification, 1 to {MAX_FACTOR:g} (default 2)"},
        },
        "required": ["bbox"],
        "additionalProperties": False,
    }

    def magnification(self, args: dict[str, Any]) -> float:
        return float(args.get("factor", 2.0))
