"""The DriveAgent-R1 tools (tools/drive.py) and the devkit helpers under them (drive/nusc.py)
on a small generated dataset in the nuScenes layout, read through the real devkit.

Expected values are computed independently of the code under test where it matters: earlier
frames by scanning every sample_data record of the channel, boxes by transforming the raw
annotations (global -> ego -> camera) with pyquaternion, crops from the dataset's files.
"""
from __future__ import annotations

import base64
import io
import json
import math
import socket
import threading
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlmagent.drive import nusc as nu
from vlmagent.images import QWEN2_5_VL_DEFAULT, load_image
from vlmagent.protocol import FORMATS, IMAGE, dispatch
from vlmagent.tools import TOOLS, ToolEnv, make_tools
from vlmagent.tools.drive import NEEDS_SAMPLE
from vlmagent.types import Sample, ToolCall

SEEN = QWEN2_5_VL_DEFAULT.seen_size
VERSION = "v1.0-synth"
SIZE = (480, 270)


# ---------------------------------------------------------------- data and helpers
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, object]:
    from vlmagent.drive.synth import make_dataset

    root = tmp_path_factory.mktemp("nusc")
    make_dataset(root, 2, seed=0, version=VERSION, size=SIZE, seconds=10.0)
    return root, nu.load_nusc(root, VERSION)


def env_for(root: Path, token: str, **kw) -> ToolEnv:
    meta = {"drive": {"dataroot": str(root), "version": VERSION, "sample_token": token}}
    return ToolEnv.from_sample(Sample(id=token, prompt="", meta=meta), shown=[],
                               seen_size=kw.pop("seen_size", SEEN), **kw)


def scene_samples(nusc, scene: int = 0) -> list[str]:
    token, out = nusc.scene[scene]["first_sample_token"], []
    while token:
        out.append(token)
        token = nusc.get("sample", token)["next"]
    return out


def call(name: str, args: dict, env: ToolEnv, **kw):
    tools = {name: TOOLS[name](**kw)}
    return dispatch(ToolCall(name, args), tools, env)


def pixels(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"))


def closest_record(nusc, token: str, channel: str, seconds: float) -> dict:
    """By brute force over every record of the channel in the sample's scene."""
    sample = nusc.get("sample", token)
    key = nusc.get("sample_data", sample["data"][channel])
    scene = sample["scene_token"]
    recs = [sd for sd in nusc.sample_data if sd["channel"] == channel
            and nusc.get("sample", sd["sample_token"])["scene_token"] == scene
            and sd["timestamp"] <= key["timestamp"]]
    return min(recs, key=lambda sd: abs(sd["timestamp"] - (key["timestamp"] - seconds * 1e6)))


def annotations_in_camera(nusc, token: str, camera: str) -> list[dict]:
    """Annotated boxes in a camera frame, from the raw tables (not the devkit's Box path)."""
    from pyquaternion import Quaternion

    sample = nusc.get("sample", token)
    sd = nusc.get("sample_data", sample["data"][camera])
    pose = nusc.get("ego_pose", sd["ego_pose_token"])
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    k = np.array(cs["camera_intrinsic"])
    q_pose, q_cs = Quaternion(pose["rotation"]), Quaternion(cs["rotation"])
    out = []
    for ann_token in sample["anns"]:
        ann = nusc.get("sample_annotation", ann_token)
        w, length, h = ann["size"]
        corners = np.array([[sx * length / 2, sy * w / 2, sz * h / 2] for sx in (1, -1)
                            for sy in (1, -1) for sz in (1, -1)]).T
        world = Quaternion(ann["rotation"]).rotation_matrix @ corners + \
            np.array(ann["translation"])[:, None]
        pts = np.column_stack([world, ann["translation"]])  # 8 corners + the centre
        ego = q_pose.rotation_matrix.T @ (pts - np.array(pose["translation"])[:, None])
        cam = q_cs.rotation_matrix.T @ (ego - np.array(cs["translation"])[:, None])
        if (cam[2, :8] <= 0.1).any():
            continue
        uv = (k @ cam[:, :8])[:2] / cam[2, :8]
        inside = (uv[0] > 0) & (uv[0] < sd["width"]) & (uv[1] > 0) & (uv[1] < sd["height"]) \
            & (cam[2, :8] > 1)
        if not inside.any():
            continue
        x, _, z = cam[:, 8]
        out.append({"class": ann["category_name"], "distance": math.hypot(x, z), "x": x, "z": z,
                    "near": float(cam[2, :8].min()), "u": float(uv[0].mean()),
                    "box2d": [max(0, uv[0].min()), max(0, uv[1].min()),
                              min(sd["width"], uv[0].max()), min(sd["height"], uv[1].max())]})
    return sorted(out, key=lambda a: a["distance"])


def listed(text: str) -> list[tuple[str, float]]:
    """(class, distance) of each numbered line of a detect_3d_objects answer."""
    out = []
    for line in text.splitlines():
        head, _, rest = line.partition(": ")
        if head.split(". ")[0].isdigit() and " m away" in rest:
            out.append((head.split(". ", 1)[1], float(rest.split(" m away")[0])))
    return out


def history_sample(nusc) -> str:
    """A key frame with at least 2 s of scene before it."""
    samples = scene_samples(nusc)
    t0 = nusc.get("sample", samples[0])["timestamp"]
    return next(s for s in samples if nusc.get("sample", s)["timestamp"] - t0 >= 2.6e6)


# ---------------------------------------------------------------- devkit helpers
def test_camera_frame_walks_back_to_the_closest_record(data):
    _, nusc = data
    token = history_sample(nusc)
    for camera in ("CAM_FRONT", "CAM_BACK_LEFT", nu.LIDAR):
        for seconds in (0.0, 1.0, 2.0):
            rec = nu.camera_frame(nusc, token, camera, seconds)
            assert rec["token"] == closest_record(nusc, token, camera, seconds)["token"]
            assert nu.seconds_before(nusc, token, rec) == pytest.approx(seconds, abs=0.1)


class SweepChain:
    """Just enough of NuScenes.get for camera_frame: one channel at 12 Hz (sweeps between key
    frames, as in real nuScenes), starting 1.4 s before the key frame."""

    def __init__(self):
        stamps = [10_000_000 - round(i * 1e6 / 12) for i in range(17)][::-1]
        self.sd = {f"sd{i}": {"token": f"sd{i}", "timestamp": t, "channel": "CAM_FRONT",
                              "prev": f"sd{i - 1}" if i else ""} for i, t in enumerate(stamps)}
        self.sample = {"s": {"data": {"CAM_FRONT": "sd16"}, "timestamp": stamps[-1]}}

    def get(self, table: str, token: str) -> dict:
        return (self.sd if table == "sample_data" else self.sample)[token]


def test_camera_frame_picks_the_closest_sweep():
    chain = SweepChain()
    for seconds, want in ((0.0, "sd16"), (0.5, "sd10"), (1.0, "sd4"), (2.0, "sd0")):
        rec = nu.camera_frame(chain, "s", "CAM_FRONT", seconds)
        assert rec["token"] == want, (seconds, rec["token"])
    assert nu.seconds_before(chain, "s", nu.camera_frame(chain, "s", "CAM_FRONT", 1.0)) == \
        pytest.approx(1.0, abs=1 / 24)


def test_class_filter_terms():
    assert nu.class_terms("construction cone . barrier") == ["construction cone", "barrier"]
    assert nu.class_terms("car, pedestrian") == ["car", "pedestrian"]
    assert nu.class_terms("  ") == []
    assert nu.class_matches("vehicle.car", ["cars"])
    assert nu.class_matches("human.pedestrian.adult", ["person"])
    assert nu.class_matches("movable_object.trafficcone", ["traffic cone"])
    assert nu.class_matches("vehicle.bus.rigid", ["buses"])
    assert not nu.class_matches("vehicle.truck", ["car"])
    assert nu.class_matches("vehicle.truck", [])


# ---------------------------------------------------------------- get_view_with_frame
def test_get_view_with_frame_returns_the_file_of_that_camera_and_time(data):
    root, nusc = data
    token = history_sample(nusc)
    env = env_for(root, token)
    for view, frame in ((0, 0), (2, 1), (4, 2)):
        result = call("get_view_with_frame", {"view_index": view, "frame_index": frame}, env)
        assert result.error is None, result.error
        camera = nu.CAMERAS[view]
        rec = closest_record(nusc, token, camera, frame)
        want = load_image(root / rec["filename"])
        assert np.array_equal(pixels(result.images[0]), pixels(want))
        assert result.text.startswith(camera)
        assert (nu.FRAMES[frame] if frame else "current frame") in result.text
        assert "earliest" not in result.text
    assert list(env.images) == ["tool_1", "tool_2", "tool_3"]
    assert env.images["tool_3"].seen == SEEN(*SIZE)
    assert "tool_3" in result.text and "2.00 s before" in result.text


def test_get_view_with_frame_at_the_start_of_a_scene(data):
    root, nusc = data
    first = scene_samples(nusc)[0]
    result = call("get_view_with_frame", {"view_index": 3, "frame_index": 2},
                  env_for(root, first))
    assert result.error is None
    key = nusc.get("sample_data", nusc.get("sample", first)["data"]["CAM_BACK"])
    assert np.array_equal(pixels(result.images[0]), pixels(load_image(root / key["filename"])))
    assert "earliest frame" in result.text


def test_bad_arguments_name_the_problem(data):
    root, nusc = data
    env = env_for(root, history_sample(nusc))
    cases = {
        ("get_view_with_frame", '{"view_index": 6, "frame_index": 0}'):
            "argument 'view_index': must be <= 5, got 6",
        ("get_view_with_frame", '{"view_index": 0, "frame_index": 3}'):
            "argument 'frame_index': must be <= 2, got 3",
        ("get_view_with_frame", '{"view_index": "front", "frame_index": 0}'):
            "argument 'view_index': expected integer, got string 'front'",
        ("get_view_with_frame", '{"view_index": 1.5, "frame_index": 0}'):
            "argument 'view_index': expected integer",
        ("get_view_with_frame", '{"view_index": 0}'): "missing required argument 'frame_index'",
        ("RoI_Inspection", '{"view_index": 0}'): "missing required argument 'bbox'",
        ("RoI_Inspection", '{"view_index": 0, "bbox": [1, 2, 3]}'):
            "argument 'bbox': expected exactly 4 items, got 3",
        ("RoI_Inspection", '{"view_index": -1, "bbox": [0, 0, 100, 100]}'):
            "argument 'view_index': must be >= 0, got -1",
        ("depth_estimation", '{"view_index": true}'):
            "argument 'view_index': expected integer, got boolean True",
        ("detect_3d_objects", '{"view_index": 0, "object_text": 3}'):
            "argument 'object_text': expected string, got integer 3",
    }
    for (name, params), want in cases.items():
        text = f"<call_tool><tool_name>{name}</tool_name><params>{params}</params></call_tool>"
        result = dispatch(FORMATS["drive"].parse(text), make_tools([name]), env)
        assert result.error is not None and want in result.error, (name, params, result.error)
        assert not result.images
    assert not env.images


def test_no_driving_sample_is_an_error(data, tmp_path):
    root, nusc = data
    args = {"get_view_with_frame": {"view_index": 0, "frame_index": 0},
            "RoI_Inspection": {"view_index": 0, "bbox": [0, 0, 200, 200]},
            "depth_estimation": {"view_index": 0}, "detect_3d_objects": {"view_index": 0}}
    plain = ToolEnv.from_sample(Sample(id="x", prompt=""), seen_size=SEEN)
    bare = ToolEnv(seen_size=SEEN)
    for name, a in args.items():
        for env in (plain, bare):
            assert call(name, a, env).error == f"{name}: {NEEDS_SAMPLE}"
    token = history_sample(nusc)
    wrong = env_for(root, "nope")
    assert "unknown sample_token 'nope'" in call("depth_estimation", {"view_index": 0},
                                                 wrong).error
    elsewhere = env_for(tmp_path, token)
    assert "could not load nuScenes v1.0-synth from" in call("depth_estimation",
                                                             {"view_index": 0}, elsewhere).error
    no_rule = env_for(root, token, seen_size=None)
    assert "no seen_size rule" in call("get_view_with_frame",
                                       {"view_index": 0, "frame_index": 0}, no_rule).error


def test_missing_image_file_is_an_error(data, tmp_path):
    root, nusc = data
    token = history_sample(nusc)
    # a copy of the dataset's tables without its images
    for folder in (VERSION, "maps"):
        (tmp_path / folder).symlink_to(root / folder)
    result = call("get_view_with_frame", {"view_index": 1, "frame_index": 0},
                  env_for(tmp_path, token))
    assert "the image of CAM_FRONT_LEFT (front left camera) could not be loaded" in result.error


# ---------------------------------------------------------------- RoI_Inspection
def expected_box(box, size, seen):
    """Seen -> original by exact rational arithmetic, rounding half up (as test_tools)."""
    sx, sy = Fraction(size[0], seen[0]), Fraction(size[1], seen[1])
    return tuple(math.floor(Fraction(v) * s + Fraction(1, 2))
                 for v, s in zip(box, (sx, sy, sx, sy), strict=True))


def test_roi_inspection_crops_the_original_and_upscales(data):
    root, nusc = data
    token = history_sample(nusc)
    env = env_for(root, token)
    seen = SEEN(*SIZE)
    rec = nusc.get("sample_data", nusc.get("sample", token)["data"]["CAM_FRONT_RIGHT"])
    original = load_image(root / rec["filename"])
    box = [101, 47, 233, 160]
    result = call("RoI_Inspection", {"view_index": 2, "bbox": box,
                                     "description": "the car on the right"}, env)
    assert result.error is None, result.error
    ob = expected_box(box, SIZE, seen)
    ow, oh = ob[2] - ob[0], ob[3] - ob[1]
    scale = max(1, seen[0] / 2 / ow, seen[1] / 2 / oh)
    size = (math.floor(ow * scale + 1e-6), math.floor(oh * scale + 1e-6))
    want = original.crop(ob).resize(size, Image.Resampling.LANCZOS)
    got = result.images[0]
    assert got.size == size and got.width >= seen[0] / 2 and got.height >= seen[1] / 2
    assert np.array_equal(pixels(got), pixels(want))
    assert f"original pixels [{', '.join(map(str, ob))}]" in result.text
    assert "CAM_FRONT_RIGHT" in result.text and "the car on the right" in result.text
    # the whole image: no upscaling needed, the original pixels themselves
    whole = call("RoI_Inspection", {"view_index": 2, "bbox": [0, 0, *seen]}, env)
    assert np.array_equal(pixels(whole.images[0]), pixels(original))
    # a small overhang is clipped, as crop does
    over = call("RoI_Inspection", {"view_index": 2, "bbox": [-5, 0, 200, 150]}, env)
    assert over.error is None and "clipped from [-5, 0, 200, 150]" in over.text
    assert list(env.images) == ["tool_1", "tool_2", "tool_3"]


def test_roi_inspection_rejects_tiny_and_outside_boxes(data):
    root, nusc = data
    env = env_for(root, history_sample(nusc))
    tiny = call("RoI_Inspection", {"view_index": 0, "bbox": [10, 10, 35, 120]}, env).error
    assert tiny.startswith("RoI_Inspection: argument 'bbox': bbox [10, 10, 35, 120] is too small")
    assert "each side must exceed 28" in tiny
    outside = call("RoI_Inspection", {"view_index": 0, "bbox": [400, 0, 900, 100]}, env).error
    assert "lies mostly outside the image" in outside and "x in [0, 476]" in outside
    inverted = call("RoI_Inspection", {"view_index": 0, "bbox": [200, 10, 100, 100]}, env).error
    assert "inverted or empty" in inverted
    assert not env.images


# ---------------------------------------------------------------- detect_3d_objects
def busy_view(nusc) -> tuple[str, int, list[dict]]:
    """A (key frame, view) with the most annotated objects in view (at least 2)."""
    best = max(((s, v, annotations_in_camera(nusc, s, c)) for s in scene_samples(nusc)
                for v, c in enumerate(nu.CAMERAS)), key=lambda t: len(t[2]))
    assert len(best[2]) >= 2, "the generated dataset has no view with two objects"
    return best


def test_detect_3d_objects_lists_the_annotations_in_view(data):
    root, nusc = data
    token, view, anns = busy_view(nusc)
    env = env_for(root, token)
    result = call("detect_3d_objects", {"view_index": view}, env)
    assert result.error is None, result.error
    assert result.text.startswith("ORACLE (ground-truth annotations, not a detector): "
                                  f"{len(anns)} object(s) in {nu.CAMERAS[view]}")
    got = listed(result.text)
    assert len(got) == min(len(anns), 8)
    for (cls, dist), ann in zip(got, anns, strict=False):
        assert cls == ann["class"] and dist == pytest.approx(ann["distance"], abs=0.051)
    assert "ORACLE" in TOOLS["detect_3d_objects"]().description
    # the drawn boxes: the nearest object's projection is outlined on a copy of the image
    rec = nusc.get("sample_data", nusc.get("sample", token)["data"][nu.CAMERAS[view]])
    original = pixels(load_image(root / rec["filename"]))
    drawn = pixels(result.images[0])
    assert drawn.shape == original.shape and (drawn != original).any()
    x0, y0, x1, y1 = (round(v) for v in anns[0]["box2d"])
    edge = drawn[min(y1, SIZE[1] - 1) - 1, x0 + 2: x1 - 2]
    assert (edge != original[min(y1, SIZE[1] - 1) - 1, x0 + 2: x1 - 2]).any()
    # boxes_in_view agrees with the raw transform
    boxes = nu.boxes_in_view(nusc, rec["token"])
    assert [b["class"] for b in boxes] == [a["class"] for a in anns]
    for b, a in zip(boxes, anns, strict=True):
        assert b["distance"] == pytest.approx(a["distance"], abs=1e-6)
        assert b["center"][0] == pytest.approx(a["x"], abs=1e-6)
        assert b["box2d"] == pytest.approx(a["box2d"], abs=1e-6)


def test_detect_3d_objects_filters_by_object_text(data):
    root, nusc = data
    token, view, anns = busy_view(nusc)
    env = env_for(root, token)
    classes = sorted({a["class"] for a in anns})
    want = classes[0]
    short = want.split(".")[1]  # "vehicle.car" -> "car"
    result = call("detect_3d_objects", {"view_index": view, "object_text": short}, env)
    kept = [a for a in anns if short in a["class"]]
    assert f"{len(kept)} object(s) matching {short!r}" in result.text
    assert [c for c, _ in listed(result.text)] == [a["class"] for a in kept][:8]
    none = call("detect_3d_objects", {"view_index": view, "object_text": "zebra"}, env)
    assert none.error is None and "0 object(s) matching 'zebra'" in none.text
    assert np.array_equal(pixels(none.images[0]), pixels(load_image(
        root / nusc.get("sample_data", nusc.get("sample", token)["data"][nu.CAMERAS[view]])[
            "filename"])))


class Detector(BaseHTTPRequestHandler):
    """Answers every POST with fixed boxes (or, on /bad, with a malformed reply)."""

    requests: list[dict] = []
    boxes = [{"class": "vehicle.truck", "center": [4.0, 1.0, 20.0], "size": [2.5, 8.0, 3.0],
              "yaw": 0.1, "box2d": [300, 100, 400, 180]},
             {"class": "human.pedestrian.adult", "center": [-3.0, 1.0, 4.0]}]

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Detector.requests.append(body)
        bad = {"boxes": [{"class": 3, "center": [0, 0, 1]}]}
        reply = bad if self.path == "/bad" else {"boxes": self.boxes}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_detect_3d_objects_endpoint(data, monkeypatch):
    root, nusc = data
    token, view, _ = busy_view(nusc)
    env = env_for(root, token)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Detector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        result = call("detect_3d_objects", {"view_index": view}, env, endpoint=url + "/detect")
        assert result.error is None, result.error
        assert result.text.startswith(f"3D detector: 2 object(s) in {nu.CAMERAS[view]}")
        assert "ORACLE" not in result.text
        assert listed(result.text) == [("human.pedestrian.adult", 5.0), ("vehicle.truck", 20.4)]
        assert "unknown size" in result.text and "2.5x8.0x3.0 m" in result.text
        sent = Detector.requests[-1]
        assert sent["camera"] == nu.CAMERAS[view] and len(sent["intrinsic"]) == 3
        assert Image.open(io.BytesIO(base64.b64decode(sent["image"]))).size == SIZE
        only = call("detect_3d_objects", {"view_index": view, "object_text": "truck"}, env,
                    endpoint=url)
        assert listed(only.text) == [("vehicle.truck", 20.4)]
        bad = call("detect_3d_objects", {"view_index": view}, env, endpoint=url + "/bad")
        assert bad.error.startswith(f"detect_3d_objects: detector at {url}/bad failed: "
                                    "unexpected reply: field 'boxes[0].class': expected string")
        monkeypatch.setenv("VLMAGENT_DETECTOR_URL", url)
        tool = make_tools(["detect_3d_objects"])["detect_3d_objects"]
        assert tool.endpoint == url and "ORACLE" not in tool.description
        assert dispatch(ToolCall("detect_3d_objects", {"view_index": view}),
                        {"detect_3d_objects": tool}, env).error is None
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = call("detect_3d_objects", {"view_index": view}, env,
                endpoint=f"http://127.0.0.1:{port}/detect")
    assert down.error.startswith(f"detect_3d_objects: detector at http://127.0.0.1:{port}/detect "
                                 "failed: URLError")
    assert not down.images


# ---------------------------------------------------------------- depth_estimation
def test_depth_estimation_measures_the_object_ahead(data):
    root, nusc = data
    w = SIZE[0]
    # the first CAM_FRONT key frame whose nearest annotated object lies within one image third
    for token in scene_samples(nusc):
        anns = annotations_in_camera(nusc, token, "CAM_FRONT")
        if anns:
            near = min(anns, key=lambda a: a["near"])
            third = int(near["box2d"][0] // (w / 3))
            if third == int(min(near["box2d"][2], w - 1) // (w / 3)):
                break
    else:
        pytest.fail("no CAM_FRONT view with an object inside one third of the image")
    env = env_for(root, token)
    result = call("depth_estimation", {"view_index": 0}, env)
    assert result.error is None, result.error
    side = ("left", "centre", "right")[third]
    reported = float(result.text.split(f"{side} ")[-1].split(" m")[0])
    assert reported == pytest.approx(near["near"], abs=1.0), (result.text, near)
    assert "LiDAR" in result.text and "LiDAR" in TOOLS["depth_estimation"]().description
    # the map: LiDAR points drawn turbo-coloured, near warm (red > blue), far cold
    uv, depth, size = nu.lidar_depth(nusc, token, "CAM_FRONT")
    assert size == SIZE and uv.shape == (2, depth.size) and depth.min() > nu.MIN_DIST
    img = pixels(result.images[0]).astype(int)
    assert img.shape == (SIZE[1], SIZE[0], 3)
    for pick, warm in ((depth.argmin(), True), (depth.argmax(), False)):
        if not warm and depth[pick] < 40:
            continue
        r, _, b = img[round(uv[1, pick]), round(uv[0, pick])]
        assert (r > b) == warm, (depth[pick], r, b)
    assert "tool_1" in result.text and list(env.images) == ["tool_1"]


def test_drive_call_end_to_end(data):
    """The drive wire format, dispatch and the environment, as the agent runs a call."""
    root, nusc = data
    token = history_sample(nusc)
    env = env_for(root, token)
    assert env.sample.meta["drive"]["sample_token"] == token
    tools = make_tools(["get_view_with_frame", "RoI_Inspection", "depth_estimation",
                        "detect_3d_objects"])
    fmt = FORMATS["drive"]
    text = ('<call_tool><tool_name>RoI_Inspection</tool_name><params>{"view_index": 0, '
            '"bbox": [100, 60, 300, 200], "description": "lead car"}</params></call_tool>')
    result = dispatch(fmt.parse(text), tools, env)
    assert result.error is None and len(result.images) == 1
    assert env.images["tool_1"].image is result.images[0]
    rendered = fmt.render_result(result.text, len(result.images))
    assert rendered == f"<tool_result> {result.text} {IMAGE} </tool_result>"
    for tool in tools.values():
        spec = tool.spec()["function"]
        assert spec["parameters"]["properties"]["view_index"]["maximum"] == 5
        assert "CAM_BACK_LEFT" in spec["description"]
