"""DriveAgent-R1's four driving tools over a nuScenes sample: get_view_with_frame,
RoI_Inspection, depth_estimation and detect_3d_objects (names and arguments as in the paper's
code; views are integer indices here).

Every tool reads the episode's sample from `env.sample.meta["drive"]`:
    {"dataroot": str, "version": str, "sample_token": str}
(the nuScenes root, the table version such as "v1.0-mini", and the key frame the episode is
about). Without it the tools answer with an error the model reads.

depth_estimation is a measurement, not a model: LiDAR (LIDAR_TOP) projected into the camera.
detect_3d_objects is an ORACLE by default: the ground-truth annotations, not a detector, and
says so to the model. With an endpoint (constructor `endpoint=` or env VLMAGENT_DETECTOR_URL)
it asks a detector over HTTP instead:
    POST <endpoint>, Content-Type application/json,
      {"image": base64 JPEG of the camera's current image (original resolution),
       "camera": "CAM_FRONT", "intrinsic": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],
       "object_text": the class filter or ""}
    -> 200 {"boxes": [{"class": str, "center": [x, y, z], "size": [w, l, h], "yaw": rad,
                       "distance": m, "box2d": [x0, y0, x1, y1]}, ...]}
with the fields of nusc.boxes_in_view (camera frame: x right, y down, z forward; box2d in
original pixels); only class and center are required. Timeout 10 s; any failure (connection,
status, malformed JSON or boxes) is an error result, never a silent fall back to the oracle.
"""
from __future__ import annotations

import base64
import http.client
import io
import json
import math
import os
import urllib.error
import urllib.request
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from vlmagent.drive import nusc as nu
from vlmagent.images import load_image
from vlmagent.tools.base import ImageRef, Tool, ToolEnv, validate
from vlmagent.tools.image import CropTool, _fmt
from vlmagent.types import ToolResult

VIEW_NAMES = ("front", "front left", "front right", "back", "back left", "back right")
VIEW_PARAM: dict[str, Any] = {
    "type": "integer", "minimum": 0, "maximum": len(nu.CAMERAS) - 1,
    "description": "camera: " + ", ".join(f"{i} = {n} ({c})" for i, (n, c) in
                                          enumerate(zip(VIEW_NAMES, nu.CAMERAS, strict=True)))}
FRAME_PARAM: dict[str, Any] = {
    "type": "integer", "minimum": 0, "maximum": len(nu.FRAMES) - 1,
    "description": "time: 0 = current, 1 = 1 s ago, 2 = 2 s ago"}
FRAME_SLACK_S = 0.25  # an earlier frame further than this from the asked time: say so
GROUND_CLEARANCE = 0.3  # m: LiDAR returns lower than this above the ego frame's ground are road
DEPTH_RANGE = 50.0  # m: the colour scale's far end (turbo: red near, blue at and beyond)
MAX_LISTED = 8
DETECTOR_TIMEOUT_S = 10.0
DETECTOR_ENV = "VLMAGENT_DETECTOR_URL"
NEEDS_SAMPLE = ("this tool needs a driving sample (a nuScenes key frame given by the sample's "
                "meta['drive'] = {dataroot, version, sample_token}); this episode has none")


# ---------------------------------------------------------------- shared helpers
def view_label(view: int) -> str:
    return f"{nu.CAMERAS[view]} ({VIEW_NAMES[view]} camera)"


def drive_sample(env: ToolEnv) -> tuple[Any, str] | str:
    """(NuScenes, sample_token) of the episode, or why there is none (text for the model)."""
    sample = getattr(env, "sample", None)
    meta = sample.meta.get("drive") if sample is not None else None
    keys = ("dataroot", "version", "sample_token")
    if not isinstance(meta, dict) or not all(isinstance(meta.get(k), str) for k in keys):
        return NEEDS_SAMPLE
    try:
        nusc = nu.load_nusc(meta["dataroot"], meta["version"])
    except Exception as e:  # AssertionError for a missing table folder, JSON errors, ...
        return (f"could not load nuScenes {meta['version']} from {meta['dataroot']}: "
                f"{type(e).__name__}: {e}")
    try:
        nusc.get("sample", meta["sample_token"])
    except KeyError:
        return f"unknown sample_token {meta['sample_token']!r} in nuScenes {meta['version']}"
    return nusc, meta["sample_token"]


def camera_image(nusc: Any, token: str, view: int, seconds_ago: float = 0.0
                 ) -> tuple[dict[str, Any], Image.Image] | str:
    """(sample_data record, RGB image) of a camera frame, or why it could not be loaded."""
    rec = nu.camera_frame(nusc, token, nu.CAMERAS[view], seconds_ago)
    path = nusc.get_sample_data_path(rec["token"])
    try:
        return rec, load_image(path)
    except OSError as e:
        return f"the image of {view_label(view)} could not be loaded from {path}: {e}"


def open_view(tool: Tool, args: dict[str, Any], env: ToolEnv, seconds_ago: float = 0.0
              ) -> tuple[Any, str, int, dict[str, Any], Image.Image] | ToolResult:
    """What every driving tool starts from: (nusc, sample_token, view, camera sample_data
    record, its image) for args["view_index"], or the error result to answer with."""
    ctx = drive_sample(env)
    if isinstance(ctx, str):
        return ToolResult(error=f"{tool.name}: {ctx}")
    if env.seen_size is None:  # add_image would raise: answer before doing the work
        return ToolResult(error=f"{tool.name}: the tool environment has no seen_size rule (the "
                                "model's resize rule), so no image can be added")
    view = int(args["view_index"])  # the schema allows 2.0
    got = camera_image(*ctx, view, seconds_ago)
    if isinstance(got, str):
        return ToolResult(error=f"{tool.name}: {got}")
    return (*ctx, view, *got)


def _seen_text(env: ToolEnv, name: str) -> str:
    w, h = env.images[name].seen
    return f"new image {name!r}, {w}x{h} as you see it"


# ---------------------------------------------------------------- tools
class GetViewWithFrameTool(Tool):
    """Another camera, or the same one 1 s / 2 s earlier, as a new image."""

    name = "get_view_with_frame"
    description = ("Get the image of one of the six cameras around the car at the current "
                   "time, 1 s ago or 2 s ago, to look around or see how the scene moved. "
                   "view_index: " + VIEW_PARAM["description"].removeprefix("camera: ") +
                   ". frame_index: 0 = current, 1 = 1 s ago, 2 = 2 s ago.")
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {"view_index": VIEW_PARAM, "frame_index": FRAME_PARAM},
        "required": ["view_index", "frame_index"],
        "additionalProperties": False,
    }

    def run(self, args: dict[str, Any], env: ToolEnv) -> ToolResult:
        frame = int(args["frame_index"])
        want = nu.FRAME_SECONDS[frame]
        opened = open_view(self, args, env, want)
        if isinstance(opened, ToolResult):
            return opened
        nusc, token, view, rec, image = opened
        offset = nu.seconds_before(nusc, token, rec)
        when = "current frame" if frame == 0 else \
            f"{nu.FRAMES[frame]}, {offset:.2f} s before the current frame"
        if abs(offset - want) > FRAME_SLACK_S:  # the scene started less than `want` ago
            when += (f"; the scene starts later than {want:g} s ago, so this is its earliest "
                     "frame")
        out = env.add_image(image)
        return ToolResult(text=f"{view_label(view)}, {when}: {_seen_text(env, out)}.",
                          images=[image])


class RoIInspectionTool(CropTool):
    """CropTool's contract on a camera's current image, DriveAgent-R1's output size and filter.

    The box is in the frame the model sees that camera's current image at (env.seen_size of
    the original size), whether or not that image is in the conversation; small overhangs are
    clipped and mostly-outside boxes rejected as crop does; each side must cover more than
    MIN_SIDE original pixels (DriveAgent-R1's check after rescaling to the original).
    """

    name = "RoI_Inspection"
    description = ("Zoom in on a region of a camera's current image for a detailed "
                   "high-resolution look (traffic lights, signs, distant or small objects). "
                   "bbox is [x0, y0, x1, y1] in pixels of that camera's image as you see it; "
                   "the region is cut from the full-resolution original and enlarged. "
                   "view_index: " + VIEW_PARAM["description"].removeprefix("camera: ") + ".")
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "view_index": VIEW_PARAM,
            "bbox": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4,
                     "description": "[x0, y0, x1, y1], top-left and bottom-right corners"},
            "description": {"type": "string", "description": "what the region shows (optional)"},
        },
        "required": ["view_index", "bbox"],
        "additionalProperties": False,
    }

    def run(self, args: dict[str, Any], env: ToolEnv) -> ToolResult:
        opened = open_view(self, args, env)
        if isinstance(opened, ToolResult):
            return opened
        *_, view, _, image = opened
        ref = ImageRef(image, tuple(env.seen_size(*image.size)))
        cam = nu.CAMERAS[view]
        region = self._region(args["bbox"], ref, cam, f"{cam}'s image")
        if isinstance(region, str):
            return ToolResult(error=f"{self.name}: argument 'bbox': {region}")
        box, note, (ox0, oy0, ox1, oy1) = region
        # each side at least half the source's seen size, as crop does; DriveAgent-R1: LANCZOS
        crop = self._cut(ref, (ox0, oy0, ox1, oy1), resample=Image.Resampling.LANCZOS)
        out = env.add_image(crop)
        what = f" ({args['description'].strip()[:80]})" if args.get("description", "").strip() \
            else ""
        text = (f"{self.name} of {view_label(view)}, current frame, at bbox {_fmt(box)} of its "
                f"{ref.seen[0]}x{ref.seen[1]} image as you see it (original pixels "
                f"{_fmt((ox0, oy0, ox1, oy1))}){note}{what}: {_seen_text(env, out)}.")
        return ToolResult(text=text, images=[crop])


class DepthEstimationTool(Tool):
    """LiDAR depth over a camera image, with the nearest obstacle distances as text."""

    name = "depth_estimation"
    description = ("Measure distances in a camera's current view: LiDAR-based (real laser "
                   "returns projected into the camera), drawn as a colour depth map over the "
                   "image (red/warm = near, blue = far, 50 m and beyond), with the nearest "
                   "obstacle distances in the left, centre and right of the lower image half. "
                   "view_index: " + VIEW_PARAM["description"].removeprefix("camera: ") + ".")
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {"view_index": VIEW_PARAM},
        "required": ["view_index"],
        "additionalProperties": False,
    }

    def run(self, args: dict[str, Any], env: ToolEnv) -> ToolResult:
        opened = open_view(self, args, env)
        if isinstance(opened, ToolResult):
            return opened
        nusc, token, view, rec, image = opened
        try:
            uv, depth, _ = nu.lidar_depth(nusc, token, nu.CAMERAS[view])
        except OSError as e:  # a missing or truncated .pcd.bin
            return ToolResult(error=f"{self.name}: the LiDAR sweep could not be read: {e}")
        rendered = render_depth(image, uv, depth)
        out = env.add_image(rendered)
        w, h = image.size
        # Ground returns fill the lower half at a few metres: only count returns above the road.
        height = nu.camera_to_ego(nusc, rec["token"], uv, depth)[2]
        low = (uv[1] >= h / 2) & (height > GROUND_CLEARANCE)
        parts = []
        for i, side in enumerate(("left", "centre", "right")):
            sel = low & (uv[0] >= i * w / 3) & (uv[0] < (i + 1) * w / 3)
            parts.append(f"{side} {depth[sel].min():.1f} m" if sel.any() else f"{side} none")
        text = (f"LiDAR depth map of {view_label(view)}, current frame ({uv.shape[1]} LiDAR "
                f"points; red = near, blue = {DEPTH_RANGE:g} m or farther): "
                f"{_seen_text(env, out)}. Nearest LiDAR return above the road (higher than "
                f"{GROUND_CLEARANCE:g} m) in the lower half of the image, depth along the "
                f"camera axis: {', '.join(parts)}.")
        return ToolResult(text=text, images=[rendered])


def render_depth(image: Image.Image, uv: np.ndarray, depth: np.ndarray) -> Image.Image:
    """Projected LiDAR points as turbo-coloured dots (nearest wins) over the dimmed image."""
    import cv2

    w, h = image.size
    arr = (np.asarray(image, dtype=np.float32) * 0.4).astype(np.uint8)
    r = max(1, round(w / 800))  # dots of ~3 px at 480 wide, 5 px at nuScenes' 1600
    zbuf = np.full((h, w), np.inf, dtype=np.float32)
    u, v = np.round(uv[0]).astype(int), np.round(uv[1]).astype(int)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            np.minimum.at(zbuf, (np.clip(v + dy, 0, h - 1), np.clip(u + dx, 0, w - 1)), depth)
    hit = np.isfinite(zbuf)
    level = np.clip(1 - zbuf[hit] / DEPTH_RANGE, 0, 1) * 255  # turbo's top is red: near = warm
    colors = cv2.applyColorMap(level.astype(np.uint8).reshape(-1, 1), cv2.COLORMAP_TURBO)
    arr[hit] = colors.reshape(-1, 3)[:, ::-1]  # BGR -> RGB
    return Image.fromarray(arr)


_BOX_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["class", "center"],
    "properties": {
        "class": {"type": "string"},
        "center": {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3},
        "size": {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3},
        "yaw": {"type": "number"}, "distance": {"type": "number"},
        "box2d": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4}}}
_REPLY_SCHEMA: dict[str, Any] = {"type": "object", "required": ["boxes"],
                                 "properties": {"boxes": {"type": "array", "items": _BOX_SCHEMA}}}


class Detect3DObjectsTool(Tool):
    """3D boxes in a camera: the ground-truth annotations (oracle) or an HTTP detector."""

    name = "detect_3d_objects"
    description = (
        "3D objects in a camera's current view, from the ORACLE: the dataset's ground-truth "
        "annotations, not a detector. Lists class, distance, lateral x (right +) and forward z "
        "in metres, size and heading, nearest first, and draws the boxes on the image. "
        "object_text filters by class (e.g. \"car\", \"pedestrian . traffic cone\"). view_index: "
        + VIEW_PARAM["description"].removeprefix("camera: ") + ".")
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "view_index": VIEW_PARAM,
            "object_text": {"type": "string",
                            "description": "classes to keep, e.g. \"car . pedestrian\" (optional)"},
        },
        "required": ["view_index"],
        "additionalProperties": False,
    }

    def __init__(self, endpoint: str | None = None):
        self.endpoint = endpoint if endpoint is not None else os.environ.get(DETECTOR_ENV) or None
        if self.endpoint:  # the model must not be told a detector's boxes are ground truth
            self.description = type(self).description.replace(
                "from the ORACLE: the dataset's ground-truth annotations, not a detector",
                "from a 3D detector")

    def run(self, args: dict[str, Any], env: ToolEnv) -> ToolResult:
        opened = open_view(self, args, env)
        if isinstance(opened, ToolResult):
            return opened
        nusc, token, view, rec, image = opened
        text = args.get("object_text") or ""
        terms = nu.class_terms(text)
        if self.endpoint:
            boxes = self._detect(image, nu.CAMERAS[view], nu.intrinsic(nusc, rec["token"]), text)
            if isinstance(boxes, str):
                return ToolResult(error=f"{self.name}: detector at {self.endpoint} failed: "
                                        f"{boxes}")
            boxes = [b for b in boxes if nu.class_matches(b["class"], terms)]
            source = "3D detector"
        else:
            boxes = nu.boxes_in_view(nusc, rec["token"], terms)
            source = "ORACLE (ground-truth annotations, not a detector)"
        shown = boxes[:MAX_LISTED]
        drawn = draw_boxes(image, shown)
        out = env.add_image(drawn)
        which = f" matching {text.strip()!r}" if terms else ""
        head = (f"{source}: {len(boxes)} object(s){which} in {view_label(view)}, current "
                f"frame; {_seen_text(env, out)}")
        if not boxes:
            return ToolResult(text=head + ".", images=[drawn])
        lines = [head + ", numbered boxes drawn. Nearest first; camera frame: x = metres to "
                        "the right, z = metres forward; yaw 0 = facing away from the camera, "
                        "+1.57 = facing right, 3.14 = facing the camera:"]
        for i, b in enumerate(shown, 1):
            x, _, z = b["center"]
            size = "x".join(f"{v:.1f}" for v in b["size"]) + " m (w x l x h)" \
                if b.get("size") else "unknown size"
            yaw = f"yaw {b['yaw']:+.2f} rad" if b.get("yaw") is not None else "yaw unknown"
            lines.append(f"{i}. {b['class']}: {b['distance']:.1f} m away, x {x:+.1f} m, "
                         f"z {z:.1f} m, {size}, {yaw}")
        if len(boxes) > len(shown):
            lines.append(f"... and {len(boxes) - len(shown)} farther object(s) not listed.")
        return ToolResult(text="\n".join(lines), images=[drawn])

    def _detect(self, image: Image.Image, camera: str, k: list[list[float]], text: str
                ) -> list[dict[str, Any]] | str:
        """Boxes from the HTTP detector (protocol in the module docstring), or what failed."""
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        body = json.dumps({"image": base64.b64encode(buf.getvalue()).decode("ascii"),
                           "camera": camera, "intrinsic": k, "object_text": text}).encode()
        req = urllib.request.Request(self.endpoint, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=DETECTOR_TIMEOUT_S) as resp:
                reply = json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return f"HTTP {e.code} {e.reason}"
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:  # refused, timeout
            return f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        except ValueError as e:
            return f"the reply is not JSON: {e}"
        err = validate(reply, _REPLY_SCHEMA)
        if err:
            return f"unexpected reply: {err.replace('argument', 'field')}"
        boxes = []
        for b in reply["boxes"]:
            x, _, z = b["center"]
            boxes.append({**b, "distance": b.get("distance", math.hypot(x, z))})
        return sorted(boxes, key=lambda b: b["distance"])


def draw_boxes(image: Image.Image, boxes: list[dict[str, Any]]) -> Image.Image:
    """The boxes' 2D projections, numbered as in the text, on a copy of the image."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    lw = max(2, round(image.width / 400))
    palette = {"vehicle": (255, 160, 0), "human": (255, 40, 40), "movable": (60, 200, 255)}
    for i, b in enumerate(boxes, 1):
        if not b.get("box2d"):
            continue
        x0, y0, x1, y1 = b["box2d"]
        color = palette.get(b["class"].split(".")[0].split("_")[0], (80, 255, 80))
        draw.rectangle((x0, y0, x1, y1), outline=color, width=lw)
        label = f"#{i} {b['distance']:.0f}m"
        ty = max(0.0, y0 - 12)
        draw.rectangle((x0, ty, x0 + 7 * len(label), ty + 12), fill=color)
        draw.text((x0 + 1, ty), label, fill=(0, 0, 0))
    return out


__all__ = ["DepthEstimationTool", "Detect3DObjectsTool", "GetViewWithFrameTool",
           "RoIInspectionTool", "camera_image", "draw_boxes", "drive_sample", "open_view",
           "render_depth", "view_label"]
