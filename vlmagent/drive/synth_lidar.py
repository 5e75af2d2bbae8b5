"""LIDAR_TOP for the synthetic nuScenes scenes (synth.py): the HDL-32E's rays cast against the
same oriented boxes and flat ground that the cameras draw (synth_render.py), written as nuScenes
.pcd.bin points (x, y, z in the sensor frame, intensity, ring)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from vlmagent.drive.synth_render import LIDAR_RANGE, Geometry, Ground, sensor_pose

if TYPE_CHECKING:
    from vlmagent.drive.synth_rig import Sensor

# 32 rings (+10.67 .. -30.67 deg) x 1084 azimuths, as the HDL-32E
N_RINGS, N_AZ = 32, 1084
_ELEV = np.radians(10.67 - 41.34 / 31 * np.arange(N_RINGS))


def lidar_scan(sensor: Sensor, ego, ground: Ground, geo: Geometry, rng: np.random.Generator):
    """Ray-cast one sweep: (N, 5) float32 x, y, z (sensor frame), intensity, ring index, as
    nuScenes .pcd.bin, and each point's owner (annotated actor index + 1, 0 otherwise)."""
    r_wl, o = sensor_pose(sensor, ego)
    phase = rng.uniform()
    step = 2 * np.pi / N_AZ
    az = step * (np.arange(N_AZ) + phase)
    ce = np.cos(_ELEV)[:, None]
    dl = np.stack([ce * np.cos(az), ce * np.sin(az),
                   np.broadcast_to(np.sin(_ELEV)[:, None], (N_RINGS, N_AZ))], -1)
    dw = dl @ r_wl.T
    t = np.where(dw[..., 2] < -1e-6, -o[2] / np.minimum(dw[..., 2], -1e-6), np.inf)
    hit = np.full(t.shape, -1)
    reach = np.linalg.norm(geo.c[:, :2] - o[:2], axis=1) - np.linalg.norm(geo.half[:, :2], axis=1)
    near = np.flatnonzero(reach < LIDAR_RANGE)
    # each box only meets the rays within its azimuth span and its rings' elevation span
    cl = (geo.corners[near] - o) @ r_wl  # (P, 8, 3) corners in the sensor frame
    a = np.arctan2(cl[..., 1], cl[..., 0])
    da = np.angle(np.exp(1j * (a - a[:, :1])))
    c0 = np.ceil((a[:, 0] + da.min(1)) / step - phase).astype(int)
    c1 = np.floor((a[:, 0] + da.max(1)) / step - phase).astype(int)
    # elevation bounds from the nearest and farthest horizontal distance to the footprint
    ob = np.einsum("pji,pj->pi", geo.rot[near], o - geo.c[near])  # sensor in the box frame
    dmin = np.hypot(*np.maximum(np.abs(ob[:, :2]) - geo.half[near, :2], 0).T)
    dmax = np.hypot(*(np.abs(ob[:, :2]) + geo.half[near, :2]).T)
    top, bot = -ob[:, 2] + geo.half[near, 2], -ob[:, 2] - geo.half[near, 2]
    el_hi = np.arctan2(top, np.where(top > 0, dmin, dmax))
    el_lo = np.arctan2(bot, np.where(bot < 0, dmin, dmax))
    r0 = np.searchsorted(-_ELEV, -el_hi)  # rings are ordered top (0) to bottom
    r1 = np.searchsorted(-_ELEV, -el_lo, side="right")
    with np.errstate(divide="ignore", invalid="ignore"):
        for p, i0, i1, j0, j1 in zip(near, c0, c1, r0, r1):
            if i1 < i0 or j1 <= j0:
                continue
            cols = np.arange(i0, i1 + 1) % N_AZ
            d = dw[j0:j1, cols] @ geo.rot[p]  # ray directions in the box frame
            ob = (o - geo.c[p]) @ geo.rot[p]
            t1, t2 = (-geo.half[p] - ob) / d, (geo.half[p] - ob) / d
            tn, tf = np.minimum(t1, t2).max(-1), np.maximum(t1, t2).min(-1)
            sub = t[j0:j1, cols]
            ok = (tf >= tn) & (tn > 0) & (tn < sub)
            if ok.any():
                sub[ok] = tn[ok]
                t[j0:j1, cols] = sub
                hh = hit[j0:j1, cols]
                hh[ok] = p
                hit[j0:j1, cols] = hh
    t = t + rng.normal(0, 0.01, t.shape)
    valid = t < LIDAR_RANGE
    pts, hp, tv = dl[valid] * t[valid][:, None], hit[valid], t[valid]
    gx = o[:2] + dw[valid][:, :2] * tv[:, None]
    lum = np.where(hp >= 0, geo.col[np.maximum(hp, 0)].mean(1),
                   ground.colour_at(gx[:, 0], gx[:, 1]).mean(1)) / 255
    intensity = np.clip((lum - 0.22) * 180, 1, 200)
    ring = np.broadcast_to(np.arange(N_RINGS)[:, None], t.shape)[valid]
    ego_pts = pts @ sensor.R.T + sensor.translation  # drop rays that hit the ego's own body
    keep = ~((ego_pts[:, 0] > -1.0) & (ego_pts[:, 0] < 3.6) & (np.abs(ego_pts[:, 1]) < 1.0)
             & (ego_pts[:, 2] < 1.9))
    owner = np.where(hp >= 0, geo.owner[np.maximum(hp, 0)], 0)
    cloud = np.column_stack([pts, intensity, ring]).astype(np.float32)
    return cloud[keep], owner[keep]
