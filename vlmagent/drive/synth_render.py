"""Camera rendering and lidar ray casting for the synthetic nuScenes scenes (synth.py).

Conventions (those of nuScenes and its devkit):
- ego frame: x forward, y left, z up; origin on the ground under the rear axle.
- camera frame: x right, y down, z forward; a point projects to u = fx X/Z + cx, v = fy Y/Z + cy
  with pixel centres at integer coordinates (OpenCV, devkit `view_points`).
- a sensor's R rotates sensor coordinates into the ego frame (calibrated_sensor.rotation).
Everything here works in the scene's LOCAL frame (synth_scenarios); synth.py moves the poses it
writes into the global frame, which changes no projection. The world is flat (ground z = 0) and
the ego only yaws, so a camera's sky and ground-fog backdrop is the same in every frame.

Images are drawn with a painter's algorithm: the ground is a top-down colour raster warped into
the image by the ground-plane homography, then box faces (backface-culled, clipped at the near
plane) are filled far to near with PIL, each face's flat decals (lamps, windows) right after it.
The lidar (synth_lidar.py) casts the HDL-32E's rays against the same boxes and the ground.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image, ImageDraw

from vlmagent.drive.synth_scenarios import Actor, Block

if TYPE_CHECKING:
    from vlmagent.drive.synth_rig import Sensor

NEAR, RANGE, LIDAR_RANGE, FOG_M = 0.3, 250.0, 100.0, 420.0  # metres
SUN = np.array([0.45, 0.3, 0.84]) / np.linalg.norm([0.45, 0.3, 0.84])
HAZE, SKY = np.array([206.0, 214, 224]), np.array([92.0, 142, 206])
GRASS = (96, 112, 72)  # the ground beyond the painted raster
LAMPS = {"red": (255, 40, 30), "yellow": (255, 190, 20), "green": (40, 235, 110)}
LAMPS_OFF = ((70, 30, 28), (72, 62, 26), (24, 62, 38))  # unlit red, yellow, green lamps
LAMP_R, LAMP_DZ = 0.15, 0.33  # lamp radius; red / green lamp above / below the housing centre


def rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0], [0, 0, 1]])


# ---- world geometry: every solid is an oriented box (yaw only), flat decals sit on faces ----
# Box corners are the sign patterns below (x = length, y = width, z = height); face f lies on
# axis f // 2 (positive side for even f), its quad listed around the face.
_SIGNS = np.array([[sx, sy, sz] for sx in (1, -1) for sy in (1, -1) for sz in (1, -1)], float)
_FACES = np.array([[0, 1, 3, 2], [4, 5, 7, 6], [0, 4, 5, 1], [2, 6, 7, 3], [0, 2, 6, 4],
                   [1, 3, 7, 5]])
_NORMALS = np.array([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])
_COS12, _SIN12 = np.cos(np.arange(12) * np.pi / 6), np.sin(np.arange(12) * np.pi / 6)
_RECT_U, _RECT_V = np.array([1.0, 1, -1, -1]), np.array([1.0, -1, -1, 1])


class Geometry:
    """Boxes (centre, half size, yaw, side/top colour, owner = annotated actor index + 1, or 0
    for scenery), decals on their faces, and ground shadows."""

    def __init__(self, base: Geometry | None = None):
        """A new geometry, starting with a copy of `base`'s boxes (the static scenery)."""
        self.rows = list(base.rows) if base else []
        self.decals = list(base.decals) if base else []
        self.shadows = list(base.shadows) if base else []

    def box(self, x, y, yaw, centre, half, col, top=None, owner=0) -> int:
        c, s = math.cos(yaw), math.sin(yaw)
        self.rows.append((x + c * centre[0] - s * centre[1], y + s * centre[0] + c * centre[1],
                          centre[2], *half, yaw, *col, *(top or col), owner))
        return len(self.rows) - 1

    def decal(self, i: int, face: int, ob: float, oc: float, hb: float, hc: float, col,
              disc=False, glow=False) -> None:
        """A rectangle / disc (12-gon) on face `face` of box i, at offsets (ob, oc) along the
        face's other two axes with half extents (hb, hc); stored as its local-frame polygon."""
        x, y, z, *half = self.rows[i][:6]
        yaw = self.rows[i][6]
        a, sgn = face // 2, 1 - 2 * (face % 2)
        e = np.eye(3)
        centre = e[a] * sgn * (half[a] + 0.005) + e[(a + 1) % 3] * ob + e[(a + 2) % 3] * oc
        cu, cv = (_COS12, _SIN12) if disc else (_RECT_U, _RECT_V)
        local = centre + cu[:, None] * e[(a + 1) % 3] * hb + cv[:, None] * e[(a + 2) % 3] * hc
        self.decals.append((i, face, np.array([x, y, z]) + local @ rot_z(yaw).T,
                            np.array(col, float), glow))

    def finish(self) -> Geometry:
        r = np.array(self.rows, float).reshape(-1, 14)
        self.c, self.half, self.yaw = r[:, 0:3], r[:, 3:6], r[:, 6]
        self.col, self.top, self.owner = r[:, 7:10], r[:, 10:13], r[:, 13].astype(int)
        self.rot = np.zeros((len(r), 3, 3))
        self.rot[:, 0, 0] = self.rot[:, 1, 1] = np.cos(self.yaw)
        self.rot[:, 1, 0] = np.sin(self.yaw)
        self.rot[:, 0, 1] = -self.rot[:, 1, 0]
        self.rot[:, 2, 2] = 1.0
        self.corners = self.c[:, None] + np.einsum("pij,pkj->pki", self.rot,
                                                   _SIGNS[None] * self.half[:, None])
        self.shadow_quads = np.array(self.shadows, float).reshape(-1, 4, 3)
        # decals as arrays; rectangles padded to 12 vertices by repeating their last one
        self.d_box = np.array([d[0] for d in self.decals], int)
        self.d_face = np.array([d[1] for d in self.decals], int)
        self.d_pts = np.array([np.concatenate([d[2], np.repeat(d[2][-1:], 12 - len(d[2]), 0)])
                               for d in self.decals]).reshape(-1, 12, 3)
        self.d_col = np.array([d[3] for d in self.decals]).reshape(-1, 3)
        self.d_glow = np.array([d[4] for d in self.decals], bool)
        return self


def add_blocks(g: Geometry, blocks: list[Block]) -> None:
    for b in blocks:
        i = g.box(b.x, b.y, b.yaw, (0, 0, b.z0 + b.h / 2), (b.l / 2, b.w / 2, b.h / 2),
                  b.colour, b.top)
        for face in (2, 3) if b.windows else ():
            for floor in range(int((b.h - 1.0) // 3.2)):
                g.decal(i, face, -b.h / 2 + 1.9 + 3.2 * floor, 0, 0.65, b.l / 2 - 0.8,
                        (58, 68, 84))


def add_actor(g: Geometry, a: Actor, k: int, owner: int) -> None:
    """Draw actor `a` at key frame k as a few boxes inside its annotation box."""
    w, length, h = a.wlh
    x, y, yaw = float(a.x[k]), float(a.y[k]), float(a.yaw[k])
    box = lambda c, hs, col, top=None: g.box(x, y, yaw, c, hs, col, top, owner)  # noqa: E731
    if a.kind in ("car", "truck", "ped", "cone"):
        cy, sy = math.cos(yaw), math.sin(yaw)
        hl, hw = length / 2 * 1.06, w / 2 * 1.06
        g.shadows.append([(x + cy * u - sy * v, y + sy * u + cy * v, 0.01)
                          for u, v in ((hl, hw), (hl, -hw), (-hl, -hw), (-hl, hw))])
    tail = (255, 35, 30) if a.lamp[k] == "brake" else (125, 24, 24)
    if a.kind == "car":
        for sx in (1, -1):
            box((sx * (length / 2 - 0.85), 0, 0.33), (0.33, w / 2 - 0.04, 0.33), (22, 22, 24))
        zb = 0.68 * h  # body up to here (the box centre, seen from a camera, lands on it)
        body = box((0, 0, (0.3 + zb) / 2), (length / 2, w / 2, (zb - 0.3) / 2), a.colour)
        box((-0.06 * length, 0, (zb + h) / 2), (0.26 * length, 0.43 * w, (h - zb) / 2),
            (48, 58, 72), a.colour)
        for sy_ in (1, -1):
            g.decal(body, 1, sy_ * (w / 2 - 0.2), (zb - 0.3) / 2 - 0.12, 0.14, 0.07, tail,
                    glow=a.lamp[k] == "brake")
            g.decal(body, 0, sy_ * (w / 2 - 0.2), (zb - 0.3) / 2 - 0.12, 0.14, 0.07,
                    (232, 232, 212))
    elif a.kind == "truck":
        for sx in (0.38, -0.15, -0.38):
            box((sx * length, 0, 0.4), (0.4, w / 2 - 0.05, 0.4), (22, 22, 24))
        cab = box((length / 2 - 1.1, 0, (0.45 + 0.85 * h) / 2), (1.1, w / 2, (0.85 * h - 0.45) / 2),
                  a.colour2)
        g.decal(cab, 0, 0, (0.85 * h - 0.45) / 2 - 0.55, w / 2 - 0.15, 0.4, (48, 58, 72))
        cargo = box((-1.2, 0, (0.55 + h) / 2), ((length - 2.4) / 2, w / 2, (h - 0.55) / 2),
                    a.colour)
        for sy_ in (1, -1):
            g.decal(cargo, 1, sy_ * (w / 2 - 0.2), 0.95 - (0.55 + h) / 2, 0.15, 0.08, tail,
                    glow=a.lamp[k] == "brake")
    elif a.kind == "ped":
        box((0, 0, 0.235 * h), (0.12, 0.17, 0.235 * h), a.colour)
        box((0, 0, 0.65 * h), (0.13, 0.23, 0.18 * h), a.colour2)
        head = box((0, 0, 0.915 * h), (0.1, 0.09, 0.085 * h), (40, 30, 25))
        g.decal(head, 0, 0, -0.01, 0.065, 0.06, (206, 160, 128))
    elif a.kind == "cone":
        box((0, 0, 0.02), (0.2, 0.2, 0.02), (40, 40, 40))
        box((0, 0, 0.36), (0.1, 0.1, 0.32), a.colour)
    elif a.kind == "rack":
        for sx in (1, -1):
            box((sx * (length / 2 - 0.03), 0, 0.45), (0.03, w / 2, 0.45), a.colour)
        box((0, 0, 0.87), (length / 2, 0.03, 0.03), a.colour)
    elif a.kind == "light":  # the housing's +x face, with the lamps, faces the approaching ego
        i = box((0, 0, a.z + h / 2), (length / 2, w / 2, h / 2), a.colour)
        for j, oc in enumerate((LAMP_DZ, 0.0, -LAMP_DZ)):
            lit = a.lamp[k] == ("red", "yellow", "green")[j]
            g.decal(i, 0, 0, oc, LAMP_R, LAMP_R, LAMPS[a.lamp[k]] if lit else LAMPS_OFF[j],
                    disc=True, glow=lit)


# ---- ground: a top-down colour raster of the local frame (also gives lidar intensities) ----

@dataclass
class Ground:
    """The road painted from above (synth.paint_ground), warped into every camera."""
    img: np.ndarray  # (H, W, 3) uint8; column = (x - x0) / res, row = (y1 - y) / res
    res: float
    x0: float
    y1: float

    @property
    def B(self) -> np.ndarray:
        """Raster pixel (col, row, 1) -> local (x, y, 1)."""
        return np.array([[self.res, 0, self.x0], [0, -self.res, self.y1], [0, 0, 1]])

    def colour_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        c = np.clip(np.round((x - self.x0) / self.res).astype(int), 0, self.img.shape[1] - 1)
        r = np.clip(np.round((self.y1 - y) / self.res).astype(int), 0, self.img.shape[0] - 1)
        return self.img[r, c]


# ---- cameras ----

@dataclass
class View:
    """A camera with its backdrop for the scene: sky gradient and ground fog weights."""
    sensor: Sensor
    size: tuple[int, int]
    wg: np.ndarray  # (H, W, 3) uint8 weight (/255) of the warped ground colour
    bg: np.ndarray  # (H, W, 3) uint8 sky, or haze over far ground
    row0: int  # first image row that shows any ground


def make_view(sensor: Sensor, size: tuple[int, int]) -> View:
    w, h = size
    m = sensor.R @ np.linalg.inv(sensor.K)  # pixel (u, v, 1) -> ray in the ego frame
    u, v = np.arange(w, dtype=np.float32)[None], np.arange(h, dtype=np.float32)[:, None]
    ray = [m[i, 0] * u + m[i, 1] * v + m[i, 2] for i in range(3)]
    dz = ray[2] / np.sqrt(ray[0] ** 2 + ray[1] ** 2 + ray[2] ** 2)  # sine of the elevation
    ground = (dz < -1e-6)[..., None]
    fog = (1 - np.exp(-sensor.translation[2] / np.maximum(-dz, 1e-6) / FOG_M))[..., None]
    sky = HAZE + (SKY - HAZE) * np.clip(dz / 0.45, 0, 1)[..., None] ** 0.6
    bg = np.where(ground, fog * HAZE, sky)
    wg = np.broadcast_to((1 - fog) * ground * 255, (h, w, 3))
    wg = np.round(wg).astype(np.uint8)
    rows = np.flatnonzero(wg[:, :, 0].any(1))
    return View(sensor, size, wg, np.round(bg).astype(np.uint8), int(rows[0]) if len(rows) else h)


def sensor_pose(sensor: Sensor, ego) -> tuple[np.ndarray, np.ndarray]:
    """(sensor -> local rotation, sensor position) for the ego pose (x, y, yaw)."""
    rz = rot_z(float(ego[2]))
    return rz @ sensor.R, np.array([ego[0], ego[1], 0.0]) + rz @ sensor.translation


def _clip_project(p: np.ndarray, k: np.ndarray) -> list[float]:
    """Camera-frame polygon -> flat PIL vertex list (pixel centres at integers + 0.5),
    clipped at the near plane (Sutherland-Hodgman against z = NEAR)."""
    if (p[:, 2] < NEAR).any():
        out = []
        for a, b in zip(p, np.roll(p, -1, 0)):
            if a[2] >= NEAR:
                out.append(a)
            if (a[2] >= NEAR) != (b[2] >= NEAR):
                out.append(a + (NEAR - a[2]) / (b[2] - a[2]) * (b - a))
        if len(out) < 3:
            return []
        p = np.array(out)
    q = p @ k.T
    return (q[:, :2] / q[:, 2:] + 0.5).ravel().tolist()


def _polygons(geo: Geometry, r_cw, tc, pos, k, size) -> list[tuple]:
    """(depth key, PIL vertices, colour, owner, is_decal) of every visible face and decal.
    Faces get flat sun shading and distance fog; lit lamps (glow) are not shaded."""
    w, h = size
    if not len(geo.c):
        return []
    cam = geo.corners @ r_cw.T + tc
    z = cam[..., 2]
    zc = np.maximum(z, NEAR)
    u, v = k[0, 0] * cam[..., 0] / zc + k[0, 2], k[1, 1] * cam[..., 1] / zc + k[1, 2]
    out = (z > NEAR).all(1) & ((u.max(1) < 0) | (u.min(1) > w) | (v.max(1) < 0)
                               | (v.min(1) > h))
    near = np.linalg.norm(geo.c[:, :2] - pos[:2], axis=1) - np.linalg.norm(geo.half, axis=1)
    keep = np.flatnonzero((near < RANGE) & (z > NEAR).any(1) & ~out)
    if not len(keep):
        return []
    fc = cam[keep][:, _FACES].mean(2)  # (P, 6, 3) face centres, camera frame
    nw = np.einsum("pij,fj->pfi", geo.rot[keep], _NORMALS)  # outward normals, local frame
    jj, ff = np.nonzero(np.einsum("pfi,pfi->pf", nw @ r_cw.T, fc) < 0)  # facing the camera
    pp = keep[jj]
    dist = np.linalg.norm(fc[jj, ff], axis=1)
    light = np.where(ff == 5, 0.45, 0.6 + 0.4 * np.clip(nw[jj, ff] @ SUN, 0, None))
    fog = (1 - np.exp(-dist / FOG_M))[:, None]
    col = np.where((ff == 4)[:, None], geo.top[pp], geo.col[pp])
    rgb = np.clip(col * light[:, None] * (1 - fog) + HAZE * fog, 0, 255).astype(int).tolist()
    quads = cam[pp[:, None], _FACES[ff]]  # (N, 4, 3)
    front = (quads[..., 2] >= NEAR).all(1)
    q = quads @ k.T
    uv = (q[..., :2] / np.maximum(q[..., 2:], 1e-9) + 0.5).reshape(len(q), 8).tolist()
    owners = geo.owner[pp].tolist()
    items = []
    key = np.full((len(geo.c), 6), np.nan)  # depth key of each drawn face, for its decals
    for n, (p, f) in enumerate(zip(pp.tolist(), ff.tolist())):
        pts = uv[n] if front[n] else _clip_project(quads[n], k)
        if pts:
            key[p, f] = dist[n]
            items.append((dist[n], pts, tuple(rgb[n]), owners[n], False))
    lt = np.full((len(geo.c), 6), 1.0)
    lt[pp, ff] = light
    sel = np.flatnonzero(~np.isnan(key[geo.d_box, geo.d_face])) if len(geo.d_box) else []
    if len(sel):
        d = key[geo.d_box[sel], geo.d_face[sel]]
        glow = geo.d_glow[sel]
        fog = ((1 - np.exp(-d / FOG_M)) * np.where(glow, 0.5, 1.0))[:, None]
        shade = np.where(glow, 1.0, lt[geo.d_box[sel], geo.d_face[sel]])[:, None]
        rgb = np.clip(geo.d_col[sel] * shade * (1 - fog) + HAZE * fog, 0, 255).astype(int)
        cam = geo.d_pts[sel] @ r_cw.T + tc
        front = (cam[..., 2] >= NEAR).all(1)
        q = cam @ k.T
        uv = q[..., :2] / np.maximum(q[..., 2:], 1e-9) + 0.5
        span = (uv.max(1) - uv.min(1)).max(1)
        owners = geo.owner[geo.d_box[sel]].tolist()
        for n in range(len(sel)):
            if not front[n]:
                pts = _clip_project(cam[n], k)
            elif span[n] < 1:  # under a pixel: one pixel at its centre
                pts = uv[n].mean(0).tolist()
            else:
                pts = uv[n].ravel().tolist()
            if pts:
                items.append((d[n] - 1e-3, pts, tuple(rgb[n].tolist()), owners[n], True))
    return items


def _area(polys: list[np.ndarray], size: tuple[int, int]) -> int:
    """Pixels an owner's faces would cover in the image if nothing occluded them."""
    allp = np.concatenate(polys)
    x0, y0 = np.maximum(np.floor(allp.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(allp.max(0)).astype(int) + 1, size)
    if x1 <= x0 or y1 <= y0:
        return 0
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    for p in polys:  # one call each: fillPoly treats several contours as one even-odd shape
        cv2.fillPoly(mask, [np.round((p - (x0, y0)) * 4).astype(np.int32)], 1, cv2.LINE_8, 2)
    return int(cv2.countNonZero(mask))


def render(view: View, ego, ground: Ground, geo: Geometry):
    """RGB image (H, W, 3) uint8 of the scene from this camera at ego pose (x, y, yaw), and
    per owner the pixels it shows and the pixels it would show unoccluded."""
    s, (w, h) = view.sensor, view.size
    r_wc, pos = sensor_pose(s, ego)
    r_cw = r_wc.T
    tc = -r_cw @ pos
    # ground: the raster -> image homography K [r1 r2 t] B, warped into the rows below the sky
    r0 = view.row0
    hom = np.array([[1.0, 0, 0], [0, 1, -r0], [0, 0, 1]]) @ s.K \
        @ np.column_stack([r_cw[:, 0], r_cw[:, 1], tc]) @ ground.B
    rgb = np.empty_like(view.bg)
    rgb[:r0] = view.bg[:r0]
    if r0 < h:
        warp = cv2.warpPerspective(ground.img, hom, (w, h - r0), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=GRASS)
        rgb[r0:] = cv2.add(cv2.multiply(warp, view.wg[r0:], scale=1 / 255), view.bg[r0:])
    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    if len(geo.shadow_quads):
        cam = geo.shadow_quads @ r_cw.T + tc
        dist = np.linalg.norm(cam.mean(1), axis=1)
        for j in np.argsort(-dist):
            if dist[j] < RANGE and (cam[j, :, 2] > NEAR).any() and (
                    pts := _clip_project(cam[j], s.K)):
                f = 1 - math.exp(-dist[j] / FOG_M)
                draw.polygon(pts, fill=tuple(int(v) for v in (40 * (1 - f) + HAZE * f)))
    # An id buffer (owner per pixel, cv2 like _area) gives each annotated actor's visible
    # pixels; faces drawn before the first actor face cannot occlude one, so it starts there.
    ids, per_owner = None, {}
    for _, pts, col, owner, decal in sorted(_polygons(geo, r_cw, tc, pos, s.K, (w, h)),
                                            key=lambda it: -it[0]):
        if len(pts) == 2:
            draw.point(pts, fill=col)
            continue
        draw.polygon(pts, fill=col)
        if decal or (ids is None and not owner):
            continue
        if ids is None:
            ids = np.zeros((h, w), np.uint16)
        poly = np.array(pts).reshape(-1, 2) - 0.5
        cv2.fillPoly(ids, [np.round(poly * 4).astype(np.int32)], owner, cv2.LINE_8, 2)
        if owner:
            per_owner.setdefault(owner, []).append(poly)
    seen = np.bincount(ids.ravel(), minlength=max(per_owner) + 1) if per_owner else []
    return (np.asarray(img), {o: int(seen[o]) for o in per_owner},
            {o: _area(p, (w, h)) for o, p in per_owner.items()})
