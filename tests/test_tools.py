"""Tools: the schema checker, crop/zoom coordinate mapping, views, rendering, and the tool
environment's seen-size rule (handed in, never guessed). The rule itself: test_images.py."""
from __future__ import annotations

import io
import random
from fractions import Fraction
from math import floor

import numpy as np
import pytest
from PIL import Image

from vlmagent.images import QWEN2_5_VL_DEFAULT
from vlmagent.protocol import dispatch
from vlmagent.tools import TOOLS, ToolEnv, make_tools, validate
from vlmagent.tools.image import MAX_OUT_PIXELS, to_original, to_seen
from vlmagent.types import Sample, ToolCall

# The expected numbers below (seen sizes, error texts) are those of a Qwen2.5-VL processor
# under the agent's default 56x56..448x448 budget, named as such in images.py.
SEEN = QWEN2_5_VL_DEFAULT.seen_size


# ---------------------------------------------------------------- validate
def test_validate_types_and_bounds():
    assert validate(3, {"type": "integer"}) is None
    assert validate(3.0, {"type": "integer"}) is None  # JSON Schema: 3.0 is an integer
    assert validate(3.5, {"type": "integer"}) == "the arguments: expected integer, got number 3.5"
    assert validate(True, {"type": "integer"}).endswith("got boolean True")
    assert validate(False, {"type": "number"}).endswith("got boolean False")
    assert validate(1, {"type": "boolean"}).endswith("expected boolean, got integer 1")
    assert validate(None, {"type": ["string", "null"]}) is None
    assert validate(float("nan"), {"type": "number"}) == \
        "the arguments: expected a finite number, got nan"
    assert validate(0.5, {"type": "number", "minimum": 1}) == \
        "the arguments: must be >= 1, got 0.5"
    assert validate("x", {"enum": ["a", "b"]}) == "the arguments: must be one of ['a', 'b'], " \
                                                  "got string 'x'"
    assert validate("abc", {"type": "string", "maxLength": 2}).endswith("at most 2 characters, "
                                                                          "got 3")


def test_validate_objects_and_arrays():
    schema = {"type": "object", "additionalProperties": False, "required": ["a"],
              "properties": {"a": {"type": "object", "required": ["b"],
                                   "properties": {"b": {"type": "array", "minItems": 1,
                                                        "maxItems": 2,
                                                        "items": {"type": "integer"}}}},
                             "c": {"type": "string"}}}
    assert validate({"a": {"b": [1]}}, schema) is None
    assert validate({}, schema) == "missing required argument 'a'"
    assert validate({"a": {}}, schema) == "missing required argument 'a.b'"
    assert validate({"a": {"b": []}}, schema) == \
        "argument 'a.b': expected 1 to 2 items, got 0"
    assert validate({"a": {"b": [1, "2"]}}, schema) == \
        "argument 'a.b[1]': expected integer, got string '2'"
    assert validate({"a": {"b": [1]}, "d": 1}, schema) == \
        "unexpected argument 'd' (allowed: a, c)"
    assert validate([], schema) == "the arguments: expected object, got array []"


# ---------------------------------------------------------------- crop / zoom mapping
def coord_image(w: int, h: int) -> Image.Image:
    """Every pixel encodes its own (x, y): R = x mod 256, G = y mod 256, B = high bits."""
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x & 255, y & 255, (x >> 8) | ((y >> 8) << 4)], -1).astype(np.uint8)
    return Image.fromarray(arr)


def decode(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    arr = arr.astype(int)
    return arr[..., 0] | ((arr[..., 2] & 15) << 8), arr[..., 1] | ((arr[..., 2] >> 4) << 8)


def expected_box(box, size, seen):
    """Seen -> original by exact rational arithmetic, rounding half up."""
    sx, sy = Fraction(size[0], seen[0]), Fraction(size[1], seen[1])
    return tuple(floor(Fraction(v) * s + Fraction(1, 2))
                 for v, s in zip(box, (sx, sy, sx, sy), strict=True))


def env_with(image: Image.Image, **kw) -> ToolEnv:
    env = ToolEnv(**{"seen_size": SEEN, **kw})
    env.add_image(image, "image")
    return env


@pytest.mark.parametrize("size", [(1001, 667), (449, 449), (450, 300), (1999, 1003), (40, 30)])
def test_crop_maps_seen_box_to_exact_original_pixels(size):
    image = coord_image(*size)
    original = np.asarray(image)
    crop = make_tools(["crop"])["crop"]
    seen = SEEN(*size)
    rng = random.Random(1)
    checked = 0
    boxes = [(0, 0, *seen)]  # the whole image, then random boxes
    for _ in range(25):
        x0, x1 = sorted(rng.sample(range(seen[0] + 1), 2))
        y0, y1 = sorted(rng.sample(range(seen[1] + 1), 2))
        boxes.append((x0, y0, x1, y1))
    for x0, y0, x1, y1 in boxes:
        env = env_with(image)
        assert env.images["image"].seen == seen
        ex0, ey0, ex1, ey1 = expected_box((x0, y0, x1, y1), size, seen)
        assert to_original((x0, y0, x1, y1), size, seen) == (ex0, ey0, ex1, ey1)
        result = crop({"bbox": [x0, y0, x1, y1]}, env)
        if ex1 - ex0 <= 28 or ey1 - ey0 <= 28:
            assert "too small" in result.error
            continue
        assert result.error is None, result.error
        out = result.images[0]
        want = Image.fromarray(original[ey0:ey1, ex0:ex1])
        if out.size == (ex1 - ex0, ey1 - ey0):  # no upsampling needed: pixel-exact
            xs, ys = decode(np.asarray(out))
            assert (xs[0, 0], ys[0, 0], xs[-1, -1], ys[-1, -1]) == (ex0, ey0, ex1 - 1, ey1 - 1)
            assert np.array_equal(np.asarray(out), original[ey0:ey1, ex0:ex1])
        else:  # upsampled from exactly that region
            assert out.width >= seen[0] / 2 - 0.5 and out.height >= seen[1] / 2 - 0.5
            assert np.array_equal(np.asarray(out),
                                  np.asarray(want.resize(out.size, Image.Resampling.BICUBIC)))
        assert f"original pixels [{ex0}, {ey0}, {ex1}, {ey1}]" in result.text
        checked += 1
    assert checked >= 1


@pytest.mark.parametrize("size", [(1001, 667), (450, 300), (1999, 1003), (40, 30), (3000, 200)])
def test_box_round_trips(size):
    seen = SEEN(*size)
    rng = random.Random(2)
    for _ in range(300):
        x0, x1 = sorted(rng.sample(range(size[0] + 1), 2))
        y0, y1 = sorted(rng.sample(range(size[1] + 1), 2))
        sb = to_seen((x0, y0, x1, y1), size, seen)
        back = to_original(sb, size, seen)
        # original -> seen (rounded out) -> original covers the box, by at most one seen pixel
        sx, sy = size[0] / seen[0], size[1] / seen[1]
        assert back[0] <= x0 and back[1] <= y0 and back[2] >= x1 and back[3] >= y1
        assert x0 - back[0] <= sx + 1 and back[2] - x1 <= sx + 1
        assert y0 - back[1] <= sy + 1 and back[3] - y1 <= sy + 1
        # seen -> original -> seen gives the box back within one seen pixel
        s0, s1 = sorted(rng.sample(range(seen[0] + 1), 2))
        t0, t1 = sorted(rng.sample(range(seen[1] + 1), 2))
        again = to_seen(to_original((s0, t0, s1, t1), size, seen), size, seen)
        assert all(abs(a - b) <= 1 for a, b in zip(again, (s0, t0, s1, t1), strict=True))


def test_zoom_recovers_detail_the_model_could_not_see():
    """A 1-px checkerboard: flat grey after the processor's resize, crisp after the zoom."""
    size = (1600, 1200)
    arr = np.full((size[1], size[0], 3), 128, np.uint8)
    y, x = np.mgrid[600:700, 800:900]
    arr[600:700, 800:900] = (((x + y) % 2) * 255)[..., None]
    image = Image.fromarray(arr)
    env = env_with(image)
    seen = env.images["image"].seen
    assert seen == (504, 364)
    box = to_seen((800, 600, 900, 700), size, seen)
    seen_img = image.resize(seen, Image.Resampling.BICUBIC)  # what the model got
    seen_crop = np.asarray(seen_img.crop((box[0] + 2, box[1] + 2, box[2] - 2, box[3] - 2)))
    result = make_tools(["zoom"])["zoom"]({"bbox": list(box), "factor": 2}, env)
    assert result.error is None
    out = result.images[0]
    out_seen = out.resize(env.images["tool_1"].seen, Image.Resampling.BICUBIC)  # model's view
    o = to_original(box, size, seen)
    k = out_seen.width / (o[2] - o[0])
    inner = np.asarray(out_seen.crop((round((810 - o[0]) * k), round((610 - o[1]) * k),
                                      round((890 - o[0]) * k), round((690 - o[1]) * k))))
    assert seen_crop.std() < 3  # the pattern is gone at the model's resolution
    assert inner.std() > 60  # the zoom shows it: >= 2 output px per original px
    assert k >= 2


def test_zoom_and_crop_sizes():
    size = (1001, 667)
    env = env_with(coord_image(*size))
    tools = make_tools(["crop", "zoom"])
    big = [0, 0, 400, 300]  # 753x550 original: no upsampling needed for crop
    assert tools["crop"]({"bbox": big}, env).images[0].size == (753, 550)
    assert tools["zoom"]({"image": "image", "bbox": big}, env).images[0].size == (1506, 1100)
    out = tools["zoom"]({"image": "image", "bbox": big, "factor": 2.5}, env).images[0]
    assert out.size == (1882, 1375)
    small = tools["crop"]({"image": "image", "bbox": [0, 0, 20, 20]}, env).images[0]
    assert small.size == (266, 259)  # 38x37 original, upsampled to >= half of (532, 364)
    huge = env_with(Image.new("RGB", (4000, 3000)))
    out = tools["zoom"]({"bbox": [0, 0, 252, 182], "factor": 4}, huge).images[0]
    assert 2000 * 1500 < out.width * out.height <= MAX_OUT_PIXELS  # upsampling is capped


def test_tool_outputs_are_named_and_reusable():
    env = env_with(coord_image(1001, 667))
    zoom = make_tools(["zoom"])["zoom"]
    first = zoom({"bbox": [100, 100, 300, 250]}, env)
    assert "of image 'image' at bbox [100, 100, 300, 250] (original pixels [188, 183, 564, 458])" \
        ": new image 'tool_1'" in first.text
    assert list(env.images) == ["image", "tool_1"]
    t1 = env.images["tool_1"]
    assert t1.image is first.images[0] and t1.seen == SEEN(*t1.image.size)
    # No image named: the most recent one (tool_1), in ITS seen frame.
    second = zoom({"bbox": [0, 0, t1.seen[0] // 2, t1.seen[1] // 2]}, env)
    assert "of image 'tool_1'" in second.text and list(env.images)[-1] == "tool_2"
    again = zoom({"image": "image", "bbox": [100, 100, 300, 250]}, env)
    assert "new image 'tool_3'" in again.text
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(first.images[0]))


def test_custom_seen_size_is_used():
    env = env_with(coord_image(1000, 800), seen_size=lambda w, h: (w // 4, h // 4))
    assert env.images["image"].seen == (250, 200)
    out = make_tools(["crop"])["crop"]({"bbox": [10, 20, 110, 120]}, env)
    xs, ys = decode(np.asarray(out.images[0]))
    assert (xs[0, 0], ys[0, 0], xs[-1, -1], ys[-1, -1]) == (40, 80, 439, 479)


def test_env_without_a_seen_size_rule_refuses_images():
    """No guessed default: an env that was not told the model's rule cannot hold an image, and a
    tool that tries to add one reports it instead of working in a wrong frame."""
    with pytest.raises(ValueError, match="ToolEnv.seen_size is not set"):
        ToolEnv().add_image(coord_image(100, 80), "image")
    env = ToolEnv(views={"back": coord_image(100, 80)})
    result = make_tools(["retrieve_view"])["retrieve_view"]({"view": "back"}, env)
    assert "ToolEnv.seen_size is not set" in result.error and not env.images


BAD_BOXES = {
    "inverted": ([300, 300, 200, 200], "is inverted or empty: use [x0, y0, x1, y1] with x0 < x1 "
                                       "and y0 < y1; valid range for image 'image' as you see "
                                       "it: x in [0, 532], y in [0, 364]"),
    "empty": ([10, 10, 10, 50], "is inverted or empty"),
    "outside": ([600, 400, 700, 500], "lies mostly outside the image; valid range for image "
                                      "'image' as you see it: x in [0, 532], y in [0, 364]"),
    "mostly outside": ([-200, 0, 100, 100], "lies mostly outside"),
    "too small": ([10, 10, 20, 60], "is too small: it covers 19x92 original pixels and each "
                                    "side must exceed 28: make it more than 14.9 px wide and "
                                    "15.3 px tall in image 'image' as you see it (532x364)"),
}


@pytest.mark.parametrize("name", list(BAD_BOXES))
@pytest.mark.parametrize("tool", ["crop", "zoom"])
def test_bad_boxes(name, tool):
    env = env_with(coord_image(1001, 667))
    bbox, message = BAD_BOXES[name]
    result = dispatch(ToolCall(tool, {"bbox": bbox}), make_tools([tool]), env)
    assert result.error.startswith(f"{tool}: bbox ") and message in result.error
    assert list(env.images) == ["image"]  # nothing added


def test_overhangs_are_clipped_and_reported():
    env = env_with(coord_image(1001, 667))
    result = make_tools(["crop"])["crop"]({"bbox": [-3, -2, 200, 380]}, env)
    assert result.error is None
    assert "at bbox [0, 0, 200, 364] (original pixels [0, 0, 376, 667]) (clipped from " \
           "[-3, -2, 200, 380])" in result.text
    xs, ys = decode(np.asarray(result.images[0]))
    assert (xs[0, 0], ys[0, 0], ys[-1, -1]) == (0, 0, 666)


def test_min_side_threshold_exact():
    env = env_with(Image.new("RGB", (448, 448)))  # seen == original: 1 px = 1 px
    crop = make_tools(["crop"])["crop"]
    assert "too small" in crop({"bbox": [0, 0, 28, 100]}, env).error
    assert crop({"bbox": [0, 0, 29, 29]}, env).error is None


@pytest.mark.parametrize("args,message", [
    ({"image": "cam", "bbox": [0, 0, 100, 100]},
     "unknown image 'cam'; available images: image"),
    ({"bbox": [0, 0, float("inf"), 100]}, "argument 'bbox[2]': expected a finite number"),
    ({"bbox": [0, 0, 100, 100], "factor": True}, "argument 'factor': expected number, got boolean"),
    ({"bbox": [0, 0, 100, 100], "factor": 0.5}, "argument 'factor': must be >= 1, got 0.5"),
])
def test_bad_arguments(args, message):
    result = make_tools(["zoom"])["zoom"](args, env_with(coord_image(1001, 667)))
    assert message in result.error


def test_no_image():
    assert make_tools(["zoom"])["zoom"]({"bbox": [0, 0, 50, 50]}, ToolEnv()).error == \
        "zoom: there is no image to work on"


# ---------------------------------------------------------------- views
def test_retrieve_view(tmp_path):
    Image.new("RGB", (1600, 900), "red").save(tmp_path / "back.png")
    Image.new("RGB", (800, 450), "blue").save(tmp_path / "front.png")
    sample = Sample(id="s", prompt="", images={"front": str(tmp_path / "front.png"),
                                               "back": str(tmp_path / "back.png")},
                    meta={"views": {"front@-1s": str(tmp_path / "missing.png")}})
    env = ToolEnv.from_sample(sample, shown=["front"], seen_size=SEEN)
    assert list(env.images) == ["front"] and list(env.views) == ["back", "front@-1s"]
    tools = make_tools(["retrieve_view", "zoom"])
    result = dispatch(ToolCall("retrieve_view", {"view": "back"}), tools, env)
    assert result.text == "view 'back': new image 'tool_1', 588x308 as you see it."
    assert SEEN(1600, 900) == (588, 308)
    assert env.images["tool_1"].image.size == (1600, 900)
    bad = dispatch(ToolCall("retrieve_view", {"view": "left"}), tools, env)
    assert bad.error == "retrieve_view: unknown view 'left'; available views: back, front@-1s"
    assert "could not be loaded" in dispatch(ToolCall("retrieve_view", {"view": "front@-1s"}),
                                             tools, env).error
    assert "available views: none" in dispatch(ToolCall("retrieve_view", {"view": "x"}), tools,
                                               ToolEnv()).error
    assert "missing required argument 'view'" in dispatch(ToolCall("retrieve_view", {}), tools,
                                                          env).error


# ---------------------------------------------------------------- render_html
class FakeRenderer:
    def __init__(self):
        self.calls = []

    def screenshot_html(self, html, width, height):
        self.calls.append(html)
        buf = io.BytesIO()
        Image.new("RGB", (width, height), (10, 200, 30)).save(buf, "PNG")
        return buf.getvalue()


class FailingRenderer:
    def screenshot_html(self, html, width, height):
        raise RuntimeError("could not render: the page never finished loading")


def test_render_html(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>hi</h1>")
    renderer = FakeRenderer()
    env = ToolEnv(renderer=renderer, workdir=str(tmp_path), seen_size=SEEN)
    tools = make_tools(["render_html"])
    result = dispatch(ToolCall("render_html", {"html": "<p>x</p>"}), tools, env)
    assert result.error is None and result.images[0].size == (1280, 800)
    assert result.text == ("rendered html (8 characters) at 1280x800: new image 'tool_1', "
                           "560x336 as you see it.")
    assert SEEN(1280, 800) == (560, 336)
    assert dispatch(ToolCall("render_html", {"path": "site"}), tools, env).error is None
    assert renderer.calls == ["<p>x</p>", "<h1>hi</h1>"]
    bad = {
        "{}": {}, "both": {"html": "<p>", "path": "site"},
        "escape": {"path": "../etc"}, "absolute": {"path": "/etc"},
        "missing": {"path": "nope"}, "huge": {"html": "x" * 200_001},
    }
    errors = {k: dispatch(ToolCall("render_html", a), tools, env).error for k, a in bad.items()}
    assert errors["{}"] == errors["both"] == \
        "invalid arguments for render_html: give exactly one of 'html' or 'path'"
    assert errors["escape"] == "render_html: path '../etc' leaves the working directory"
    assert "must be relative" in errors["absolute"] and "no HTML page" in errors["missing"]
    assert "at most 200000 characters" in errors["huge"]
    assert "not available here" in dispatch(ToolCall("render_html", {"html": "<p>"}), tools,
                                            ToolEnv()).error
    assert dispatch(ToolCall("render_html", {"html": "<p>"}), tools,
                    ToolEnv(renderer=FailingRenderer())).error == \
        "render_html failed: RuntimeError: could not render: the page never finished loading"


@pytest.mark.browser
def test_render_html_real_browser():
    from vlmagent.web.browser import Browser

    with Browser() as browser:
        env = ToolEnv(renderer=browser, seen_size=SEEN)
        result = make_tools(["render_html"])["render_html"](
            {"html": "<body style='margin:0;background:#ff0000'></body>"}, env)
    assert result.error is None
    assert result.images[0].getpixel((640, 400)) == (255, 0, 0)


@pytest.mark.browser
def test_render_html_path_real_browser(tmp_path):
    from vlmagent.web.browser import Browser

    site = tmp_path / "site"
    (site / "css").mkdir(parents=True)
    (site / "index.html").write_text("<link rel='stylesheet' href='css/s.css'><body></body>")
    (site / "css" / "s.css").write_text("body{margin:0;background:rgb(0,0,255)}")
    (site / "a b#1.html").write_text("<link rel='stylesheet' href='css/s.css'>"
                                     "<body style='background:rgb(0,255,0)'></body>")
    tools = make_tools(["render_html"])
    with Browser() as browser:
        env = ToolEnv(renderer=browser, workdir=str(tmp_path), seen_size=SEEN)
        folder = dispatch(ToolCall("render_html", {"path": "site"}), tools, env)
        page = dispatch(ToolCall("render_html", {"path": "site/a b#1.html"}), tools, env)
        escape = dispatch(ToolCall("render_html", {"path": "site/../.."}), tools, env)
    assert folder.error is None and folder.images[0].size == (1280, 800)
    assert folder.images[0].getpixel((640, 400)) == (0, 0, 255)  # its CSS file was served
    assert page.error is None and page.images[0].getpixel((640, 400)) == (0, 255, 0)
    assert escape.error == "render_html: path 'site/../..' leaves the working directory"


def test_registry():
    assert list(TOOLS) == ["crop", "zoom", "render_html", "retrieve_view", "full_resolution",
                           "get_view_with_frame", "RoI_Inspection", "depth_estimation",
                           "detect_3d_objects"]
    assert list(make_tools(["zoom", "crop"])) == ["zoom", "crop"]
    with pytest.raises(ValueError, match="valid: crop, zoom, render_html, retrieve_view"):
        make_tools(["zoom", "magnify"])
    spec = make_tools(["zoom"])["zoom"].spec()
    assert spec["function"]["name"] == "zoom"
    assert spec["function"]["parameters"]["required"] == ["bbox"]
