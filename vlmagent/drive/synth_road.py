"""Building blocks of the synthetic scenes (synth_scenarios.py): the flat LOCAL frame (x, y on
the ground, z up, metres; the ego starts at the origin heading +x), the road around the ego-lane
centre line with its road coordinates (s along the line, d across, d > 0 to the left), and the
actor tracks the scenario scripts place on it, sampled at every key frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

KEY_DT = 0.5  # key frames (nuScenes samples) at 2 Hz
SUB = 10  # integration steps per key frame
DT = KEY_DT / SUB
LANE_W = 3.5
EGO_FRONT = 3.5  # ego origin (rear axle on the ground, as nuScenes) to the front bumper, metres
CAM_FRONT_X = 1.70  # CAM_FRONT ahead of the ego origin (synth_rig.CAMERAS)
ROAD_BEHIND, ROAD_AHEAD = 250.0, 320.0  # road drawn behind the start / beyond the last pose

CAR_COLOURS = ((178, 34, 34), (30, 70, 160), (224, 224, 220), (150, 155, 162), (32, 32, 36),
               (30, 105, 60), (218, 182, 40), (205, 95, 30), (115, 35, 95), (60, 150, 190))
SHIRTS = ((200, 40, 40), (40, 90, 190), (230, 200, 60), (60, 150, 80), (240, 240, 240),
          (150, 60, 160), (240, 130, 40))


@dataclass
class Road:
    """The ego-lane centre line (local frame) and the cross-section around it."""
    s: np.ndarray
    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray
    n_same: int = 1  # lanes in the ego's direction (the ego drives in the rightmost)
    n_opp: int = 1  # oncoming lanes, left of the double yellow line
    shoulder: float = 2.2  # parking strip right of the ego lane
    sidewalk: float = 4.0
    stop_s: float | None = None  # stop line, zebra crossing beyond it (traffic-light scenes)

    @property
    def right_edge(self) -> float:
        return -LANE_W / 2 - self.shoulder

    @property
    def left_edge(self) -> float:
        return LANE_W * (self.n_same + self.n_opp) - LANE_W / 2

    @property
    def centre_d(self) -> float:
        """The double yellow line between the two directions."""
        return LANE_W * self.n_same - LANE_W / 2

    def edge(self, side: int) -> float:
        return self.left_edge if side > 0 else self.right_edge

    def at(self, s, d=0.0):
        """Local (x, y, heading) of road coordinates (s, d); vectorised."""
        s, d = np.asarray(s, float), np.asarray(d, float)
        yaw = np.interp(s, self.s, self.yaw)
        return (np.interp(s, self.s, self.x) - np.sin(yaw) * d,
                np.interp(s, self.s, self.y) + np.cos(yaw) * d, yaw)

    def to_road(self, px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(s, signed d) of local points, by the nearest centre-line sample."""
        dx, dy = px[:, None] - self.x[None], py[:, None] - self.y[None]
        i = np.argmin(dx * dx + dy * dy, axis=1)
        j = np.arange(len(px))
        return self.s[i], -np.sin(self.yaw[i]) * dx[j, i] + np.cos(self.yaw[i]) * dy[j, i]


def make_road(end_s: float, bend: tuple[float, float, int] | None = None, **kw) -> Road:
    """A road from -ROAD_BEHIND to end_s; bend = (start s, radius, +1 left / -1 right) is a
    90-degree arc. The heading integrates the curvature, the position integrates the heading."""
    s = np.arange(-ROAD_BEHIND, end_s + 0.25, 0.5)
    kappa = np.zeros_like(s)
    if bend is not None:
        s_b, radius, sign = bend
        kappa[(s >= s_b) & (s < s_b + math.pi / 2 * radius)] = sign / radius
    yaw = np.concatenate([[0.0], np.cumsum(0.25 * (kappa[1:] + kappa[:-1]))])
    mid = 0.5 * (yaw[1:] + yaw[:-1])
    x = np.concatenate([[0.0], np.cumsum(0.5 * np.cos(mid))])
    y = np.concatenate([[0.0], np.cumsum(0.5 * np.sin(mid))])
    i0 = int(round(ROAD_BEHIND / 0.5))
    return Road(s, x - x[i0], y - y[i0], yaw - yaw[i0], **kw)


@dataclass
class Actor:
    """An annotated object: per key frame pose (local frame) and state."""
    kind: str  # car | truck | ped | light | cone | rack (how synth_render draws it)
    category: str  # nuScenes category name
    wlh: tuple[float, float, float]  # width, length, height (nuScenes size order)
    colour: tuple[int, int, int]
    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray  # heading of the box's +x (length) axis
    speed: np.ndarray
    attrs: list[list[str]]  # nuScenes attribute names per key frame
    lamp: list[str]  # per key frame: "brake"/"off" (vehicles), "red"/"green" (lights)
    colour2: tuple[int, int, int] = (40, 40, 40)  # shirt / truck cab
    z: float = 0.0  # height of the box bottom above the ground (hanging traffic lights)
    key: bool = False  # the scenario's decisive object
    token: str = ""  # instance token, set by synth.plan_scenes


@dataclass
class Block:
    """An unannotated static box (building, pole, tree part), local frame."""
    x: float
    y: float
    yaw: float
    l: float  # noqa: E741 (length along yaw)
    w: float
    z0: float
    h: float
    colour: tuple[int, int, int]
    top: tuple[int, int, int] | None = None
    windows: bool = False


@dataclass
class Script:
    """What a scenario script decides: the road, the ego's speed along its lane (fine grid), the
    decisive actors and props, and stretches (s_lo, s_hi, side: -1 right, +1 left, 0 both) that
    the surroundings must leave free around the cue."""
    road: Road
    s: np.ndarray
    v: np.ndarray
    actors: list[Actor] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    zones: list[tuple[float, float, int]] = field(default_factory=list)
    params: dict = field(default_factory=dict)  # the drawn numbers; "oncoming_max" (s) keeps
    # oncoming cars from crossing a crossing, "adjacent" lets a neighbour lane carry traffic


@dataclass
class Scenario:
    name: str
    cue: str  # where the decisive cue is: CAM_FRONT, CAM_FRONT zoom, CAM_FRONT_LEFT, ...
    road: Road
    ego: np.ndarray  # (n_key, 3) local x, y, heading of the ego frame at each key frame
    ego_speed: np.ndarray  # (n_key,) m/s
    actors: list[Actor] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    # the scene index whose generators this scene draws from: a decoy twin made with
    # plan_scenes(twins=True) shares its twin's (same road, rig, scenery and traffic)
    draw: int | None = None

    @property
    def description(self) -> str:
        """What the domain reads back: the scenario, where its cue is and, for scenarios with
        a decoy twin, until when (s from the first key frame) only the cue tells them apart."""
        out = f"synthetic: {self.name}; cue: {self.cue}"
        if "hidden_until" in self.params:
            out += f"; hidden until: {self.params['hidden_until']:.2f} s"
        if self.draw is not None:  # the held-out split keeps twins together (domains/driving)
            out += f"; twin group: {self.draw}"
        return out


def _t(n_key: int) -> np.ndarray:
    """The fine time grid: SUB steps per key frame, up to the last key frame."""
    return np.arange((n_key - 1) * SUB + 1) * DT


def speed_profile(v0: float, phases, n_key: int) -> tuple[np.ndarray, np.ndarray]:
    """Fine-grid (s, v) of a driver who, from each phase's start time (t, accel, v_target) on,
    changes speed at |accel| towards the target and then holds it."""
    n = len(_t(n_key))
    v = np.empty(n)
    v[0] = v0
    phases = sorted(phases)
    for i in range(1, n):
        t, rate, target = (i - 1) * DT, 0.0, v[i - 1]
        for ts, a, vt in phases:
            if t >= ts - 1e-9:
                rate, target = abs(a), vt
        step = rate * DT
        v[i] = min(target, v[i - 1] + step) if target > v[i - 1] else max(target, v[i - 1] - step)
    return np.concatenate([[0.0], np.cumsum(0.5 * (v[1:] + v[:-1]) * DT)]), v


def _track(road: Road, n_key: int, kind: str, category: str, wlh, colour, s, d=0.0, *,
           facing: float = 0.0, lamp="off", parked: bool = False, **kw) -> Actor:
    """An actor moving along road coordinates s(t), d(t) (fine grid or constants). Its box
    heading follows its velocity; when it stands it keeps its last heading (or `facing`,
    relative to the road, before it first moves)."""
    n = len(_t(n_key))
    s = np.broadcast_to(np.asarray(s, float), (n,)).copy()
    d = np.broadcast_to(np.asarray(d, float), (n,)).copy()
    x, y, ryaw = road.at(s, d)
    ds, dd = np.gradient(s), np.gradient(d)
    last = np.maximum.accumulate(np.where(np.hypot(ds, dd) > 1e-4, np.arange(n), -1))
    head = np.where(last >= 0, np.arctan2(dd, ds)[np.maximum(last, 0)], facing)
    k = np.arange(n_key) * SUB
    speed = (np.hypot(np.gradient(x), np.gradient(y)) / DT)[k]
    lamps = [lamp] * n_key if isinstance(lamp, str) else list(lamp)
    attrs = [["vehicle.parked" if parked else "vehicle.moving" if v > 0.3 else "vehicle.stopped"]
             if kind in ("car", "truck") else
             ["pedestrian.moving" if v > 0.2 else "pedestrian.standing"] if kind == "ped" else
             [f"traffic_light.{lp}"] if kind == "light" else [] for v, lp in zip(speed, lamps)]
    return Actor(kind, category, tuple(float(v) for v in wlh), colour, x[k], y[k],
                 np.angle(np.exp(1j * (ryaw + head)))[k], speed, attrs, lamps, **kw)


def _vehicle(rng, road, n_key, s, d=0.0, *, truck: bool = False, **kw) -> Actor:
    if truck:
        wlh = (rng.uniform(2.3, 2.55), rng.uniform(6.5, 9.0), rng.uniform(2.9, 3.5))
        kw.setdefault("colour2", CAR_COLOURS[rng.integers(len(CAR_COLOURS))])
        colour = (228, 228, 222) if rng.random() < 0.6 else CAR_COLOURS[rng.integers(10)]
        return _track(road, n_key, "truck", "vehicle.truck", wlh, colour, s, d, **kw)
    wlh = (rng.uniform(1.75, 2.0), rng.uniform(4.0, 4.9), rng.uniform(1.45, 1.7))
    return _track(road, n_key, "car", "vehicle.car", wlh,
                  CAR_COLOURS[rng.integers(len(CAR_COLOURS))], s, d, **kw)


def _ped(rng, road, n_key, s, d, **kw) -> Actor:
    wlh = (rng.uniform(0.6, 0.72), rng.uniform(0.62, 0.78), rng.uniform(1.6, 1.88))
    return _track(road, n_key, "ped", "human.pedestrian.adult", wlh,
                  tuple(int(c) for c in rng.integers(25, 90, 3)), s, d,
                  colour2=SHIRTS[rng.integers(len(SHIRTS))], **kw)
