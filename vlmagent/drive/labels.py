"""Meta-action labels from future ego poses (DriveAgent-R1 answers, Senna's labelling rules).

A label is 4 meta-actions, one per 2 s step (now, +2 s, +4 s, +6 s), each [speed, path]:

    speed  Accelerate | Decelerate | Keep Speed | Stop
    path   Straight | Left Turn | Right Turn

Coordinates. Poses are the ego pose of each key frame's LIDAR_TOP sample_data (global x, y and
the yaw of the rotation quaternion). Positions are compared in an ego frame with x lateral
(right positive) and y forward, the frame of nuScenes' LIDAR_TOP and of VAD's commands.

The rule (LabelRule, defaults = Senna's published thresholds). The future is resampled to
exact dt = 0.5 s steps; step k covers [2k, 2k + 2] s, i.e. 5 poses and 4 half-second speeds.

    speed  v = the mean speed over each 0.5 s interval of the window (so v_first and v_last
           are centred 1.5 s apart). Stop if max(v) <= stop_max_speed (2 m/s); else
           Accelerate if v_last - v_first >= accel_delta (3 m/s), Decelerate if <= -accel_delta,
           else Keep Speed.
    path   the window's end point (x, y) in the frame of the window's first pose (so every
           step is judged from the heading the car has then), angle = atan2(y, x) - 90 deg
           (0 straight ahead, positive to the left). |x| > turn_lateral (4 m) and
           |angle| >= turn_angle_deg (5 deg): a turn to the side of x; |x| > turn_lateral with a
           smaller angle: a lane change to that side, folded into Left/Right Turn as
           DriveAgent-R1 does (path_kind tells the two apart); else Straight.
    nav    VAD-style command from the lateral offset x of the pose nav_horizon_s ahead, in the
           current frame: x >= nav_lateral (2 m) Turn Right, x <= -nav_lateral Turn Left, else
           Go Straight. nav_horizon_s = 6 s: longer than VAD's 3 s, so a turn that the labels
           show at +2 s or +4 s is announced before it starts; shorter than the 8 s horizon, so
           gentle road curvature at speed (90 m versus 120 m ahead at 15 m/s) less often reads
           as a turn.

Why these thresholds on 2 s windows. Senna labels one 3 s window; DriveAgent-R1 labels four
2 s windows. The defaults keep Senna's numbers, which is stricter on short windows: +-3 m/s in
the 1.5 s between v_first and v_last is a 2 m/s^2 speed change, so gentle speed changes read
as Keep Speed and slow turns (a car that covers few metres in 2 s) may stay under the 4 m
lateral threshold. A +-1 m/s speed threshold may suit 2 s windows better:
`LabelRule(accel_delta=1.0, name="senna-accel1")` (or `LabelRule.from_dict({...})`); give a
rule that is not Senna's another name. Every label row records its full rule (`rule.to_dict()`).

End of scene. The labels need 8 s of future. end="drop" (default) skips key frames without it;
end="pad" holds the last pose (the car stands still, hence Stop, Straight at the end) and marks
the row padded. Key frames jitter around 0.5 s: poses are interpolated by timestamp (yaw
unwrapped) to exact 0.5 s steps; a last target at most dt/2 past the scene's last key frame is
extrapolated from the last segment rather than counted as missing. A gap between key frames
over max_gap_s (or a non-increasing timestamp) raises IrregularKeyFrames; label_dataset skips
such key frames and counts them.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

SPEEDS = ("Accelerate", "Decelerate", "Keep Speed", "Stop")
PATHS = ("Straight", "Left Turn", "Right Turn")
NAV_COMMANDS = ("Turn Left", "Turn Right", "Go Straight")
STEPS = 4  # now, +2 s, +4 s, +6 s
STEP_NAMES = ("now", "+2 s", "+4 s", "+6 s")


def _multiple(x: float, of: float) -> bool:
    return abs(x / of - round(x / of)) < 1e-9


@dataclass(frozen=True)
class LabelRule:
    """Every threshold of the labelling rule (module docstring); defaults = Senna's."""

    step_s: float = 2.0  # length of one meta-action window
    dt: float = 0.5  # key-frame spacing the future is resampled to
    stop_max_speed: float = 2.0  # m/s: Stop if no half-second speed in the window exceeds it
    accel_delta: float = 3.0  # m/s: v_last - v_first >= +this Accelerate, <= -this Decelerate
    turn_lateral: float = 4.0  # m: |x| of the window's end point above this: turn/lane change
    turn_angle_deg: float = 5.0  # deg: |angle| at or above this: turn, below: lane change
    nav_lateral: float = 2.0  # m: lateral offset for Turn Left/Right
    nav_horizon_s: float = 6.0  # s: where the navigation command looks
    end: str = "drop"  # "drop" | "pad": key frames without the full future
    max_gap_s: float = 0.75  # s: a larger gap between key frames is irregular
    name: str = "senna"

    def __post_init__(self) -> None:
        if self.end not in ("drop", "pad"):
            raise ValueError(f"end must be 'drop' or 'pad', not {self.end!r}")
        if self.dt <= 0 or self.step_s <= 0 or not _multiple(self.step_s, self.dt):
            raise ValueError(f"step_s ({self.step_s}) must be a positive multiple of dt "
                             f"({self.dt})")
        if not (0 < self.nav_horizon_s <= self.horizon_s and _multiple(self.nav_horizon_s,
                                                                       self.dt)):
            raise ValueError(f"nav_horizon_s ({self.nav_horizon_s}) must be a multiple of dt "
                             f"within the {self.horizon_s} s horizon")
        for k in ("stop_max_speed", "accel_delta", "turn_lateral", "turn_angle_deg",
                  "nav_lateral", "max_gap_s"):
            if getattr(self, k) < 0:
                raise ValueError(f"{k} must be >= 0, not {getattr(self, k)}")

    @property
    def horizon_s(self) -> float:
        return STEPS * self.step_s

    @property
    def per_step(self) -> int:
        """Resampled intervals per window (4: a window has 5 poses)."""
        return round(self.step_s / self.dt)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelRule:
        """The rule of a recorded dict; an unknown key is an error (a typo would otherwise
        silently label with the default)."""
        known = {f.name for f in fields(cls)}
        for k in d:
            if k not in known:
                raise ValueError(f"unknown LabelRule key {k!r} (valid: {', '.join(sorted(known))})")
        return cls(**d)


# ---------------------------------------------------------------- pure geometry
def ego_frame(positions_xy: Any, yaw: Any, origin_index: int = 0) -> np.ndarray:
    """Positions (N, 2+) in the ego frame of pose `origin_index`: column 0 = x lateral (right
    positive), column 1 = y forward. `yaw`: the global yaws (N,) or the origin's yaw alone,
    counter-clockwise from the global x axis (pyquaternion's yaw of the ego rotation)."""
    p = np.asarray(positions_xy, dtype=float)[:, :2]
    y = np.asarray(yaw, dtype=float)
    h = float(y[origin_index]) if y.ndim else float(y)
    d = p - p[origin_index]
    c, s = math.cos(h), math.sin(h)
    return np.stack([d[:, 0] * s - d[:, 1] * c, d[:, 0] * c + d[:, 1] * s], axis=1)


def speeds(positions: Any, dt: float) -> np.ndarray:
    """Mean speed (m/s) over each interval between consecutive positions (N-1 values)."""
    p = np.asarray(positions, dtype=float)[:, :2]
    return np.linalg.norm(np.diff(p, axis=0), axis=1) / dt


def speed_action(window_positions: Any, rule: LabelRule) -> str:
    """Stop | Accelerate | Decelerate | Keep Speed of one window (positions in any frame)."""
    v = speeds(window_positions, rule.dt)
    if len(v) == 0:
        raise ValueError("a window needs at least 2 positions")
    if v.max() <= rule.stop_max_speed:
        return "Stop"
    delta = v[-1] - v[0]
    if delta >= rule.accel_delta:
        return "Accelerate"
    if delta <= -rule.accel_delta:
        return "Decelerate"
    return "Keep Speed"


def path_kind(window_positions_in_start_frame: Any, rule: LabelRule) -> tuple[str, str]:
    """(path label, kind): kind "turn", "lane change" (both give Left/Right Turn) or
    "straight". Positions in the frame of the window's first pose (x right, y forward)."""
    x, y = (float(v) for v in np.asarray(window_positions_in_start_frame, dtype=float)[-1, :2])
    if abs(x) <= rule.turn_lateral:
        return "Straight", "straight"
    # 0 straight ahead, positive left; wrapped so that an end point behind reads as a big angle
    angle = (math.degrees(math.atan2(y, x)) - 90.0 + 180.0) % 360.0 - 180.0
    side = "Right Turn" if x > 0 else "Left Turn"
    return side, "turn" if abs(angle) >= rule.turn_angle_deg else "lane change"


def path_action(window_positions_in_start_frame: Any, rule: LabelRule) -> str:
    """Straight | Left Turn | Right Turn of one window (see path_kind)."""
    return path_kind(window_positions_in_start_frame, rule)[0]


def meta_actions(global_xy: Any, global_yaw: Any, rule: LabelRule) -> list[list[str]]:
    """The 4 [speed, path] of a trajectory starting at the current key frame: 1 + 16 poses at
    0.5 s (defaults) in global coordinates, with their yaws. Each window's path is judged in the
    frame of its own first pose."""
    xy = np.asarray(global_xy, dtype=float)[:, :2]
    yaw = np.asarray(global_yaw, dtype=float)
    n = rule.per_step
    if len(xy) < STEPS * n + 1 or len(yaw) != len(xy):
        raise ValueError(f"need {STEPS * n + 1} poses and as many yaws, got {len(xy)} and "
                         f"{len(yaw)}")
    out = []
    for k in range(STEPS):
        w = slice(k * n, (k + 1) * n + 1)
        out.append([speed_action(xy[w], rule), path_action(ego_frame(xy[w], yaw[w], 0), rule)])
    return out


def nav_command(global_xy: Any, global_yaw: Any, rule: LabelRule) -> str:
    """Turn Left | Turn Right | Go Straight from the lateral offset of the pose nav_horizon_s
    ahead, in the frame of the first pose."""
    i = round(rule.nav_horizon_s / rule.dt)
    x = float(ego_frame(np.asarray(global_xy, dtype=float)[: i + 1], global_yaw, 0)[i, 0])
    if x >= rule.nav_lateral:
        return "Turn Right"
    if x <= -rule.nav_lateral:
        return "Turn Left"
    return "Go Straight"


# ---------------------------------------------------------------- nuScenes access
class IrregularKeyFrames(ValueError):
    """Key frames too far apart (or not increasing in time) to interpolate across."""


class Future(NamedTuple):
    xy: np.ndarray  # (N+1, 2) global positions at exact dt steps from the key frame
    yaw: np.ndarray  # (N+1,) unwrapped global yaws
    padded: bool  # some poses past the scene's end were held


def _key_pose(nusc: Any, sample: dict) -> tuple[float, float, float, float]:
    """(time s, x, y, yaw) of a key frame: the ego pose of its LIDAR_TOP sample_data."""
    from pyquaternion import Quaternion  # nuScenes' own dependency; only needed with data

    sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    pose = nusc.get("ego_pose", sd["ego_pose_token"])
    yaw = Quaternion(pose["rotation"]).yaw_pitch_roll[0]
    return sd["timestamp"] * 1e-6, pose["translation"][0], pose["translation"][1], float(yaw)


def future_poses(nusc: Any, sample_token: str, horizon_s: float = 8.0, dt: float = 0.5,
                 end: str = "drop", max_gap_s: float = 0.75) -> Future | None:
    """Ego poses from the key frame `sample_token` to horizon_s ahead, following sample.next,
    interpolated by timestamp to exact dt steps (module docstring). None when the scene ends
    before the horizon and end == "drop"; with end == "pad" the last pose is held."""
    ts, xy, yaw = [], [], []
    sample = nusc.get("sample", sample_token)
    while True:
        t, x, y, h = _key_pose(nusc, sample)
        if ts and not 0 < t - ts[-1] <= max_gap_s:
            raise IrregularKeyFrames(f"key frames {t - ts[-1]:.3f} s apart before sample "
                                     f"{sample['token']} (allowed: up to {max_gap_s} s)")
        ts.append(t)
        xy.append((x, y))
        yaw.append(h)
        if t - ts[0] >= horizon_s - 1e-6 or not sample["next"]:
            break
        sample = nusc.get("sample", sample["next"])
    rel = np.asarray(ts) - ts[0]
    pts, yw = np.asarray(xy), np.unwrap(np.asarray(yaw))
    targets = np.arange(round(horizon_s / dt) + 1) * dt
    missing = targets > rel[-1] + dt / 2 + 1e-9
    if missing.any() and end == "drop":
        return None
    # past the last key frame: extrapolate (jitter, at most dt/2) or hold (padding)
    tt = np.minimum(targets, rel[-1] + dt / 2)
    out_xy = np.stack([np.interp(tt, rel, pts[:, 0]), np.interp(tt, rel, pts[:, 1])], axis=1)
    out_yaw = np.interp(tt, rel, yw)
    over = tt > rel[-1]
    if over.any() and len(rel) > 1:
        vel = (pts[-1] - pts[-2]) / (rel[-1] - rel[-2])
        out_xy[over] = pts[-1] + (tt[over] - rel[-1])[:, None] * vel
        out_xy[missing] = out_xy[~missing][-1]
    return Future(out_xy, out_yaw, bool(missing.any()))


def ego_speed(nusc: Any, sample_token: str) -> float:
    """Speed (m/s) at a key frame: displacement between the previous and next key frames (the
    key frame itself where one is missing) over their time; 0.0 for a lone key frame."""
    s = nusc.get("sample", sample_token)
    toks = [t for t in (s["prev"], sample_token, s["next"]) if t]
    if len(toks) < 2:
        return 0.0
    a = _key_pose(nusc, nusc.get("sample", toks[0]))
    b = _key_pose(nusc, nusc.get("sample", toks[-1]))
    return float(math.hypot(b[1] - a[1], b[2] - a[2]) / max(b[0] - a[0], 1e-6))


def label_sample(nusc: Any, sample_token: str, rule: LabelRule | None = None
                 ) -> dict[str, Any] | None:
    """The label row of one key frame, or None when end == "drop" and the future is short.
    Raises IrregularKeyFrames for a gap over rule.max_gap_s."""
    rule = rule or LabelRule()
    fut = future_poses(nusc, sample_token, rule.horizon_s, rule.dt, rule.end, rule.max_gap_s)
    if fut is None:
        return None
    sample = nusc.get("sample", sample_token)
    return {"sample_token": sample_token,
            "scene": nusc.get("scene", sample["scene_token"])["name"],
            "meta_actions": meta_actions(fut.xy, fut.yaw, rule),
            "nav_command": nav_command(fut.xy, fut.yaw, rule),
            "ego_speed": round(ego_speed(nusc, sample_token), 3),
            "rule": rule.to_dict(),
            "padded": fut.padded}


def _label_all(nusc: Any, rule: LabelRule, scenes: Iterable[str] | None
               ) -> tuple[list[dict[str, Any]], Counter]:
    wanted = None if scenes is None else set(scenes)
    rows: list[dict[str, Any]] = []
    skipped: Counter = Counter()
    for scene in nusc.scene:
        if wanted is not None and scene["name"] not in wanted and scene["token"] not in wanted:
            continue
        token = scene["first_sample_token"]
        while token:
            try:
                row = label_sample(nusc, token, rule)
            except IrregularKeyFrames:
                row = None
                skipped["irregular_gap"] += 1
            else:
                if row is None:
                    skipped["end_of_scene"] += 1
            if row is not None:
                rows.append(row)
            token = nusc.get("sample", token)["next"]
    return rows, skipped


def label_dataset(nusc: Any, rule: LabelRule | None = None,
                  scenes: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Label rows of every key frame of `scenes` (names or tokens; all when None), in scene
    order; key frames that are dropped or have irregular gaps are left out."""
    return _label_all(nusc, rule or LabelRule(), scenes)[0]


def label_distribution(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts: speed and path per step, step-0 [speed, path] pairs, the 10 most common 4-step
    sequences, navigation commands and padded rows."""
    speed = [Counter(r["meta_actions"][k][0] for r in rows) for k in range(STEPS)]
    path = [Counter(r["meta_actions"][k][1] for r in rows) for k in range(STEPS)]
    joint = Counter(", ".join(r["meta_actions"][0]) for r in rows)
    seqs = Counter(" | ".join(", ".join(a) for a in r["meta_actions"]) for r in rows)
    nav = Counter(r.get("nav_command") for r in rows if r.get("nav_command"))
    return {"n": len(rows),
            "speed": [{s: c[s] for s in SPEEDS} for c in speed],
            "path": [{p: c[p] for p in PATHS} for c in path],
            "joint_now": {f"{s}, {p}": joint[f"{s}, {p}"] for s in SPEEDS for p in PATHS},
            "top_sequences": [[s, n] for s, n in seqs.most_common(10)],
            "nav_command": {c: nav[c] for c in NAV_COMMANDS},
            "padded": sum(bool(r.get("padded")) for r in rows)}


def format_distribution(dist: dict[str, Any]) -> str:
    """A printable table of label_distribution (plus write_labels' skipped counts)."""
    n = max(dist["n"], 1)
    lines = [f"{dist['n']} labelled key frames ({dist.get('padded', 0)} padded)"]
    if dist.get("skipped"):
        lines[0] += "; skipped: " + ", ".join(f"{k.replace('_', ' ')} {v}"
                                              for k, v in sorted(dist["skipped"].items()))
    cols = SPEEDS + PATHS
    lines.append(f"{'step':<6}" + "".join(f"{c:>13}" for c in cols))
    for k in range(STEPS):
        counts = {**dist["speed"][k], **dist["path"][k]}
        lines.append(f"{STEP_NAMES[k]:<6}" + "".join(
            f"{f'{counts[c]} {100 * counts[c] / n:3.0f}%':>13}" for c in cols))
    lines.append("now [speed, path]: " + ", ".join(
        f"{k} {v}" for k, v in sorted(dist["joint_now"].items(), key=lambda kv: -kv[1]) if v))
    lines.append("nav command: " + ", ".join(f"{k} {v}" for k, v in dist["nav_command"].items()))
    lines.append("top sequences:")
    lines += [f"{c:>7}  {s}" for s, c in dist["top_sequences"]]
    return "\n".join(lines)


def write_labels(dataroot: str | Path, version: str, out: str | Path,
                 rule: LabelRule | None = None) -> dict[str, Any]:
    """Label every key frame of a nuScenes version (real v1.0-mini/trainval or generated),
    write one JSON row per labelled key frame to `out` (JSON lines) and return the
    distribution, with skipped counts, the rule and the output path."""
    from nuscenes.nuscenes import NuScenes

    rule = rule or LabelRule()
    nusc = NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    rows, skipped = _label_all(nusc, rule, None)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return {**label_distribution(rows), "skipped": dict(skipped), "rule": rule.to_dict(),
            "out": str(out)}
