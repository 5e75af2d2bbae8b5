"""Small synthetic driving datasets in the exact nuScenes layout.

`make_dataset(out, scenes)` writes DIR/<version>/*.json (the 13 nuScenes tables), six camera
JPEGs and one LIDAR_TOP .pcd.bin per 2 Hz key frame under DIR/samples/<channel>/, and one map
raster per log under DIR/maps/, so that `NuScenes(version, DIR)` of the real nuscenes-devkit loads
it unchanged. Scenes are scripted driving situations (synth_scenarios) whose ego trajectory is
explained by what the cameras show; `scene.description` names the scenario and the camera that
holds its decisive cue, e.g. "synthetic: red_light_far; cue: CAM_FRONT zoom".

The cameras are rendered from the same world, rig and ego poses the tables describe
(synth_render), so the devkit's own projections of annotations and lidar points land on the
rendered objects. Everything is deterministic for the same arguments: tokens are hashes of
(seed, scene, record) and every scene draws from its own seeded numpy Generator.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from vlmagent.drive import synth_render as sr
from vlmagent.drive.synth_lidar import lidar_scan

# the rig's names are re-exported: tests and readers know them from here
from vlmagent.drive.synth_rig import CAMERAS, CHANNELS, LIDAR_POS, Sensor, make_rig  # noqa: F401
from vlmagent.drive.synth_scenarios import (
    KEY_DT,
    LANE_W,
    SCENARIOS,
    TWINS,
    Road,
    Scenario,
    build_scenario,
)

TABLES = ("attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map",
          "sample", "sample_annotation", "sample_data", "scene", "sensor", "visibility")
# The nuScenes(-lidarseg) taxonomy, in its index order, plus the one class nuScenes lacks.
CATEGORIES = (
    "noise", "animal", "human.pedestrian.adult", "human.pedestrian.child",
    "human.pedestrian.construction_worker", "human.pedestrian.personal_mobility",
    "human.pedestrian.police_officer", "human.pedestrian.stroller",
    "human.pedestrian.wheelchair", "movable_object.barrier", "movable_object.debris",
    "movable_object.pushable_pullable", "movable_object.trafficcone",
    "static_object.bicycle_rack", "vehicle.bicycle", "vehicle.bus.bendy", "vehicle.bus.rigid",
    "vehicle.car", "vehicle.construction", "vehicle.emergency.ambulance",
    "vehicle.emergency.police", "vehicle.motorcycle", "vehicle.trailer", "vehicle.truck",
    "flat.driveable_surface", "flat.other", "flat.sidewalk", "flat.terrain", "static.manmade",
    "static.other", "static.vegetation", "vehicle.ego", "static_object.traffic_light")
ATTRIBUTES = {
    "vehicle.moving": "Vehicle is moving.",
    "vehicle.stopped": "Vehicle, with a driver/rider in/on it, is currently stationary.",
    "vehicle.parked": "Vehicle is stationary (usually for longer duration) with no driver.",
    "cycle.with_rider": "There is someone riding a bicycle or motorcycle.",
    "cycle.without_rider": "There is NO rider on a bicycle or motorcycle.",
    "pedestrian.sitting_lying_down": "The human is sitting or lying down.",
    "pedestrian.standing": "The human is standing.",
    "pedestrian.moving": "The human is moving.",
    "traffic_light.red": "Synthetic: the traffic light shows red to the approaching ego lane.",
    "traffic_light.yellow": "Synthetic: the traffic light shows yellow.",
    "traffic_light.green": "Synthetic: the traffic light shows green to the approaching ego lane.",
}
VISIBILITY = (("1", "v0-40"), ("2", "v40-60"), ("3", "v60-80"), ("4", "v80-100"))
ANN_RANGE, KEY_RANGE = 80.0, 150.0  # annotate objects this close (decisive ones: farther)
T0_US = 1_717_225_200_000_000  # 2024-06-01 07:00 UTC, microseconds (nuScenes timestamps)


# ---- the road from above: the cameras' ground texture and the map's semantic prior ----
GRASS, SIDEWALK, ASPHALT = sr.GRASS, (172, 170, 164), (78, 78, 82)
WHITE, YELLOW = (235, 235, 232), (222, 180, 40)


def band(road: Road, d0: float, d1: float, s0: float | None = None,
         s1: float | None = None) -> np.ndarray:
    """Outline (N, 2) of the strip between lateral offsets d0 and d1 (local frame)."""
    s = road.s[(road.s >= (road.s[0] if s0 is None else s0))
               & (road.s <= (road.s[-1] if s1 is None else s1))]
    x0, y0, _ = road.at(s, d0)
    x1, y1, _ = road.at(s[::-1], d1)
    return np.stack([np.concatenate([x0, x1]), np.concatenate([y0, y1])], 1)


def _markings(road: Road):
    """(polyline or polygon, colour, width m) of the road paint; width 0 = filled polygon."""
    lines = [(band(road, -LANE_W / 2, -LANE_W / 2)[: len(road.s)], WHITE, 0.15),
             (band(road, road.left_edge - 0.3, road.left_edge)[: len(road.s)], WHITE, 0.15)]
    for d in (road.centre_d - 0.12, road.centre_d + 0.12):
        lines.append((band(road, d, d)[: len(road.s)], YELLOW, 0.12))
    dashed = [LANE_W * i - LANE_W / 2 for i in range(1, road.n_same)]
    dashed += [road.centre_d + LANE_W * i for i in range(1, road.n_opp)]
    for d in dashed:
        for s in np.arange(road.s[0], road.s[-1] - 3, 9.0):
            x, y, _ = road.at(np.arange(s, s + 3.01, 0.5), d)
            lines.append((np.stack([x, y], 1), WHITE, 0.15))
    if road.stop_s is not None:
        st = road.stop_s
        lines.append((band(road, -LANE_W / 2, road.centre_d, st, st + 0.5), WHITE, 0))
        lines.append((band(road, road.centre_d, road.left_edge, st + 6.0, st + 6.5), WHITE, 0))
        for d in np.arange(road.right_edge + 0.4, road.left_edge - 0.4, 1.0):
            lines.append((band(road, d, d + 0.5, st + 1.5, st + 5.0), WHITE, 0))
    return lines


def paint_ground(road: Road, rng: np.random.Generator, res: float = 0.1) -> sr.Ground:
    """The cameras' ground texture: grass, sidewalks, kerbs, asphalt and paint from above at
    `res` m per pixel (local frame), with a little grain so the road surface has texture."""
    walk_r = band(road, road.right_edge - road.sidewalk, road.right_edge)
    walk_l = band(road, road.left_edge, road.left_edge + road.sidewalk)
    surface = band(road, road.right_edge, road.left_edge)
    pts = np.concatenate([walk_r, walk_l])
    x0, y0 = pts.min(0) - 60
    x1, y1 = pts.max(0) + 60
    g = sr.Ground(np.empty((int((y1 - y0) / res) + 1, int((x1 - x0) / res) + 1, 3), np.uint8),
                  res, float(x0), float(y1))
    g.img[:] = sr.GRASS

    def px(p: np.ndarray) -> np.ndarray:  # local metres -> raster pixels, 3 fraction bits
        return np.round(np.stack([p[:, 0] - x0, y1 - p[:, 1]], 1) / res * 8).astype(np.int32)

    cv2.fillPoly(g.img, [px(walk_r), px(walk_l)], SIDEWALK, cv2.LINE_AA, 3)
    cv2.fillPoly(g.img, [px(surface)], ASPHALT, cv2.LINE_AA, 3)
    for d in (road.right_edge, road.left_edge):  # kerbs
        cv2.polylines(g.img, [px(band(road, d, d)[: len(road.s)])], False, (120, 120, 118),
                      max(1, round(0.25 / res)), cv2.LINE_AA, 3)
    for line, col, width in _markings(road):
        if width:
            cv2.polylines(g.img, [px(line)], False, col, max(1, round(width / res)),
                          cv2.LINE_AA, 3)
        else:
            cv2.fillPoly(g.img, [px(line)], col, cv2.LINE_AA, 3)
    tile = rng.integers(0, 15, (512, 512, 1)).astype(np.uint8)  # grain, +-7 (saturating)
    h, w = g.img.shape[:2]
    noise = np.tile(tile, (h // 512 + 1, w // 512 + 1, 3))[:h, :w]
    g.img = cv2.subtract(cv2.add(g.img, noise), np.full(3, 7.0))
    return g


def map_mask(road: Road, to_global, s0: float, s1: float, res: float = 0.1,
             margin: float = 30.0) -> np.ndarray:
    """The nuScenes semantic prior of the stretch s0..s1: 255 on road and sidewalks, in the
    global frame at 0.1 m per pixel with row = height - y / res (devkit MapMask)."""
    poly = to_global(band(road, road.right_edge - road.sidewalk,
                          road.left_edge + road.sidewalk, s0, s1))
    w, h = (np.ceil((poly.max(0) + margin) / res)).astype(int)
    mask = np.zeros((h, w), np.uint8)
    pix = np.stack([poly[:, 0] / res, h - poly[:, 1] / res], 1)
    cv2.fillPoly(mask, [np.round(pix * 8).astype(np.int32)], 255, cv2.LINE_8, 3)
    return mask


# ---- tables ----

def token(*parts) -> str:
    """A nuScenes-style 32-hex token, a hash of its parts (deterministic)."""
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def yaw_quat(yaw: float) -> list[float]:
    """(w, x, y, z) of a rotation by yaw about z."""
    return [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]


def plan_scenes(scenes: int, seed: int = 0, seconds: float = 20.0,
                scenarios: Sequence[str] | None = None, twins: bool = False) -> list[Scenario]:
    """The scripted scenes make_dataset would write, instance tokens included. Scenario names
    come in shuffled rounds of all `scenarios`, so any len(scenarios) consecutive scenes hold
    each once; each scene draws from its own Generator (adding scenes changes no earlier one).
    `twins`: a scenario with a decoy twin (TWINS) is followed by its twin drawn from the same
    Generators: the same street, rig, scenery and traffic, only the cue differs (a red and a
    green light). A model trained on such pairs cannot tell them apart by the background."""
    names = tuple(scenarios) if scenarios else SCENARIOS
    if unknown := set(names) - set(SCENARIOS):
        raise ValueError(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    pairs = {a: b for a, b in TWINS.items() if twins and a in names and b in names}
    units = [(n, pairs[n]) if n in pairs else (n,) for n in names if n not in pairs.values()]
    rng, order = np.random.default_rng([seed, 7919]), []
    while len(order) < scenes:  # without twins: the rounds of names as they always were
        for u in rng.permutation(len(units)):
            first = len(order)  # (name, the scene index it draws from, whether paired)
            order += [(name, first, len(units[u]) == 2) for name in units[u]]
    n_key = max(2, int(round(seconds / KEY_DT)))
    out = []
    for i, (name, draw, paired) in enumerate(order[:scenes]):
        sc = build_scenario(name, np.random.default_rng([seed, draw]), n_key)
        if paired:
            sc.draw = draw
        for j, a in enumerate(sc.actors):
            a.token = token(seed, i, "instance", j)
        out.append(sc)
    return out


def _static_tables() -> dict[str, list]:
    return {
        "category": [{"token": token("category", n), "name": n, "index": i,
                      "description": "Synthetic traffic light housing (not a nuScenes class)."
                      if n.endswith("traffic_light") else f"nuScenes class {n}."}
                     for i, n in enumerate(CATEGORIES)],
        "attribute": [{"token": token("attribute", n), "name": n, "description": d}
                      for n, d in ATTRIBUTES.items()],
        "visibility": [{"token": t, "level": lv, "description":
                        f"visibility of whole object is between {lv[1:].replace('-', ' and ')}%"}
                       for t, lv in VISIBILITY],
        "sensor": [{"token": token("sensor", c), "channel": c,
                    "modality": "lidar" if c.startswith("LIDAR") else "camera"}
                   for c in CHANNELS],
    }


def _link(records: list[dict]) -> None:
    """prev/next tokens along a time-ordered chain."""
    for a, b in zip(records, records[1:]):
        a["next"], b["prev"] = b["token"], a["token"]


def _start_scene(root: Path, tables: dict, sc: Scenario, i: int, seed: int,
                 rng: np.random.Generator, rig: list[Sensor]):
    """log, map and calibrated_sensor records of scene i; returns (to_global, theta, t0,
    logfile). The global frame is the local one turned by theta and shifted so that the map
    raster, which must start at global (0, 0), stays small."""
    tok = lambda *p: token(seed, i, *p)  # noqa: E731
    road = sc.road
    theta = rng.uniform(0, 2 * math.pi)
    r2 = sr.rot_z(theta)[:2, :2]
    ego_s, _ = road.to_road(sc.ego[:, 0], sc.ego[:, 1])
    s0, s1 = ego_s.min() - 60, ego_s.max() + 150
    rim = band(road, road.right_edge - road.sidewalk, road.left_edge + road.sidewalk, s0, s1)
    shift = 30.0 + rng.uniform(0, 40, 2) - (rim @ r2.T).min(0)
    to_global = lambda p: np.asarray(p) @ r2.T + shift  # noqa: E731
    t0 = T0_US + (seed % 1000) * 86_400_000_000 + i * 3_600_000_000
    when = datetime.fromtimestamp(t0 / 1e6, UTC)
    logfile = f"n900-{when:%Y-%m-%d-%H-%M-%S}+0000"
    tables["log"].append({"token": tok("log"), "logfile": logfile, "vehicle": "n900",
                          "date_captured": f"{when:%Y-%m-%d}", "location": "synth-city"})
    Image.fromarray(map_mask(road, to_global, s0, s1)).save(root / f"maps/{tok('map')}.png")
    tables["map"].append({"token": tok("map"), "log_tokens": [tok("log")],
                          "category": "semantic_prior", "filename": f"maps/{tok('map')}.png"})
    for s in rig:
        tables["calibrated_sensor"].append({
            "token": tok("calibrated_sensor", s.channel),
            "sensor_token": token("sensor", s.channel),
            "translation": s.translation.tolist(), "rotation": s.rotation,
            "camera_intrinsic": s.K.tolist() if s.K is not None else []})
    return to_global, theta, t0, logfile


def _write_scene(root: Path, sc: Scenario, i: int, seed: int, size: tuple[int, int],
                 tick=None) -> dict[str, list]:
    """All files of scene i; returns its table records. tick() is called per key frame."""
    tables = {name: [] for name in TABLES}
    with ThreadPoolExecutor(1) as pool:  # JPEGs encode while the next frame renders
        _scene(root, tables, sc, i, seed, size, tick or (lambda: None), pool)
    return tables


def _scene(root: Path, tables: dict, sc: Scenario, i: int, seed: int, size: tuple[int, int],
           tick, pool: ThreadPoolExecutor) -> None:
    tok = lambda *p: token(seed, i, *p)  # noqa: E731
    rng = np.random.default_rng([seed, i if sc.draw is None else sc.draw, 1])
    rig = make_rig(size, rng)
    to_global, theta, t0, logfile = _start_scene(root, tables, sc, i, seed, rng, rig)
    ground = paint_ground(sc.road, rng)
    views = {s.channel: sr.make_view(s, size) for s in rig if s.modality == "camera"}
    static = sr.Geometry()
    sr.add_blocks(static, sc.blocks)
    samples, chains, anns, writes = [], {c: [] for c in CHANNELS}, {}, []
    for k, ego in enumerate(sc.ego):
        ts = t0 + k * int(KEY_DT * 1e6)
        samples.append({"token": tok("sample", k), "timestamp": ts, "prev": "", "next": "",
                        "scene_token": tok("scene")})
        xy = to_global(ego[:2])
        pose = {"timestamp": ts, "rotation": yaw_quat(float(ego[2]) + theta),
                "translation": [float(xy[0]), float(xy[1]), 0.0]}
        geo = sr.Geometry(static)
        for j, a in enumerate(sc.actors):
            sr.add_actor(geo, a, k, j + 1)
        geo.finish()
        seen, full = Counter(), Counter()  # per actor: pixels shown / unoccluded, all cameras
        for s in rig:
            # nuScenes gives every sample_data its own ego_pose, with the same token
            sd = {"token": tok("sample_data", s.channel, k), "sample_token": tok("sample", k),
                  "ego_pose_token": tok("sample_data", s.channel, k),
                  "calibrated_sensor_token": tok("calibrated_sensor", s.channel),
                  "timestamp": ts, "is_key_frame": True, "prev": "", "next": ""}
            name = f"samples/{s.channel}/{logfile}__{s.channel}__{ts}"
            if s.modality == "camera":
                img, vis, area = sr.render(views[s.channel], ego, ground, geo)
                seen.update(vis)
                full.update(area)
                # 4:4:4 chroma: a lamp two pixels wide keeps its colour
                writes.append(pool.submit(Image.fromarray(img).save, root / f"{name}.jpg",
                                          quality=90, subsampling=0))
                sd.update(fileformat="jpg", width=size[0], height=size[1], filename=f"{name}.jpg")
            else:
                cloud, owner = lidar_scan(s, ego, ground, geo, rng)
                cloud.tofile(root / f"{name}.pcd.bin")
                lidar_pts = np.bincount(owner, minlength=len(sc.actors) + 1)
                sd.update(fileformat="pcd", width=0, height=0, filename=f"{name}.pcd.bin")
            chains[s.channel].append(sd)
            tables["ego_pose"].append({"token": sd["token"], **pose})
        for j, a in enumerate(sc.actors):
            if math.hypot(a.x[k] - ego[0], a.y[k] - ego[1]) > (KEY_RANGE if a.key else ANN_RANGE):
                continue
            ratio = seen[j + 1] / full[j + 1] if full[j + 1] else 0.0
            xy = to_global([a.x[k], a.y[k]])
            anns.setdefault(a.token, []).append({
                "token": tok("sample_annotation", j, k), "sample_token": tok("sample", k),
                "instance_token": a.token,
                "visibility_token": str(1 + sum(ratio >= b for b in (0.4, 0.6, 0.8))),
                "attribute_tokens": [token("attribute", n) for n in a.attrs[k]],
                "translation": [float(xy[0]), float(xy[1]), a.z + a.wlh[2] / 2],
                "size": list(a.wlh), "rotation": yaw_quat(float(a.yaw[k]) + theta),
                "prev": "", "next": "", "num_lidar_pts": int(lidar_pts[j + 1]),
                "num_radar_pts": 0})
        tick()
        while len(writes) > 12:  # bound the images waiting for the encoder
            writes.pop(0).result()
    for write in writes:
        write.result()
    for chain in [samples, *chains.values(), *anns.values()]:
        _link(chain)
    tables["sample"] += samples
    tables["sample_data"] += [sd for chain in chains.values() for sd in chain]
    category = {a.token: a.category for a in sc.actors}
    for inst, chain in anns.items():
        tables["sample_annotation"] += chain
        tables["instance"].append({
            "token": inst, "category_token": token("category", category[inst]),
            "nbr_annotations": len(chain), "first_annotation_token": chain[0]["token"],
            "last_annotation_token": chain[-1]["token"]})
    tables["scene"].append({
        "token": tok("scene"), "log_token": tok("log"), "nbr_samples": len(samples),
        "first_sample_token": samples[0]["token"], "last_sample_token": samples[-1]["token"],
        "name": f"scene-{i + 1:04d}", "description": sc.description})


def make_dataset(out: str | Path, scenes: int, seed: int = 0, version: str = "v1.0-synth",
                 size: tuple[int, int] = (640, 360), seconds: float = 20.0,
                 progress: bool = False, scenarios: Sequence[str] | None = None,
                 workers: int = 1, twins: bool = False) -> dict:
    """Write `scenes` synthetic scenes of `seconds` each (2 Hz key frames) under `out` in the
    nuScenes layout. `scenarios` restricts the scenario names (default: all of SCENARIOS).
    workers > 1 renders scenes in that many spawned processes (0: one per CPU), with the same
    output; a script calling it so needs the usual `if __name__ == "__main__":` guard.
    Returns {"version", "dataroot", "scenes", "samples", "scenarios": {name: count}}."""
    if scenes < 1:
        raise ValueError(f"scenes must be at least 1, got {scenes}")
    root = Path(out)
    for sub in [version, "maps"] + [f"samples/{c}" for c in CHANNELS]:
        (root / sub).mkdir(parents=True, exist_ok=True)
    size = (int(size[0]), int(size[1]))
    plans = plan_scenes(scenes, seed, seconds, scenarios, twins)
    tables = {name: [] for name in TABLES}
    tables.update(_static_tables())
    jobs = [(root, sc, i, seed, size) for i, sc in enumerate(plans)]
    workers = min(scenes, workers or os.cpu_count() or 1)
    with tqdm(total=sum(len(sc.ego) for sc in plans), disable=not progress, unit="frame",
              desc="synthetic scenes") as bar:
        if workers <= 1:
            parts = [_write_scene(*job, tick=lambda: bar.update(1)) for job in jobs]
        else:  # spawn: a forked child could inherit locked threads (OpenCV, torch)
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                parts = []
                for sc, part in zip(plans, pool.map(_write_scene, *zip(*jobs))):
                    parts.append(part)
                    bar.update(len(sc.ego))
    for part in parts:  # in scene order, however they were made
        for name, rows in part.items():
            tables[name] += rows
    for name in TABLES:
        with open(root / version / f"{name}.json", "w") as f:
            json.dump(tables[name], f, indent=0)
    return {"version": version, "dataroot": str(root), "scenes": scenes,
            "samples": len(tables["sample"]),
            "scenarios": dict(Counter(sc.name for sc in plans))}
