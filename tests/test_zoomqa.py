"""ZoomQA: determinism, layout, scripted expert turns, and that only a zoom makes it readable."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from vlmagent.domains import DOMAINS, get_domain, zoomqa
from vlmagent.images import QWEN2_5_VL_DEFAULT
from vlmagent.protocol import FORMATS, THINK_TAGS, dispatch, parse_answer, parse_mode, stage_tags
from vlmagent.tools import ToolEnv, make_tools
from vlmagent.tools.image import to_original, to_seen
from vlmagent.types import Sample

SIGN_BG = np.array([250, 250, 245], np.float32)
# What make_samples assumes when given no seen size (the tests below use that default): the
# named Qwen2.5-VL budget. test_images.py checks the generator with a Qwen3-VL processor.
SEEN = QWEN2_5_VL_DEFAULT.seen_size


# ---------------------------------------------------------------- an ideal-ish reader
def read_cells(img: Image.Image, box, ncols: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample the centres of a ncols x 7 cell grid inside `box` (that image's frame); ink is
    anything far from the sign's background, thresholded at half the strongest ink."""
    a = np.asarray(img.convert("RGB"), np.float32)
    x0, y0, x1, y1 = box
    xs = (x0 + (np.arange(ncols) + 0.5) * (x1 - x0) / ncols - 0.5).astype(np.float32)
    ys = (y0 + (np.arange(7) + 0.5) * (y1 - y0) / 7 - 0.5).astype(np.float32)
    mx, my = np.meshgrid(xs, ys)
    rgb = cv2.remap(a, mx, my, cv2.INTER_LINEAR)
    ink = np.linalg.norm(rgb - SIGN_BG, axis=-1)
    return ink > 0.5 * max(float(ink.max()), 1e-6), rgb


def nearest(cells: np.ndarray, table: dict, width: int) -> str:
    return min(table, key=lambda k: int((zoomqa.bitmap(table[k], width) != cells).sum()))


def read(img: Image.Image, kind: str, box, question: str) -> str:
    """What the target says, read from `img` given where the target is: a best case for the
    low-resolution view, since finding the glyph is done for it."""
    if kind == "digit":
        return nearest(read_cells(img, box, 5)[0], {d: zoomqa.GLYPHS[d] for d in "0123456789"}, 5)
    if kind == "shape":
        return nearest(read_cells(img, box, 7)[0], zoomqa.SHAPES, 7)
    letters = {k: v for k, v in zoomqa.GLYPHS.items() if k.isalpha()}
    if kind == "word":
        cells = read_cells(img, box, 23)[0]
        return "".join(nearest(cells[:, 6 * i:6 * i + 5], letters, 5) for i in range(4)).lower()
    cells, rgb = read_cells(img, box, 25)  # color: find the asked shape, report its colour
    asked = next(s for s in zoomqa.SHAPES if f"the {s}?" in question)
    for i in range(3):
        part = cells[:, 9 * i:9 * i + 7]
        if part.any() and nearest(part, zoomqa.SHAPES, 7) == asked:
            col = rgb[:, 9 * i:9 * i + 7][part].mean(0)
            return min(zoomqa.COLORS, key=lambda c: np.linalg.norm(zoomqa.COLORS[c] - col))
    return ""


def scaled(box, origin, k):
    return tuple((v - o) * s for v, o, s in zip(box, (*origin, *origin), (*k, *k), strict=True))


def test_zoom_makes_the_target_readable_and_the_default_view_does_not():
    """Read each target (knowing where it is) from the image as the model sees it, and from
    the zoom tool's output as the model sees it. This seed: seen 7/24, zoom 24/24. Over 160
    images (seed 99): seen digit 25%, colour 45%, shape 52%, word 0% (chance 10/33/25/~0%);
    zoom 100% for every kind."""
    zoom = make_tools(["zoom"])["zoom"]
    seen_ok, zoom_ok, words_seen = 0, 0, 0
    n = 24
    for i in range(n):
        kind = zoomqa.KINDS[i % 4]
        image, spec = zoomqa.make_image([11, i], kind, zoomqa.SIZES[i % len(zoomqa.SIZES)])
        env = ToolEnv(seen_size=SEEN)
        env.add_image(image, "image")
        seen = env.images["image"].seen
        k = (seen[0] / image.width, seen[1] / image.height)
        assert spec["cell"] * max(k) <= zoomqa.CELL_SEEN  # a glyph cell is < 1/3 seen pixel
        seen_img = image.resize(seen, Image.Resampling.BICUBIC)  # what the processor does
        got = read(seen_img, kind, scaled(spec["target_box"], (0, 0), k), spec["question"])
        seen_ok += got == spec["answer"]
        words_seen += kind == "word" and got == spec["answer"]

        box = to_seen(spec["box"], image.size, seen)
        result = zoom({"bbox": list(box)}, env)
        assert result.error is None
        out_seen = env.images["tool_1"].seen
        out = result.images[0].resize(out_seen, Image.Resampling.BICUBIC)
        o = to_original(box, image.size, seen)
        k2 = (out.width / (o[2] - o[0]), out.height / (o[3] - o[1]))
        assert spec["cell"] * min(k2) >= 2.5  # after the zoom, each cell spans >= 2.5 seen px
        zoom_ok += read(out, kind, scaled(spec["target_box"], o[:2], k2),
                        spec["question"]) == spec["answer"]
    assert zoom_ok == n
    assert seen_ok <= 0.4 * n and words_seen == 0


# ---------------------------------------------------------------- generation
def test_samples_are_deterministic(tmp_path):
    a = zoomqa.make_samples(4, 3, tmp_path / "a", kinds=zoomqa.KINDS, size=(1250, 937))
    b = zoomqa.make_samples(2, 3, tmp_path / "b", kinds=zoomqa.KINDS, size=(1250, 937))
    c = zoomqa.make_samples(2, 4, tmp_path / "c", kinds=zoomqa.KINDS, size=(1250, 937))
    assert [s.meta["kind"] for s in a] == ["digit", "color", "shape", "word"]
    assert [(s.id, s.answer, s.meta, s.prompt) for s in a[:2]] == \
        [(s.id, s.answer, s.meta, s.prompt) for s in b]
    for sa, sb in zip(a[:2], b, strict=True):
        assert np.array_equal(np.asarray(Image.open(sa.images["image"])),
                              np.asarray(Image.open(sb.images["image"])))
    assert [s.meta["box"] for s in a[:2]] != [s.meta["box"] for s in c]
    s = a[0]
    assert s.id == "zoomqa-3-00000" and s.domain == "zoomqa"
    assert s.prompt.startswith("Which digit") and "<answer></answer>" in s.prompt
    assert s.answer in zoomqa.ANSWERS["digit"]


def test_layout():
    for i, size in enumerate(zoomqa.SIZES + ((1024, 768),)):
        kind = zoomqa.KINDS[i % 4]
        assert size[0] % 28 and size[1] % 28
        image, spec = zoomqa.make_image([5, i], kind, size)
        arr = np.asarray(image)
        x0, y0, x1, y1 = spec["box"]
        tx0, ty0, tx1, ty1 = spec["target_box"]
        assert image.size == size and spec["answer"] in zoomqa.ANSWERS[kind]
        assert 0 < x0 < tx0 < tx1 < x1 < size[0] and 0 < y0 < ty0 < ty1 < y1 < size[1]
        assert (arr[y0, x0:x1] == zoomqa.FRAME_RGB).all() and \
            (arr[y0:y1, x1 - 1] == zoomqa.FRAME_RGB).all()
        seen = SEEN(*size)
        sb = to_seen(spec["box"], size, seen)
        assert min(sb[2] - sb[0], sb[3] - sb[1]) >= zoomqa.FRAME_SEEN  # easy to find...
        assert min(x1 - x0, y1 - y0) > 28  # ...and a valid zoom box
        # The frame is still clearly magenta at the model's resolution (on all four sides).
        small = np.asarray(image.resize(seen, Image.Resampling.BICUBIC)).astype(int)
        magenta = (small[..., 0] > 150) & (small[..., 1] < 110) & (small[..., 2] > 150)
        for side in (np.s_[sb[1]:sb[1] + 2, sb[0]:sb[2]], np.s_[sb[3] - 2:sb[3], sb[0]:sb[2]],
                     np.s_[sb[1]:sb[3], sb[0]:sb[0] + 2], np.s_[sb[1]:sb[3], sb[2] - 2:sb[2]]):
            assert magenta[side].mean() > 0.3
        assert magenta.sum() < 8 * (sb[2] - sb[0] + sb[3] - sb[1])  # and nothing else is


def test_save_load_and_registry(tmp_path):
    samples = zoomqa.make_samples(2, 9, tmp_path, size=(1250, 937))
    zoomqa.save_samples(samples, tmp_path / "s.jsonl")
    assert zoomqa.load_samples(tmp_path / "s.jsonl") == samples
    assert DOMAINS["zoomqa"] is get_domain("zoomqa") is zoomqa
    with pytest.raises(ValueError, match="valid: zoomqa"):
        get_domain("vqa")
    with pytest.raises(ValueError, match="valid: digit, color, shape, word"):
        zoomqa.make_samples(1, 0, tmp_path, kinds=("digits",))


def test_check():
    digit = Sample(id="x", prompt="", answer="7")
    word = Sample(id="y", prompt="", answer="stop")
    assert zoomqa.check("<answer>7</answer>", digit) == 1.0
    assert zoomqa.check("<answer> 7. </answer>", digit) == 1.0
    assert zoomqa.check("<answer>1</answer> then <answer>7</answer>", digit) == 1.0  # last one
    assert zoomqa.check("<answer>seven</answer>", digit) == 0.0
    assert zoomqa.check("<answer>17</answer>", digit) == 0.0
    assert zoomqa.check(" 7 ", digit) == 1.0  # no tag: the whole text
    assert zoomqa.check("The digit is 7", digit) == 0.0
    assert zoomqa.check("<answer>'STOP'</answer>", word) == 1.0
    assert zoomqa.check("", word) == 0.0


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    return zoomqa.make_samples(4, 2, tmp_path_factory.mktemp("zq"), kinds=zoomqa.KINDS)


@pytest.mark.parametrize("fmt", ["hermes", "drive"])
def test_expert_turns_run_through_the_real_protocol(fmt, samples):
    tools = make_tools(["zoom", "crop"])
    for s in samples:
        turns = zoomqa.expert_turns(s, "tool", SEEN, fmt)
        assert len(turns) == 2 and turns[0].endswith(FORMATS[fmt].stop)
        call = FORMATS[fmt].parse(turns[0])
        env = ToolEnv.from_sample(s, seen_size=SEEN)
        result = dispatch(call, tools, env)
        assert result.error is None, result.error
        ref = env.images["image"]
        o = to_original(call.arguments["bbox"], ref.size, ref.seen)
        x0, y0, x1, y1 = s.meta["box"]
        assert o[0] <= x0 and o[1] <= y0 and o[2] >= x1 and o[3] >= y1  # covers the frame
        assert (o[2] - o[0]) - (x1 - x0) <= 2 * ref.size[0] / ref.seen[0] + 1  # and not much more
        text = "".join(turns)
        assert parse_mode(text) == "tool" and stage_tags(text) == list(THINK_TAGS)
        assert parse_answer(text) == s.answer and zoomqa.check(turns[-1], s) == 1.0
        assert FORMATS[fmt].parse(turns[1]) is None

        (only,) = zoomqa.expert_turns(s, "text", SEEN, fmt)
        assert parse_mode(only) == "text" and stage_tags(only) == list(THINK_TAGS)
        assert FORMATS[fmt].parse(only) is None and zoomqa.check(only, s) == 1.0
    with pytest.raises(ValueError, match="valid: tool, text"):
        zoomqa.expert_turns(samples[0], "auto", SEEN)
