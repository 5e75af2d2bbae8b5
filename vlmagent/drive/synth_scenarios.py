"""Scenario scripts for the synthetic nuScenes generator (synth.py).

Every scene is scripted in a flat LOCAL frame (x, y on the ground, z up, metres; the ego starts
at the origin heading +x) around one road, given by the centre line of the ego lane sampled every
0.5 m. Lanes and sidewalks sit at lateral offsets d from that line (d > 0: left of the driving
direction; right-hand traffic, so the ego drives in the rightmost lane and oncoming lanes are on
the left). Objects move in road coordinates (s along the line, d across), which keeps them on
their lanes through bends. synth.py later moves the whole scene into the nuScenes global frame
with one rotation and translation.

The EGO TRAJECTORY FOLLOWS FROM WHAT THE CAMERAS SHOW. Each script places its decisive object
(lead car, traffic light, pedestrian, bend, cutting-in car) first and derives the ego's speed
profile from it: braking at 2.5-4 m/s^2 where labels should say Decelerate, stops that hold to
the end of the scene, cruising at 8-12 m/s, bends with R <= 2.2 v so that 2 s of driving ends
more than 4 m to the side. Meta-action labels look up to 8 s ahead, so every decisive object is
in view from the first key frame on (the far traffic light only as a few pixels).
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
CAM_FRONT_X = 1.70  # CAM_FRONT ahead of the ego origin (synth.CAMERAS)
SIDE_CUE_DEG = 35.0  # CAM_FRONT sees +-32 deg: a side-camera cue stays beyond this bearing
ROAD_BEHIND, ROAD_AHEAD = 250.0, 320.0  # road drawn behind the start / beyond the last pose

SCENARIOS: tuple[str, ...] = (
    "clear_road", "lead_vehicle_braking", "red_light_far", "green_light_far", "pedestrian_side",
    "pedestrian_side_clear", "turn_left", "turn_right", "cut_in")
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

    @property
    def description(self) -> str:
        return f"synthetic: {self.name}; cue: {self.cue}"


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


# ---- the scenario scripts ----

def _clear_road(rng, n_key):
    """Nothing to react to: cruise at 8-12 m/s, or start slowly and accelerate to it."""
    road_kw = dict(n_same=int(rng.integers(1, 3)), n_opp=int(rng.integers(1, 3)))
    if rng.random() < 0.4:  # starts slowly and accelerates on the free road
        v0, vc = rng.uniform(0.0, 3.0), rng.uniform(9.0, 12.0)
        s, v = speed_profile(v0, [(0.0, rng.uniform(2.6, 3.5), vc)], n_key)
    else:
        v0 = rng.uniform(8.0, 12.0)
        s, v = speed_profile(v0, [(rng.uniform(2, 10), rng.uniform(0.2, 0.5),
                                   v0 + rng.uniform(-1.0, 1.0))], n_key)
    road = make_road(s[-1] + ROAD_AHEAD, **road_kw)
    actors = []
    if rng.random() < 0.5:  # a car far ahead pulling away: a car ahead alone means nothing
        vl = v.max() + rng.uniform(1.0, 3.0)
        actors.append(_vehicle(rng, road, n_key, rng.uniform(35, 60) + vl * _t(n_key)))
    return Script(road, s, v, actors, params={"adjacent": True})


def _lead_braking(rng, n_key):
    """The car ahead in the ego lane brakes from the first frame on (brake lights lit); the ego
    reacts within a second and stops 4-7 m behind it, braking at 2.5-4.5 m/s^2."""
    for _ in range(200):
        v0, gap0 = rng.uniform(8.0, 12.0), rng.uniform(12.0, 25.0)
        vl0, a_l = v0 - rng.uniform(0.0, 2.0), rng.uniform(2.5, 4.0)
        t_r, gap_end, truck = rng.uniform(0.4, 1.0), rng.uniform(4.0, 7.0), rng.random() < 0.25
        length = 7.5 if truck else 4.5
        s_l, _ = speed_profile(vl0, [(0.0, a_l, 0.0)], n_key)
        s_l = s_l + EGO_FRONT + gap0 + length / 2
        target = s_l[-1] - length / 2 - gap_end - EGO_FRONT
        a_e = v0 ** 2 / (2 * (target - v0 * t_r)) if target > v0 * t_r + 1 else 99.0
        if not 2.5 <= a_e <= 4.5:
            continue
        s, v = speed_profile(v0, [(t_r, a_e, 0.0)], n_key)
        if np.min(s_l - length / 2 - (s + EGO_FRONT)) > 2.0:
            break
    else:
        raise RuntimeError("no lead_vehicle_braking script fits")
    road = make_road(s[-1] + ROAD_AHEAD, n_opp=int(rng.integers(1, 3)))
    lead = _vehicle(rng, road, n_key, s_l, truck=truck, lamp="brake", key=True)
    lead.wlh = (lead.wlh[0], length, lead.wlh[2])
    return Script(road, s, v, [lead], params=dict(v0=v0, gap0=gap0, lead_decel=a_l,
                                                  ego_decel=a_e, reaction=t_r))


def _traffic_light(rng, n_key, red: bool):
    """Identical geometry for red and green: only the lit lamp tells them apart."""
    v0, t_b, a, gap = (rng.uniform(8.0, 12.0), rng.uniform(2.0, 4.5), rng.uniform(2.6, 3.6),
                       rng.uniform(1.0, 2.5))
    stop_line = v0 * t_b + v0 ** 2 / (2 * a) + EGO_FRONT + gap
    s, v = speed_profile(v0, [(t_b, a, 0.0)] if red else [], n_key)
    road = make_road(s[-1] + ROAD_AHEAD, n_same=int(rng.integers(1, 3)),
                     n_opp=int(rng.integers(1, 3)), stop_s=stop_line)
    s_l, colour = stop_line + 7.0, "red" if red else "green"
    d_pole, d_over = road.right_edge - 0.7, (road.n_same - 1) * LANE_W / 2
    z_over = rng.uniform(4.6, 5.2)
    light = dict(wlh=(0.42, 0.35, 1.05), lamp=colour, key=True, facing=math.pi)
    actors = [_track(road, n_key, "light", "static_object.traffic_light", colour=(28, 30, 28),
                     s=s_l - ds, d=d, z=z, **light)  # overhead on the arm; on the pole's front
              for d, z, ds in ((d_over, z_over, 0.0), (d_pole, 2.3, 0.35))]
    px, py, yaw = road.at(s_l, d_pole)
    mx, my, _ = road.at(s_l, (d_pole + d_over) / 2)
    grey = (120, 122, 125)
    blocks = [Block(float(px), float(py), float(yaw), 0.22, 0.22, 0.0, z_over + 1.35, grey),
              Block(float(mx), float(my), float(yaw) + math.pi / 2, d_over - d_pole + 0.6, 0.14,
                    z_over + 1.05, 0.14, grey)]
    return Script(road, s, v, actors, blocks, [(stop_line - 25, stop_line + 14, 0)],
                  dict(v0=v0, brake_at=t_b, decel=a, stop_line=stop_line, light_s=s_l,
                       oncoming_max=stop_line - 8))


def _pedestrian(rng, n_key, crossing: bool):
    """A pedestrian beside the road, seen by a front-side camera but outside CAM_FRONT while
    the ego still moves; it walks into the road (ego stops) or stays on the sidewalk (the decoy,
    ego keeps its speed). Both draw their geometry from the same distributions."""
    t = _t(n_key)
    tan_edge = math.tan(math.radians(SIDE_CUE_DEG))
    for _ in range(500):
        side = int(rng.choice([-1, 1]))
        road = make_road(10.0, shoulder=rng.uniform(2.0, 2.5), sidewalk=rng.uniform(5.0, 6.5))
        edge = road.edge(side)
        m = rng.uniform(2.0, min(4.5, road.sidewalk - 0.6))
        d0 = edge + side * m
        x0 = rng.uniform(0.75, 0.95) * ((abs(d0) - 0.4) / tan_edge - 0.4)
        s_p, v_p = CAM_FRONT_X + x0, rng.uniform(1.3, 1.9)
        g, t_r, a = rng.uniform(2.5, 4.0), rng.uniform(0.3, 0.7), rng.uniform(3.0, 4.0)
        room = s_p - 0.4 - g - EGO_FRONT
        v0 = a * (-t_r + math.sqrt(t_r ** 2 + 2 * max(room, 0.0) / a))
        if v0 < 4.0:
            continue
        v0 = min(v0, 9.0)
        behaviour = "cross" if crossing else str(rng.choice(["stand", "along", "away"]))
        d, sp = np.full_like(t, d0), np.full_like(t, s_p)
        if crossing:  # to the far sidewalk; the ego brakes to stop g metres short of its path
            t_b = t_r + (room - v0 * t_r - v0 ** 2 / (2 * a)) / v0
            s, v = speed_profile(v0, [(t_b, a, 0.0)], n_key)
            d = d0 - side * np.minimum(v_p * t, abs(road.edge(-side) - side * 1.5 - d0))
        else:
            s, v = speed_profile(v0, [], n_key)
            if behaviour == "along":  # a few metres along the sidewalk, then it waits
                sp = s_p + rng.choice([-1, 1]) * np.minimum(v_p * t, 8.0)
            elif behaviour == "away":
                d = d0 + side * np.minimum(v_p * t, road.sidewalk - m - 0.4)
        # while the ego moves and the pedestrian is on the sidewalk, no corner of its box may
        # be within CAM_FRONT's field of view
        i = np.arange(n_key) * SUB
        ahead = sp[i, None] + [-0.4, 0.4, -0.4, 0.4] - s[i, None] - CAM_FRONT_X
        across = np.abs(d[i, None]) + [-0.4, -0.4, 0.4, 0.4]
        outside = (ahead <= 0) | (np.arctan2(across, ahead) >= math.radians(SIDE_CUE_DEG - 1))
        if np.all(outside.all(1) | (v[i] < 0.3) | (side * (d[i] - edge) <= 0.3)):
            break
    else:
        raise RuntimeError("no pedestrian script fits")
    road = make_road(s[-1] + ROAD_AHEAD, shoulder=road.shoulder, sidewalk=road.sidewalk)
    ped = _ped(rng, road, n_key, sp, d, key=True,
               facing=-side * math.pi / 2 if crossing else float(rng.choice([0, math.pi])))
    return Script(road, s, v, [ped], zones=[(s_p - 18, s_p + 14, 0)],
                  params=dict(v0=v0, side=side, ped_s=s_p, ped_d0=d0, behaviour=behaviour,
                              oncoming_max=s_p - 12))


def _turn(rng, n_key, sign: int):
    """A 90-degree bend, in view from the start, taken at 6-8 m/s with R <= 2.2 v so that 2 s
    of driving in it ends more than 4 m to the side."""
    v = rng.uniform(6.0, 8.0)
    radius, t_b = rng.uniform(12.0, min(20.0, 2.2 * v)), rng.uniform(1.5, 6.0)
    s, vv = speed_profile(v, [], n_key)
    road = make_road(s[-1] + ROAD_AHEAD, bend=(v * t_b, radius, sign))
    return Script(road, s, vv, params=dict(v=v, radius=radius, bend_s=v * t_b, bend_at=t_b))


def _cut_in(rng, n_key):
    """A car in the adjacent lane, slower, already drifting into the ego lane (its lane change
    began ~1 s before the scene): the earlier frames show it moving over."""
    t = _t(n_key)
    for _ in range(200):
        v0, dv = rng.uniform(9.0, 12.0), rng.uniform(2.5, 4.5)
        vc, gap0 = v0 - dv, rng.uniform(5.0, 10.0)
        t0, dur = -rng.uniform(0.8, 1.2), rng.uniform(2.5, 3.5)
        t_r, a, vt = rng.uniform(0.3, 0.6), rng.uniform(2.6, 3.5), vc - rng.uniform(1.0, 2.5)
        hold = t_r + (v0 - vt) / a + rng.uniform(1.5, 3.0)
        s, v = speed_profile(v0, [(t_r, a, vt), (hold, 0.6, vc)], n_key)
        s_c = EGO_FRONT + gap0 + 2.3 + vc * t
        d_c = LANE_W * (1 + np.cos(np.pi * np.clip((t - t0) / dur, 0, 1))) / 2
        if np.min(s_c - 2.3 - (s + EGO_FRONT)) > 3.0:
            break
    else:
        raise RuntimeError("no cut_in script fits")
    road = make_road(s[-1] + ROAD_AHEAD, n_same=2, n_opp=int(rng.integers(1, 3)))
    car = _vehicle(rng, road, n_key, s_c, d_c, key=True)
    return Script(road, s, v, [car], params=dict(v0=v0, cutter_speed=vc, decel=a, gap0=gap0))


SCRIPTS = {
    "clear_road": (_clear_road, "CAM_FRONT"),
    "lead_vehicle_braking": (_lead_braking, "CAM_FRONT"),
    "red_light_far": (lambda rng, n: _traffic_light(rng, n, True), "CAM_FRONT zoom"),
    "green_light_far": (lambda rng, n: _traffic_light(rng, n, False), "CAM_FRONT zoom"),
    "pedestrian_side": (lambda rng, n: _pedestrian(rng, n, True), None),
    "pedestrian_side_clear": (lambda rng, n: _pedestrian(rng, n, False), None),
    "turn_left": (lambda rng, n: _turn(rng, n, 1), "CAM_FRONT"),
    "turn_right": (lambda rng, n: _turn(rng, n, -1), "CAM_FRONT"),
    "cut_in": (_cut_in, "CAM_FRONT history"),
}


# ---- everything around the cue: traffic that never interacts with the ego, and scenery ----

def _free(zones, s, side: int, pad: float = 0.0) -> bool:
    """Whether positions s (a number or a path) on `side` keep `pad` metres from every zone."""
    a, b = float(np.min(s)), float(np.max(s))
    return all(b < lo - pad or a > hi + pad or zs not in (0, side) for lo, hi, zs in zones)


def _traffic(rng, road: Road, n_key: int, zones, params, s_lo: float, s_hi: float) -> list:
    """Parked cars, cones, oncoming traffic, sidewalk pedestrians and bicycle racks: all kept
    off the zones, none on a path that meets the ego or the decisive actors."""
    t, out = _t(n_key), []
    s, parked = s_lo + rng.uniform(0, 20), []
    while s < s_hi:  # parked cars on the right shoulder
        if rng.random() < 0.45 and _free(zones, s, -1, 3.0):
            out.append(_vehicle(rng, road, n_key, s, -LANE_W / 2 - road.shoulder / 2
                                + rng.uniform(-0.1, 0.1), parked=True))
            parked.append(s)
        s += rng.uniform(6.0, 16.0)
    for _ in range(int(rng.integers(0, 4))):
        s = rng.uniform(s_lo + 40, s_hi)
        if _free(zones, s, -1, 2.0) and all(abs(s - q) > 4 for q in parked):
            out.append(_track(road, n_key, "cone", "movable_object.trafficcone", (0.4, 0.4, 0.7),
                              (235, 100, 20), s, road.right_edge + rng.uniform(0.6, 1.5)))
    # oncoming traffic (kept off any crossing ahead) and, on clear roads, a neighbour lane
    onc_max = min(params.get("oncoming_max", s_hi), s_hi + 10 * t[-1])
    for j in range(road.n_same, road.n_same + road.n_opp):
        vj, s0 = rng.uniform(8.0, 12.0), rng.uniform(10.0, 40.0)
        while s0 < onc_max:
            if rng.random() < 0.6:
                out.append(_vehicle(rng, road, n_key, s0 - vj * t, j * LANE_W,
                                    truck=rng.random() < 0.15))
            s0 += rng.uniform(25.0, 90.0)
    if params.get("adjacent") and road.n_same == 2:
        vj, s0 = rng.uniform(8.0, 13.0), rng.uniform(-40.0, 0.0)
        while s0 < 150:
            out.append(_vehicle(rng, road, n_key, s0 + vj * t, LANE_W))
            s0 += rng.uniform(30.0, 80.0)
    for _ in range(int(rng.integers(0, 4))):  # pedestrians who stay on the sidewalk
        side, s = int(rng.choice([-1, 1])), rng.uniform(s_lo + 30, s_hi - 30)
        walk = s + rng.choice([-1, 0, 1]) * rng.uniform(1.0, 1.5) * t
        if _free(zones, walk, side, 6.0):
            out.append(_ped(rng, road, n_key, walk, road.edge(side) + side
                            * rng.uniform(1.3, road.sidewalk - 2.0),
                            facing=float(rng.choice([0, math.pi]))))
    for _ in range(int(rng.integers(0, 3))):
        side, s = int(rng.choice([-1, 1])), rng.uniform(s_lo + 20, s_hi)
        if _free(zones, s, side, 3.0):
            out.append(_track(road, n_key, "rack", "static_object.bicycle_rack",
                              (0.6, rng.uniform(1.5, 3.5), 0.9), (150, 150, 156), s,
                              road.edge(side) + side * (road.sidewalk - 0.7)))
    return out


BUILDINGS = ((200, 185, 160), (150, 82, 62), (140, 140, 146), (220, 218, 210), (110, 125, 142),
             (205, 188, 125), (170, 120, 95))


def _scenery(rng, road: Road, zones) -> list[Block]:
    """Street lamps at the kerb, trees at the back of the sidewalk, buildings behind it (kept
    off the road and sidewalk, also on the inside of bends)."""
    out, lo, hi = [], road.s[0] + 5, road.s[-1] - 5
    grey = (118, 120, 124)
    for side in (-1, 1):
        edge, outer = road.edge(side), road.edge(side) + side * road.sidewalk
        s = lo + rng.uniform(0, 30)
        while s < hi:  # street lamps: pole and an arm over the road
            if _free(zones, s, side, 4.0):
                (x, y, yaw), (ax, ay, _) = road.at(s, edge + side * 0.6), road.at(s, edge)
                out += [Block(float(x), float(y), float(yaw), 0.18, 0.18, 0.0, 7.6, grey),
                        Block(float(ax), float(ay), float(yaw) + math.pi / 2, 1.5, 0.12, 7.45,
                              0.12, grey)]
            s += rng.uniform(25.0, 40.0)
        s = lo + rng.uniform(0, 20)
        while s < hi:  # trees: trunk and canopy
            if _free(zones, s, side, 5.0):
                x, y, yaw = road.at(s, outer - side * 1.0)
                c, g = rng.uniform(2.4, 3.4), (int(rng.integers(35, 70)), 100, 45)
                out += [Block(float(x), float(y), float(yaw), 0.3, 0.3, 0.0, 2.6, (90, 65, 40)),
                        Block(float(x), float(y), float(yaw), c, c, 2.2, c, g,
                              (g[0] + 20, 125, 60))]
            s += rng.uniform(12.0, 30.0)
        s, placed = lo, []
        while s < hi:  # buildings
            length, depth = rng.uniform(10.0, 28.0), rng.uniform(8.0, 15.0)
            dc = outer + side * (rng.uniform(1.0, 5.0) + depth / 2)
            x, y, yaw = road.at(s + length / 2, dc)
            u, w = np.meshgrid(np.linspace(-0.5, 0.5, 5) * length, np.linspace(-0.5, 0.5, 3)
                               * depth)  # footprint points, all beyond the sidewalk
            c, sn = math.cos(float(yaw)), math.sin(float(yaw))
            _, d = road.to_road((x + c * u - sn * w).ravel(), (y + sn * u + c * w).ravel())
            diag = math.hypot(length, depth)
            if np.all(side * d >= side * outer + 0.3) and all(
                    math.hypot(x - b.x, y - b.y) > 0.5 * (diag + math.hypot(b.l, b.w))
                    for b in placed[-4:]):
                col = BUILDINGS[rng.integers(len(BUILDINGS))]
                placed.append(Block(float(x), float(y), float(yaw), length, depth, 0.0,
                                    rng.uniform(5.0, 22.0), col, (92, 92, 95), windows=True))
            s += length + rng.uniform(2.0, 12.0)
        out += placed
    return out


def build_scenario(name: str, rng: np.random.Generator, n_key: int) -> Scenario:
    """Script `name` (one of SCENARIOS) for n_key (>= 2) key frames, with its surroundings."""
    script, cue = SCRIPTS[name]
    sc = script(rng, n_key)
    if cue is None:  # the pedestrian's side
        cue = "CAM_FRONT_LEFT" if sc.params["side"] > 0 else "CAM_FRONT_RIGHT"
    x, y, yaw = sc.road.at(sc.s[::SUB])
    actors = sc.actors + _traffic(rng, sc.road, n_key, sc.zones, sc.params, sc.s[0] - 60,
                                  sc.s[-1] + 150)
    return Scenario(name, cue, sc.road, np.stack([x, y, yaw], 1), sc.v[::SUB], actors,
                    sc.blocks + _scenery(rng, sc.road, sc.zones), sc.params)
