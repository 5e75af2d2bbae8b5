"""The synthetic nuScenes car's sensor rig (synth.py): the six cameras and LIDAR_TOP where the
nuScenes car has them, with per-log calibration noise."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pyquaternion import Quaternion

from vlmagent.drive.synth_render import rot_z

CAMERAS = (  # channel, yaw about ego z (deg, + = left), ego-frame position (m), focal / width
    ("CAM_FRONT", 0.0, (1.700, 0.016, 1.511), 1266.4 / 1600),
    ("CAM_FRONT_RIGHT", -55.0, (1.551, -0.493, 1.496), 1260.8 / 1600),
    ("CAM_FRONT_LEFT", 55.0, (1.524, 0.495, 1.509), 1272.6 / 1600),
    ("CAM_BACK", 180.0, (0.028, 0.003, 1.579), 809.2 / 1600),
    ("CAM_BACK_LEFT", 110.0, (1.036, 0.485, 1.591), 1256.7 / 1600),
    ("CAM_BACK_RIGHT", -110.0, (1.015, -0.481, 1.562), 1259.5 / 1600),
)
LIDAR_POS = (0.943, 0.0, 1.840)
CHANNELS = tuple(c[0] for c in CAMERAS) + ("LIDAR_TOP",)
# Camera axes (x right, y down, z forward) as columns in the ego frame (x forward, y left, z up)
# for a camera looking straight ahead; its quaternion is nuScenes' CAM_FRONT (0.5, -0.5, 0.5, -0.5).
CAM_AXES = np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])


@dataclass
class Sensor:
    """A calibrated sensor: pose in the ego frame and, for cameras, intrinsics."""
    channel: str
    modality: str  # camera | lidar
    translation: np.ndarray  # (3,) ego frame, metres
    R: np.ndarray  # (3, 3) rotation sensor -> ego
    K: np.ndarray | None = None  # (3, 3) camera intrinsics, pixels

    @property
    def rotation(self) -> list[float]:
        """R as the calibrated_sensor quaternion (w, x, y, z)."""
        return [float(v) for v in Quaternion(matrix=self.R).elements]


def _tilt(rng: np.random.Generator, yaw: float) -> np.ndarray:
    """Yaw about ego z with calibration noise of about 0.1 deg in yaw, pitch and roll."""
    (a, b, c), rz = rng.normal(0, 0.002, 3), rot_z(yaw)
    pitch = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    roll = np.array([[1, 0, 0], [0, math.cos(c), -math.sin(c)], [0, math.sin(c), math.cos(c)]])
    return rz @ rot_z(a) @ pitch @ roll


def make_rig(size: tuple[int, int], rng: np.random.Generator) -> list[Sensor]:
    """The six cameras and LIDAR_TOP (turned -90 deg about z, as on the nuScenes car: x = ego
    right, y = ego forward), with per-log calibration noise. Focal lengths scale with the image
    width as nuScenes' 1600x900 intrinsics would; the principal point sits where theirs does."""
    w, h = size
    out = []
    for name, yaw, pos, f in CAMERAS:
        k = np.array([[f * w, 0, w * (0.51 + rng.normal(0, 0.002))],
                      [0, f * w, h * (0.5456 + rng.normal(0, 0.002))], [0, 0, 1]])
        out.append(Sensor(name, "camera", np.array(pos) + rng.normal(0, 0.004, 3),
                          _tilt(rng, math.radians(yaw)) @ CAM_AXES, k))
    out.append(Sensor("LIDAR_TOP", "lidar", np.array(LIDAR_POS) + rng.normal(0, 0.004, 3),
                      _tilt(rng, -math.pi / 2)))
    return out
