"""nuScenes devkit access shared by the driving tools and the driving domain.

One cached `NuScenes` per (dataroot, version) per process: the tables of v1.0-trainval take
tens of seconds and gigabytes to load, and every episode of a run reads the same ones. The
devkit (and its matplotlib / sklearn imports) is imported on first use, so importing the tools
does not pay for it.

Frames: nuScenes keeps key frames at 2 Hz (annotated) and, in the real dataset, 12 Hz camera
sweeps in between; all of them sit on one `prev`/`next` chain of sample_data per channel. An
earlier frame is found by walking `prev` from the key frame to the record closest in time.
"""
from __future__ import annotations

import functools
import math
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

CAMERAS = ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK", "CAM_BACK_LEFT",
           "CAM_BACK_RIGHT")  # view_index order
FRAMES = ("current", "1s_ago", "2s_ago")  # frame_index order
FRAME_SECONDS = (0.0, 1.0, 2.0)
LIDAR = "LIDAR_TOP"
MIN_DIST = 1.0  # the devkit's default: drops returns off the ego vehicle's own body

_load_lock = threading.Lock()


def load_nusc(dataroot: str | Path, version: str) -> Any:
    """The process's NuScenes for this dataroot and version, loaded once (thread-safe)."""
    with _load_lock:  # two episodes' threads must not load the same tables twice at once
        return _load(str(Path(dataroot).resolve()), version)


@functools.cache
def _load(dataroot: str, version: str) -> Any:
    from nuscenes.nuscenes import NuScenes

    return NuScenes(version=version, dataroot=dataroot, verbose=False)


def camera_frame(nusc: Any, sample_token: str, camera: str, seconds_ago: float = 0.0
                 ) -> dict[str, Any]:
    """The sample_data record of `camera` (any channel) closest to `seconds_ago` before the key
    frame of `sample_token`. At the start of a scene this is the earliest record available:
    compare its timestamp with the key frame's to tell."""
    sample = nusc.get("sample", sample_token)
    rec = nusc.get("sample_data", sample["data"][camera])
    target = rec["timestamp"] - seconds_ago * 1e6
    best = rec
    while rec["prev"] and rec["timestamp"] > target:
        rec = nusc.get("sample_data", rec["prev"])
        if abs(rec["timestamp"] - target) < abs(best["timestamp"] - target):
            best = rec
    return best


def seconds_before(nusc: Any, sample_token: str, record: dict[str, Any]) -> float:
    """How many seconds `record` lies before its channel's key frame in `sample_token`."""
    key = nusc.get("sample_data", nusc.get("sample", sample_token)["data"][record["channel"]])
    return (key["timestamp"] - record["timestamp"]) / 1e6


def lidar_depth(nusc: Any, sample_token: str, camera: str, seconds_ago: float = 0.0
                ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """LIDAR_TOP projected into `camera`: pixel coordinates [2, N], depths along the camera
    axis [N] (metres) and the image size (w, h). The devkit's own projection
    (map_pointcloud_to_image: sensor -> ego -> global -> ego at the camera's time -> camera),
    points closer than MIN_DIST and outside the image dropped."""
    cam = camera_frame(nusc, sample_token, camera, seconds_ago)
    lidar = camera_frame(nusc, sample_token, LIDAR, seconds_ago)
    points, depths, im = nusc.explorer.map_pointcloud_to_image(lidar["token"], cam["token"],
                                                               min_dist=MIN_DIST)
    size = im.size
    im.close()  # the devkit opens the image lazily only to read its size
    return np.asarray(points[:2]), np.asarray(depths), size


def camera_to_ego(nusc: Any, camera_sd_token: str, points_uv: np.ndarray, depths: np.ndarray
                  ) -> np.ndarray:
    """Pixels with depths back to 3D points [3, N] in the ego frame at the camera's time
    (x forward, y left, z up, origin on the ground under the rear axle): gives each LiDAR
    return its height above the road."""
    from pyquaternion import Quaternion

    sd = nusc.get("sample_data", camera_sd_token)
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    k = np.asarray(cs["camera_intrinsic"], dtype=float)
    uv1 = np.vstack([points_uv[:2], np.ones(points_uv.shape[1])])
    cam = np.linalg.solve(k, uv1) * depths  # inverse of view_points with normalize=True
    rot = Quaternion(cs["rotation"]).rotation_matrix
    return rot @ cam + np.asarray(cs["translation"], dtype=float)[:, None]


def class_terms(text: str | None) -> list[str]:
    """A class filter ("car", "traffic cone . barrier", "car, pedestrian") as lowercase terms."""
    if not text or not text.strip():
        return []
    parts = re.split(r"\s*[,;|]\s*|\s+\.\s+|\s+and\s+|\s+or\s+", text.strip().lower())
    return [p.strip(" .") for p in parts if p.strip(" .")]


# Words a model may use for a nuScenes category that are not substrings of its name.
_ALIASES = {"person": "pedestrian", "people": "pedestrian", "human": "pedestrian",
            "cone": "trafficcone", "bike": "bicycle", "motorbike": "motorcycle",
            "lorry": "truck"}


def class_matches(category: str, terms: list[str]) -> bool:
    """Whether a category name ("vehicle.car") matches any filter term (substring, spaces and
    plurals ignored, a few aliases); no terms matches everything."""
    if not terms:
        return True
    name = category.lower().replace("_", "")
    for term in terms:
        t = term.replace(" ", "").replace("_", "")
        singular = [t[:-2], t[:-1]] if t.endswith("es") else [t[:-1]] if t.endswith("s") else []
        cands = [t, *singular]
        if any(c and (c in name or _ALIASES.get(c, "\0") in name) for c in cands):
            return True
    return False


def boxes_in_view(nusc: Any, camera_sd_token: str, classes: list[str] | str | None = None
                  ) -> list[dict[str, Any]]:
    """Annotated boxes visible (any corner in the image, all in front) in a camera's frame,
    nearest first. Each: class (category name), center [x, y, z] in the camera frame (x right,
    y down, z forward, metres), size [w, l, h], yaw (heading about the vertical axis: 0 = facing
    away from the camera, +pi/2 = facing right, +-pi = facing the camera), distance (metres
    over the ground plane, hypot(x, z)) and box2d [x0, y0, x1, y1], the projected corners
    clipped to the image. `classes` filters by substring of the category name."""
    from nuscenes.utils.geometry_utils import BoxVisibility, view_points

    terms = class_terms(classes) if isinstance(classes, str) else \
        [c.lower() for c in classes or []]
    sd = nusc.get("sample_data", camera_sd_token)
    w, h = sd["width"], sd["height"]
    _, boxes, k = nusc.get_sample_data(camera_sd_token, box_vis_level=BoxVisibility.ANY)
    out = []
    for box in boxes:
        if not class_matches(box.name, terms):
            continue
        uv = view_points(box.corners(), k, normalize=True)[:2]
        x0, y0 = max(0.0, float(uv[0].min())), max(0.0, float(uv[1].min()))
        x1, y1 = min(float(w), float(uv[0].max())), min(float(h), float(uv[1].max()))
        heading = box.orientation.rotation_matrix @ np.array([1.0, 0.0, 0.0])
        cx, cy, cz = (float(v) for v in box.center)
        out.append({"class": box.name, "center": [cx, cy, cz],
                    "size": [float(v) for v in box.wlh],
                    "yaw": math.atan2(float(heading[0]), float(heading[2])),
                    "distance": math.hypot(cx, cz), "box2d": [x0, y0, x1, y1],
                    "token": box.token})
    return sorted(out, key=lambda b: b["distance"])


def intrinsic(nusc: Any, camera_sd_token: str) -> list[list[float]]:
    """The camera matrix (3x3) of a camera sample_data record."""
    sd = nusc.get("sample_data", camera_sd_token)
    return nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])["camera_intrinsic"]


__all__ = ["CAMERAS", "FRAMES", "FRAME_SECONDS", "LIDAR", "boxes_in_view", "camera_frame",
           "camera_to_ego", "class_matches", "class_terms", "intrinsic", "lidar_depth",
           "load_nusc", "seconds_before"]
