"""Meta-action labels: the rule on synthetic trajectories (hand-checked numbers), thresholds,
the rule record, and the nuScenes-level walk on a hand-written 13-table dataset."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from vlmagent.drive.labels import (
    IrregularKeyFrames,
    LabelRule,
    ego_frame,
    ego_speed,
    format_distribution,
    future_poses,
    label_dataset,
    label_distribution,
    label_sample,
    meta_actions,
    nav_command,
    path_action,
    path_kind,
    speed_action,
    speeds,
    write_labels,
)

RULE = LabelRule()
T = np.arange(17) * 0.5  # 8 s at 0.5 s: the current key frame and 16 ahead
KS = ["Keep Speed", "Straight"]


def along_x(s):
    """Positions s along global +x, heading 0."""
    s = np.asarray(s, dtype=float)
    return np.stack([s, np.zeros_like(s)], axis=1), np.zeros_like(s)


def braking(v0, a, t):
    """Distance covered braking from v0 at a m/s^2 (standing still once stopped)."""
    tc = np.minimum(t, v0 / a)
    return v0 * tc - a * tc ** 2 / 2


def left_arc(t, radius, v, arc_s):
    """Start at the origin heading +x, turn left on a circle for arc_s seconds, then straight."""
    ta = np.minimum(t, arc_s)
    th = v * ta / radius
    x, y = radius * np.sin(th), radius - radius * np.cos(th)
    rest = v * (t - ta)
    return np.stack([x + rest * np.cos(th), y + rest * np.sin(th)], axis=1), th


def rotate(xy, yaw, angle, shift=(0.0, 0.0)):
    c, s = math.cos(angle), math.sin(angle)
    return xy @ np.array([[c, s], [-s, c]]) + np.asarray(shift), yaw + angle


# ---------------------------------------------------------------- geometry
def test_ego_frame_is_x_right_y_forward():
    pts = np.array([[3.0, 4.0], [3.0, 9.0], [4.0, 4.0], [2.0, 4.0]])
    e = ego_frame(pts, [math.pi / 2] * 4, 0)  # facing global +y (north)
    np.testing.assert_allclose(e, [[0, 0], [0, 5], [1, 0], [-1, 0]], atol=1e-12)
    e = ego_frame(pts, 0.0, 0)  # facing +x: global +y is to the left
    np.testing.assert_allclose(e, [[0, 0], [-5, 0], [0, 1], [0, -1]], atol=1e-12)


def test_speeds_are_interval_means():
    np.testing.assert_allclose(speeds([[0, 0], [3, 4], [3, 4]], 0.5), [10.0, 0.0])


# ---------------------------------------------------------------- the rule on trajectories
def test_constant_speed_straight():
    xy, yaw = along_x(10 * T)
    assert meta_actions(xy, yaw, RULE) == [KS] * 4
    assert nav_command(xy, yaw, RULE) == "Go Straight"


def test_labels_do_not_depend_on_the_global_frame():
    xy, yaw = left_arc(T, 15.0, 7.0, 2.0)
    ref = meta_actions(xy, yaw, RULE)
    xy2, yaw2 = rotate(xy, yaw, 2.4, (500.0, -1200.0))
    assert meta_actions(xy2, yaw2, RULE) == ref
    assert nav_command(xy2, yaw2, RULE) == nav_command(xy, yaw, RULE)


def test_braking_decelerates_then_stops():
    # 10 -> 0 at 3 m/s^2, stopped at 3.33 s. Window speeds (m/s): 0-2 s 9.25 .. 4.75 (delta
    # -4.5); 2-4 s 3.25, 1.75, 0.33, 0 (delta -3.25); then standing still
    xy, yaw = along_x(braking(10.0, 3.0, T))
    np.testing.assert_allclose(speeds(xy[4:9], 0.5), [3.25, 1.75, 1 / 3, 0.0], atol=1e-12)
    assert meta_actions(xy, yaw, RULE) == [["Decelerate", "Straight"]] * 2 + \
        [["Stop", "Straight"]] * 2


def test_accelerating_exactly_at_threshold():
    # s = 5t + t^2: each window's half-second speeds rise by exactly 3.0 m/s (binary exact)
    xy, yaw = along_x(5 * T + T ** 2)
    v = speeds(xy[:5], 0.5)
    assert v[-1] - v[0] == 3.0
    assert meta_actions(xy, yaw, RULE) == [["Accelerate", "Straight"]] * 4
    xy, yaw = along_x(5 * T + 0.95 * T ** 2)  # 2.85 m/s per window
    assert meta_actions(xy, yaw, RULE) == [KS] * 4
    # the +-1 m/s variant suggested for 2 s windows labels it Accelerate
    assert meta_actions(xy, yaw, LabelRule(accel_delta=1.0))[0] == ["Accelerate", "Straight"]


def test_decelerating_exactly_at_threshold():
    xy, yaw = along_x(20 * T - T ** 2)  # 20 -> 4 m/s, -3.0 m/s per window
    assert meta_actions(xy, yaw, RULE) == [["Decelerate", "Straight"]] * 4


def test_stop_threshold_is_inclusive():
    assert speed_action(along_x(2.0 * T[:5])[0], RULE) == "Stop"  # max speed exactly 2.0
    assert speed_action(along_x(2.02 * T[:5])[0], RULE) == "Keep Speed"
    assert speed_action(along_x([0, 0, 0, 0, 0.9])[0], RULE) == "Stop"  # 1.8 m/s at most
    assert speed_action(along_x([0, 0, 0.25, 1.0, 2.25])[0], RULE) == "Keep Speed"  # +2.5 m/s
    assert speed_action(along_x([0, 0, 0.25, 1.0, 2.5])[0], RULE) == "Accelerate"  # +3 m/s


def test_left_arc_turns_in_the_first_window_only():
    # R = 15 m at 7 m/s for 2 s: 53.5 deg, end point x = -6.07 m, y = 12.05 m, angle 26.7 deg;
    # then straight: later windows, judged in their own frame, are Straight
    xy, yaw = left_arc(T, 15.0, 7.0, 2.0)
    e = ego_frame(xy[:5], yaw[:5], 0)[-1]
    np.testing.assert_allclose(e, [-6.0726, 12.0541], atol=1e-3)
    assert meta_actions(xy, yaw, RULE) == [["Keep Speed", "Left Turn"]] + [KS] * 3
    assert nav_command(xy, yaw, RULE) == "Turn Left"
    xy, yaw = left_arc(T, 15.0, 7.0, 8.0)  # circling: every window turns
    assert [p for _, p in meta_actions(xy, yaw, RULE)] == ["Left Turn"] * 4


def test_lane_change_right_is_a_right_turn():
    # 10 m/s, 4.5 m to the right over the first 2 s (cosine profile), heading along the path
    ts = np.minimum(T, 2.0)
    lat = -4.5 * (1 - np.cos(math.pi * ts / 2)) / 2
    dlat = -4.5 * math.pi / 4 * np.sin(math.pi * ts / 2) * (T < 2)
    xy = np.stack([10 * T, lat], axis=1)
    yaw = np.arctan2(dlat, 10.0)
    assert meta_actions(xy, yaw, RULE) == [["Keep Speed", "Right Turn"]] + [KS] * 3
    assert nav_command(xy, yaw, RULE) == "Turn Right"
    # a lane change proper (small angle: end point far ahead) is folded into Right Turn too
    assert path_kind([[0, 0], [4.5, 60.0]], RULE) == ("Right Turn", "lane change")
    assert path_kind([[0, 0], [4.5, 20.0]], RULE) == ("Right Turn", "turn")


def test_path_thresholds():
    assert path_action([[0, 0], [4.0, 10.0]], RULE) == "Straight"  # |x| must exceed 4 m
    assert path_action([[0, 0], [-4.0, 10.0]], RULE) == "Straight"
    assert path_action([[0, 0], [4.001, 10.0]], RULE) == "Right Turn"
    assert path_action([[0, 0], [-4.001, 10.0]], RULE) == "Left Turn"
    y5 = 5.0 / math.tan(math.radians(5.0))  # angle of the end point exactly 5 deg
    assert path_kind([[0, 0], [-5.0, 5.0 / math.tan(math.radians(5.01))]], RULE)[1] == "turn"
    assert path_kind([[0, 0], [-5.0, 5.0 / math.tan(math.radians(4.99))]], RULE)[1] == \
        "lane change"
    assert path_kind([[0, 0], [5.0, y5 * 0.999]], RULE) == ("Right Turn", "turn")
    assert path_kind([[0, 0], [-6.0, -3.0]], RULE) == ("Left Turn", "turn")  # behind: U-turn


def test_nav_command_thresholds():
    xy, yaw = along_x(10 * T)
    for off, want in ((2.0, "Turn Right"), (1.99, "Go Straight"), (-2.0, "Turn Left")):
        shifted = xy.copy()
        shifted[12:, 1] = -off  # global -y is the car's right; pose 12 = 6 s
        assert nav_command(shifted, yaw, RULE) == want
    shifted[12:, 1] = 0.0
    shifted[16, 1] = -5.0  # beyond the 6 s horizon: not seen
    assert nav_command(shifted, yaw, RULE) == "Go Straight"


def test_meta_actions_needs_the_whole_horizon():
    xy, yaw = along_x(10 * T[:16])
    with pytest.raises(ValueError, match="need 17 poses"):
        meta_actions(xy, yaw, RULE)


# ---------------------------------------------------------------- the rule record
def test_rule_round_trip_and_strict_keys():
    rule = LabelRule(accel_delta=1.0, end="pad", name="senna-accel1")
    d = rule.to_dict()
    assert d["accel_delta"] == 1.0 and d["end"] == "pad" and d["nav_horizon_s"] == 6.0
    assert LabelRule.from_dict(json.loads(json.dumps(d))) == rule
    assert LabelRule.from_dict({}) == LabelRule()
    with pytest.raises(ValueError, match="'accel_threshold'"):
        LabelRule.from_dict({"accel_threshold": 1.0})
    with pytest.raises(ValueError, match="end"):
        LabelRule(end="extend")
    with pytest.raises(ValueError, match="multiple of dt"):
        LabelRule(step_s=1.2)
    with pytest.raises(ValueError, match="nav_horizon_s"):
        LabelRule(nav_horizon_s=9.0)


# ---------------------------------------------------------------- a hand-written nuScenes
def _quat(yaw):
    return [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]


def write_nuscenes(root, scenes, version="v1.0-test"):
    """The 13 tables the devkit loads, with only what it indexes, and one LIDAR_TOP key frame
    per sample. scenes: {name: [(t_s, x, y, yaw), ...]}."""
    tables = {k: [] for k in ("category", "attribute", "visibility", "instance",
                              "sample_annotation")}
    tables["sensor"] = [{"token": "sensor-lidar", "channel": "LIDAR_TOP", "modality": "lidar"}]
    tables["calibrated_sensor"] = [{"token": "cs-lidar", "sensor_token": "sensor-lidar",
                                    "translation": [0.9, 0.0, 1.8], "rotation": _quat(0.0),
                                    "camera_intrinsic": []}]
    tables["log"] = [{"token": "log0", "logfile": "log0", "vehicle": "ego",
                      "date_captured": "2020-01-01", "location": "test"}]
    (root / "maps").mkdir(parents=True)
    (root / "maps" / "map0.png").write_bytes(b"")  # the devkit checks it exists, loads lazily
    tables["map"] = [{"token": "map0", "log_tokens": ["log0"], "category": "semantic_prior",
                      "filename": "maps/map0.png"}]
    for k in ("scene", "sample", "sample_data", "ego_pose"):
        tables[k] = []
    for name, poses in scenes.items():
        toks = [f"{name}-{i}" for i in range(len(poses))]
        tables["scene"].append({"token": f"scene-{name}", "name": name, "log_token": "log0",
                                "description": "", "nbr_samples": len(poses),
                                "first_sample_token": toks[0], "last_sample_token": toks[-1]})
        for i, (t, x, y, yaw) in enumerate(poses):
            us = int(round(1e6 * (1_600_000_000 + t)))
            prev, nxt = toks[i - 1] if i else "", toks[i + 1] if i + 1 < len(toks) else ""
            tables["sample"].append({"token": toks[i], "timestamp": us, "prev": prev,
                                     "next": nxt, "scene_token": f"scene-{name}"})
            tables["ego_pose"].append({"token": f"ep-{toks[i]}", "timestamp": us,
                                       "translation": [x, y, 0.0], "rotation": _quat(yaw)})
            tables["sample_data"].append({
                "token": f"sd-{toks[i]}", "sample_token": toks[i],
                "ego_pose_token": f"ep-{toks[i]}", "calibrated_sensor_token": "cs-lidar",
                "timestamp": us, "fileformat": "pcd", "is_key_frame": True, "height": 0,
                "width": 0, "filename": f"samples/LIDAR_TOP/{toks[i]}.pcd.bin",
                "prev": f"sd-{prev}" if prev else "", "next": f"sd-{nxt}" if nxt else ""})
    (root / version).mkdir()
    for k, v in tables.items():
        (root / version / f"{k}.json").write_text(json.dumps(v))
    return root


def _straight(n, v=10.0, heading=math.radians(30), jitter=0.02, t0=0.0):
    """n key frames at ~0.5 s (jittered) moving at v along `heading`, positions at the true
    times, so exact-0.5 s resampling gives exact constant-speed poses."""
    out = []
    for i in range(n):
        t = t0 + 0.5 * i + jitter * math.sin(1.7 * i)
        out.append((t, 100 + v * t * math.cos(heading), -50 + v * t * math.sin(heading),
                    heading))
    return out


def _circle(n, radius=15.0, v=7.0):
    out = []
    for i in range(n):
        t = 0.5 * i + 0.015 * math.cos(2.3 * i)
        th = v * t / radius
        out.append((t, radius * math.sin(th), radius - radius * math.cos(th), th))
    return out


@pytest.fixture(scope="module")
def nusc(tmp_path_factory):
    from nuscenes.nuscenes import NuScenes

    gap = _straight(5) + _straight(20, t0=3.5)  # 1.5 s between key frames 4 and 5
    root = write_nuscenes(tmp_path_factory.mktemp("nusc"), {
        "straight": _straight(20), "circle": _circle(18), "short": _straight(6, jitter=0.0),
        "gap": gap})
    return NuScenes(version="v1.0-test", dataroot=str(root), verbose=False)


def test_future_poses_resample_jittered_key_frames(nusc):
    fut = future_poses(nusc, "straight-0")
    assert fut is not None and not fut.padded and fut.xy.shape == (17, 2)
    np.testing.assert_allclose(speeds(fut.xy, 0.5), [10.0] * 16, atol=1e-4)  # us timestamps
    np.testing.assert_allclose(fut.yaw, [math.radians(30)] * 17, atol=1e-9)
    # key frame 3 has 16 key frames ahead, the last ~8 s +- jitter: kept; key frame 4: dropped
    assert future_poses(nusc, "straight-3") is not None
    assert future_poses(nusc, "straight-4") is None
    with pytest.raises(IrregularKeyFrames, match="1.490 s apart before sample gap-5"):
        future_poses(nusc, "gap-0")


def test_label_sample_on_the_devkit(nusc):
    row = label_sample(nusc, "straight-1", RULE)
    assert row["meta_actions"] == [KS] * 4 and row["nav_command"] == "Go Straight"
    assert row["scene"] == "straight" and row["padded"] is False
    assert row["ego_speed"] == pytest.approx(10.0, abs=0.05)
    assert row["rule"] == RULE.to_dict()
    assert ego_speed(nusc, "straight-0") == pytest.approx(10.0, abs=0.05)  # next pose only
    row = label_sample(nusc, "circle-0", RULE)
    assert [p for _, p in row["meta_actions"]] == ["Left Turn"] * 4
    assert row["nav_command"] == "Turn Left"
    assert label_sample(nusc, "short-0", RULE) is None


def test_padding_holds_the_last_pose(nusc):
    # 6 key frames (2.5 s) at 10 m/s: 0-2 s keep speed; 2-4 s speeds 10, 0, 0, 0: decelerate
    row = label_sample(nusc, "short-0", LabelRule(end="pad"))
    assert row["padded"] is True and row["rule"]["end"] == "pad"
    assert row["meta_actions"] == [KS, ["Decelerate", "Straight"], ["Stop", "Straight"],
                                   ["Stop", "Straight"]]
    assert label_sample(nusc, "short-5", LabelRule(end="pad"))["meta_actions"] == \
        [["Stop", "Straight"]] * 4
    rows = label_dataset(nusc, LabelRule(end="pad"), scenes=["short"])
    assert len(rows) == 6 and all(r["padded"] for r in rows)


def test_label_dataset_drops_and_skips(nusc):
    rows = label_dataset(nusc, RULE)
    by_scene = {s: sum(r["scene"] == s for r in rows) for s in ("straight", "circle", "short",
                                                                "gap")}
    # straight 20 -> 4, circle 18 -> 2, short -> 0, gap: 5 irregular, then 20 -> 4
    assert by_scene == {"straight": 4, "circle": 2, "short": 0, "gap": 4}
    assert [r["sample_token"] for r in label_dataset(nusc, RULE, scenes=["scene-circle"])] == \
        ["circle-0", "circle-1"]


def test_write_labels(nusc, tmp_path):
    out = tmp_path / "labels" / "labels.jsonl"
    dist = write_labels(nusc.dataroot, "v1.0-test", out)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == dist["n"] == 10
    assert {"sample_token", "scene", "meta_actions", "rule", "nav_command", "ego_speed",
            "padded"} <= set(rows[0])
    assert dist["skipped"] == {"end_of_scene": 16 + 16 + 6 + 16, "irregular_gap": 5}
    assert dist["speed"][0] == {"Accelerate": 0, "Decelerate": 0, "Keep Speed": 10, "Stop": 0}
    assert dist["path"][3] == {"Straight": 8, "Left Turn": 2, "Right Turn": 0}
    assert dist["joint_now"]["Keep Speed, Left Turn"] == 2
    assert dist["top_sequences"][0] == [" | ".join(["Keep Speed, Straight"] * 4), 8]
    assert dist["nav_command"] == {"Turn Left": 2, "Turn Right": 0, "Go Straight": 8}
    assert label_distribution(rows)["n"] == 10
    table = format_distribution(dist)
    assert "10 labelled key frames" in table and "irregular gap 5" in table
    assert "Keep Speed" in table and "+6 s" in table
