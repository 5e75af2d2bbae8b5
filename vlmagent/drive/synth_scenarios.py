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

import numpy as np

# the building blocks are re-exported: synth.py (KEY_DT, LANE_W, Road, Scenario) and
# synth_render.py (Actor, Block) import them from here
from vlmagent.drive.synth_road import (  # noqa: F401
    CAM_FRONT_X,
    EGO_FRONT,
    KEY_DT,
    LANE_W,
    ROAD_AHEAD,
    SUB,
    Actor,
    Block,
    Road,
    Scenario,
    Script,
    _ped,
    _t,
    _track,
    _vehicle,
    make_road,
    speed_profile,
)

SIDE_CUE_DEG = 35.0  # CAM_FRONT sees +-32 deg: a side-camera cue stays beyond this bearing

SCENARIOS: tuple[str, ...] = (
    "clear_road", "lead_vehicle_braking", "red_light_far", "green_light_far", "pedestrian_side",
    "pedestrian_side_clear", "turn_left", "turn_right", "cut_in")
# scenario -> its decoy twin: the same geometry drawn the same way, told apart only by the cue
TWINS = {"red_light_far": "green_light_far", "pedestrian_side": "pedestrian_side_clear"}


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
    # hidden_until (both twins): before the red twin's braking, speed and front image are the
    # same for red and green, so only the zoomed light tells them apart
    return Script(road, s, v, actors, blocks, [(stop_line - 25, stop_line + 14, 0)],
                  dict(v0=v0, brake_at=t_b, decel=a, stop_line=stop_line, light_s=s_l,
                       oncoming_max=stop_line - 8, hidden_until=t_b))


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
        # when the crossing twin brakes (drawn the same way for the decoy)
        t_b = t_r + (room - v0 * t_r - v0 ** 2 / (2 * a)) / v0
        if crossing:  # to the far sidewalk; the ego brakes to stop g metres short of its path
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
                              oncoming_max=s_p - 12, hidden_until=t_b))


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
