"""The synthetic nuScenes generator (vlmagent/drive/synth.py), checked through the real
nuscenes-devkit: the tables load and link up, annotations and lidar points project onto the
rendered objects, scenes are deterministic, and the ego trajectories carry the decelerations,
stops and turns that the meta-action labels are meant to find."""
from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nuscenes")
from nuscenes.nuscenes import NuScenes  # noqa: E402
from nuscenes.utils.data_classes import LidarPointCloud  # noqa: E402
from nuscenes.utils.geometry_utils import BoxVisibility, view_points  # noqa: E402
from PIL import Image  # noqa: E402

from vlmagent.drive.synth import CHANNELS, make_dataset, plan_scenes  # noqa: E402
from vlmagent.drive.synth_render import LAMP_DZ  # noqa: E402
from vlmagent.drive.synth_scenarios import SCENARIOS  # noqa: E402

VERSION, SIZE, SEED = "v1.0-synth", (480, 270), 3
MAIN = ("lead_vehicle_braking", "turn_left")
LAMPS = [np.array(c, float) for c in ((125, 24, 24), (255, 35, 30), (232, 232, 212))]


@pytest.fixture(scope="module")
def main(tmp_path_factory):
    """Two 20 s scenes (a lead car braking to a stop, a left bend), the devkit on them, and
    the scripted scenes behind them."""
    root = tmp_path_factory.mktemp("synth")
    summary = make_dataset(root, 2, seed=SEED, version=VERSION, size=SIZE, scenarios=MAIN)
    return summary, NuScenes(VERSION, str(root), verbose=False), plan_scenes(2, SEED, 20.0, MAIN)


def _samples(nusc: NuScenes, scene: dict) -> list[dict]:
    out, tok = [], scene["first_sample_token"]
    while tok:
        out.append(nusc.get("sample", tok))
        tok = out[-1]["next"]
    return out


def _ego_track(nusc: NuScenes, scene: dict) -> np.ndarray:
    """(n, 3) global x, y, yaw of the ego at each key frame (LIDAR_TOP's ego poses)."""
    rows = []
    for s in _samples(nusc, scene):
        sd = nusc.get("sample_data", s["data"]["LIDAR_TOP"])
        pose = nusc.get("ego_pose", sd["ego_pose_token"])
        w, _, _, z = pose["rotation"]
        rows.append((*pose["translation"][:2], 2 * math.atan2(z, w)))
    return np.array(rows)


def _scene(nusc: NuScenes, plans, name: str):
    return next((sc, p) for sc, p in zip(nusc.scene, plans) if p.name == name)


def test_tables_load_and_link(main):
    summary, nusc, plans = main
    assert summary == {"version": VERSION, "dataroot": summary["dataroot"], "scenes": 2,
                       "samples": 80, "scenarios": {name: 1 for name in MAIN}}
    assert len(nusc.sample_data) == len(nusc.ego_pose) == 7 * len(nusc.sample)
    for scene, plan in zip(nusc.scene, plans):
        assert scene["description"] == plan.description
        assert re.fullmatch(r"synthetic: \w+; cue: CAM_\w+( zoom| history)?", scene["description"])
        samples = _samples(nusc, scene)
        assert len(samples) == scene["nbr_samples"] == 40
        assert samples[-1]["token"] == scene["last_sample_token"]
        assert all(b["timestamp"] - a["timestamp"] == 500_000 for a, b in zip(samples, samples[1:]))
        for s in samples:
            assert set(s["data"]) == set(CHANNELS)
            for ch, tok in s["data"].items():
                sd = nusc.get("sample_data", tok)
                assert sd["is_key_frame"] and sd["timestamp"] == s["timestamp"]
                assert Path(nusc.get_sample_data_path(tok)).is_file()
                assert (sd["width"], sd["height"]) == ((0, 0) if ch == "LIDAR_TOP" else SIZE)
                assert sd["fileformat"] == ("pcd" if ch == "LIDAR_TOP" else "jpg")
                if sd["next"]:
                    assert nusc.get("sample_data", sd["next"])["prev"] == tok
        log = nusc.get("log", scene["log_token"])
        map_record = nusc.get("map", log["map_token"])
        assert map_record["category"] == "semantic_prior"
        ego = _ego_track(nusc, scene)  # the ego drives on the map's drivable area
        assert map_record["mask"].is_on_mask(ego[:, 0], ego[:, 1]).all()
    for inst in nusc.instance:
        n, tok = 0, inst["first_annotation_token"]
        while tok:
            ann = nusc.get("sample_annotation", tok)
            assert ann["instance_token"] == inst["token"]
            n, last, tok = n + 1, tok, ann["next"]
        assert n == inst["nbr_annotations"] and last == inst["last_annotation_token"]
    img = Image.open(nusc.get_sample_data_path(nusc.sample[0]["data"]["CAM_BACK"]))
    assert img.size == SIZE and img.mode == "RGB"


def test_annotations_project_onto_rendered_objects(main):
    """The devkit's projection of a vehicle's box centre lands on one of its colours (a thin
    pole in front may hide a few: nine in ten is required)."""
    _, nusc, plans = main
    colours = {a.token: [np.array(a.colour, float), *LAMPS]  # body, tail / head lights
               + ([np.array(a.colour2, float)] if a.kind == "truck" else [])  # the cab
               for plan in plans for a in plan.actors}
    hits = []
    for s in nusc.sample[::3]:
        for channel in ("CAM_FRONT", "CAM_BACK"):
            path, boxes, k = nusc.get_sample_data(s["data"][channel], BoxVisibility.ALL)
            img = np.asarray(Image.open(path), float)
            for box in boxes:
                ann = nusc.get("sample_annotation", box.token)
                if not box.name.startswith("vehicle.") or ann["visibility_token"] != "4" \
                        or box.center[2] > 30:
                    continue
                u, v = np.round(view_points(box.center[:, None], k, normalize=True)[:2, 0])
                pixel = img[int(v), int(u)]
                # one of the vehicle's colours, scaled by the face's shading
                hits.append(min(np.linalg.norm(pixel - np.clip(pixel @ c / (c @ c), 0.4, 1.1) * c)
                                for c in colours[ann["instance_token"]]) < 40)
    assert len(hits) >= 10 and np.mean(hits) >= 0.9, hits


def test_lidar_depth_matches_boxes(main):
    """Lidar points mapped into CAM_FRONT by the devkit: those inside the central half of the
    braking lead car's projected box lie at its distance, at every key frame."""
    _, nusc, plans = main
    scene, plan = _scene(nusc, plans, "lead_vehicle_braking")
    lead = next(a.token for a in plan.actors if a.key)
    for s in _samples(nusc, scene):
        lidar, cam = s["data"]["LIDAR_TOP"], s["data"]["CAM_FRONT"]
        pc = LidarPointCloud.from_file(nusc.get_sample_data_path(lidar))
        assert pc.points.shape[0] == 4 and pc.points.shape[1] > 10_000
        points, depths, _ = nusc.explorer.map_pointcloud_to_image(lidar, cam)
        _, boxes, k = nusc.get_sample_data(cam, BoxVisibility.ANY)
        [box] = [b for b in boxes
                 if nusc.get("sample_annotation", b.token)["instance_token"] == lead]
        corners = view_points(box.corners(), k, normalize=True)[:2]
        lo, hi = corners.min(1), corners.max(1)
        lo, hi = lo + 0.25 * (hi - lo), hi - 0.25 * (hi - lo)
        inside = np.all((points[:2].T >= lo) & (points[:2].T <= hi), axis=1)
        assert inside.sum() >= 5
        assert abs(np.median(depths[inside]) - box.center[2]) < box.wlh[1] / 2 + 0.5
        assert nusc.get("sample_annotation", box.token)["num_lidar_pts"] >= 5


def test_ego_dynamics_carry_the_labels(main):
    """Braking by >= 3 m/s within a 2 s window, a stop that holds, and a bend that puts the
    ego more than 4 m to the left within 2 s."""
    _, nusc, plans = main
    ego = _ego_track(nusc, _scene(nusc, plans, "lead_vehicle_braking")[0])
    v = np.linalg.norm(np.diff(ego[:, :2], axis=0), axis=1) / 0.5
    assert v[0] > 7.0
    assert max(v[i] - v[i + 3] for i in range(len(v) - 3)) >= 3.0
    assert v.min() < 2.0 and v[-10:].max() < 0.5
    ego = _ego_track(nusc, _scene(nusc, plans, "turn_left")[0])
    lateral = [-math.sin(a[2]) * (b[0] - a[0]) + math.cos(a[2]) * (b[1] - a[1])
               for a, b in zip(ego, ego[4:])]  # 2 s ahead, in the ego frame
    assert max(lateral) > 4.0 and min(lateral) > -0.5


def test_traffic_light_colour_is_small_but_rendered(tmp_path):
    """Red and green lights share their geometry: only the lit lamp differs, a few pixels."""
    make_dataset(tmp_path, 2, seed=5, size=(640, 360), seconds=1.0,
                 scenarios=("red_light_far", "green_light_far"))
    nusc = NuScenes(VERSION, str(tmp_path), verbose=False)
    for scene in nusc.scene:
        red = "red_light" in scene["description"]
        sample = nusc.get("sample", scene["first_sample_token"])
        path, boxes, k = nusc.get_sample_data(sample["data"]["CAM_FRONT"])
        img = np.asarray(Image.open(path), int)
        lights = [b for b in boxes if b.name == "static_object.traffic_light"]
        assert lights
        for box in lights:
            ann = nusc.get("sample_annotation", box.token)
            names = [nusc.get("attribute", t)["name"] for t in ann["attribute_tokens"]]
            assert names == ["traffic_light.red" if red else "traffic_light.green"]
            height = np.ptp(view_points(box.corners(), k, normalize=True)[1])
            assert height < 0.1 * 360  # far away: small in the full image
            # the lit lamp: top (red) or bottom (green) of the housing's face towards the ego
            face = [box.wlh[1] / 2, 0, LAMP_DZ if red else -LAMP_DZ]
            lamp = box.center + box.rotation_matrix @ face
            u, v = np.round(view_points(lamp[:, None], k, normalize=True)[:2, 0]).astype(int)
            r, g, b = img[v - 1:v + 2, u - 1:u + 2].reshape(-1, 3).T
            assert ((r - np.maximum(g, b)) if red else (g - np.maximum(r, b))).max() > 60


def test_every_scenario_and_side_cues(tmp_path):
    """12 scenes hold every scenario; a side pedestrian is in its side camera, not CAM_FRONT."""
    summary = make_dataset(tmp_path, 12, seed=1, size=(160, 90), seconds=1.0)
    assert set(summary["scenarios"]) == set(SCENARIOS) and summary["samples"] == 24
    nusc = NuScenes(VERSION, str(tmp_path), verbose=False)
    for scene, plan in zip(nusc.scene, plan_scenes(12, 1, 1.0)):
        assert scene["description"] == plan.description
        if not plan.name.startswith("pedestrian_side"):
            continue
        key = next(a.token for a in plan.actors if a.key)
        sample = nusc.get("sample", scene["first_sample_token"])
        [ann] = [t for t in sample["anns"]
                 if nusc.get("sample_annotation", t)["instance_token"] == key]
        assert ann in {b.token for b in nusc.get_sample_data(sample["data"][plan.cue])[1]}
        assert ann not in {b.token for b in nusc.get_sample_data(sample["data"]["CAM_FRONT"])[1]}


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_deterministic_per_seed(tmp_path):
    """Same seed: the same bytes, in one process or several; another seed: other data."""
    args = dict(scenes=2, size=(160, 90), seconds=1.5)
    make_dataset(tmp_path / "a", seed=7, workers=1, **args)
    make_dataset(tmp_path / "b", seed=7, workers=2, **args)
    make_dataset(tmp_path / "c", seed=8, workers=1, **args)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_unknown_scenario_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown scenarios"):
        make_dataset(tmp_path, 1, scenarios=("flying_car",))


def test_twins_share_the_street_and_the_split(tmp_path):
    """--twins: a red light's twin is the same street with a green light (the first key frames'
    CAM_FRONT differ only around the lamps), and the held-out split keeps twins together."""
    from vlmagent.domains.driving import _heldout_scenes

    assert [p.name for p in plan_scenes(9, 3, 1.0)] == [  # without twins: as it always was
        p.name for p in plan_scenes(9, 3, 1.0, twins=False)]
    plans = plan_scenes(24, 3, 1.0, twins=True)
    for a, b in zip(plans, plans[1:]):
        if a.name == "red_light_far":
            assert b.name == "green_light_far" and a.draw == b.draw is not None
    make_dataset(tmp_path, 2, seed=4, size=(320, 180), seconds=1.0, twins=True,
                 scenarios=("red_light_far", "green_light_far"))
    nusc = NuScenes(VERSION, str(tmp_path), verbose=False)
    imgs = []
    for scene in nusc.scene:
        sample = nusc.get("sample", scene["first_sample_token"])
        imgs.append(np.asarray(Image.open(nusc.get_sample_data_path(
            sample["data"]["CAM_FRONT"])), int))
    diff = np.abs(imgs[0] - imgs[1]).max(2) > 40
    assert 0 < diff.sum() < 60  # the lit / unlit lamps only (JPEG noise stays under 40)
    assert len(_heldout_scenes(nusc, VERSION)) == 2  # one pair: both held out, or neither
