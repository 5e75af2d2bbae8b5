"""ZoomGrid, the small zoom-QA task for tiny models: deterministic, the expert's zoom box is the
target cell (its scripted episodes through the real agent loop and zoom tool are all correct),
and the overview hides the colour while the zoom shows it."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vlmagent import agent
from vlmagent.config import AgentConfig
from vlmagent.domains import get_domain, zoomgrid
from vlmagent.images import QWEN2_5_VL_DEFAULT, Budget, load_image
from vlmagent.policy import Policy
from vlmagent.protocol import FORMATS, parse_answer, parse_mode
from vlmagent.tools.image import to_original, to_seen


def test_same_seed_same_pixels(tmp_path):
    a = zoomgrid.make_samples(6, 4, tmp_path / "a")
    b = zoomgrid.make_samples(6, 4, tmp_path / "b")
    assert [s.answer for s in a] == [s.answer for s in b]
    for x, y in zip(a, b):
        assert (tmp_path / "a" / x.images["image"].split("/")[-1]).read_bytes() == (
            tmp_path / "b" / y.images["image"].split("/")[-1]).read_bytes()
    assert get_domain("zoomgrid") is zoomgrid


@pytest.mark.parametrize("mode", ["tool", "text"])
def test_expert_episodes_are_correct(tiny, tmp_path, mode):
    policy = Policy.from_pretrained(tiny)
    cfg = AgentConfig(tools=["zoom"], min_pixels=784, max_pixels=3136)
    samples = zoomgrid.make_samples(8, 1, tmp_path / "s")
    seen = lambda w, h: policy.seen_size(w, h, cfg.min_pixels, cfg.max_pixels)  # noqa: E731
    actor = agent.ScriptedActor(policy, lambda ep: zoomgrid.expert_turns(ep.sample, mode, seen))
    trajs = agent.rollout(policy, samples, cfg, actor=actor)
    assert [zoomgrid.check(t.turns[-1].text, s) for t, s in zip(trajs, samples)] == [1.0] * 8
    assert all(t.n_tool_calls == (mode == "tool") and t.n_tool_errors == 0 for t in trajs)


# ---------------------------------------------------------------- hidden at the overview
def budget(side: int):
    """The seen-size rule of a Qwen2.5-VL processor under a pixel budget of side x side (what
    the agent's policy applies)."""
    return Budget(QWEN2_5_VL_DEFAULT.factor, side * side, side * side).seen_size


def alternation_rule(view, box) -> int:
    """A simple pixel rule, told where the swatch is: the ink that the even-minus-odd column
    difference inside `box` points to (ink stripes sit on even columns of the zoom)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    a = np.asarray(view, np.float32)[y0:y1, x0 - x0 % 2:x1 - (x1 - x0 + x0 % 2) % 2]
    diff = (a[:, 0::2] - a[:, 1::2]).reshape(-1, 3).sum(0)
    inks = np.array(list(zoomgrid.INKS.values()), np.float32) - zoomgrid.MID
    return int(np.argmax(inks @ diff / np.linalg.norm(inks, axis=1)))


def in_view(box, frame, seen):
    """`box` (original pixels) in a view of `frame` (original pixels) seen at `seen`."""
    sx, sy = seen[0] / (frame[2] - frame[0]), seen[1] / (frame[3] - frame[1])
    return (math.floor((box[0] - frame[0]) * sx), math.floor((box[1] - frame[1]) * sy),
            math.ceil((box[2] - frame[0]) * sx), math.ceil((box[3] - frame[1]) * sy))


@pytest.mark.parametrize("side", [28, 56])
def test_the_overview_is_the_same_for_every_ink_while_the_zoom_is_not(side):
    seen = budget(side)
    stripe = zoomgrid.stripe_width(zoomgrid.SIZE, seen)
    for seed in range(8):
        views = []
        for ink in range(len(zoomgrid.INKS)):  # the same scene, only the ink changes
            image, spec = zoomgrid.make_image(seed, stripe=stripe, label=ink)
            box = to_seen(zoomgrid.cell_box(spec["cell"], zoomgrid.SIZE), zoomgrid.SIZE,
                          seen(*zoomgrid.SIZE))
            views.append([np.asarray(v, np.int16) for v in zoomgrid.views(image, box, seen)])
        overview = [np.abs(v[0] - views[0][0]) for v in views[1:]]
        zoom = min(int(np.abs(v[1] - views[0][1]).max()) for v in views[1:])
        # rounding only (the original's uint8 stripes): the colour is gone
        assert max(int(d.max()) for d in overview) <= 3, seed
        assert max(float(d.mean()) for d in overview) < 0.1, seed
        assert zoom >= 60, (seed, zoom)


@pytest.mark.parametrize("side", [28, 56])
def test_a_pixel_rule_reads_the_zoom_but_not_the_overview(side):
    seen = budget(side)
    stripe = zoomgrid.stripe_width(zoomgrid.SIZE, seen)
    hits = {"overview": 0, "zoom": 0}
    n = 60
    for seed in range(n):
        image, spec = zoomgrid.make_image(seed, stripe=stripe)
        cell = zoomgrid.cell_box(spec["cell"], zoomgrid.SIZE)
        box = to_seen(cell, zoomgrid.SIZE, seen(*zoomgrid.SIZE))
        overview, zoom = zoomgrid.views(image, box, seen)
        full = (0, 0, *zoomgrid.SIZE)
        hits["overview"] += alternation_rule(overview, in_view(spec["swatch"], full,
                                                               overview.size)) == spec["label"]
        hits["zoom"] += alternation_rule(zoom, in_view(spec["swatch"], cell,
                                                       zoom.size)) == spec["label"]
    assert hits["zoom"] >= 0.95 * n, hits
    assert hits["overview"] <= 0.45 * n, hits  # chance is 0.25


def test_expert_zoom_box_is_the_target_cell_and_covers_the_swatch(tmp_path):
    seen = budget(28)
    for s in zoomgrid.make_samples(8, 2, tmp_path, seen_size=seen):
        first, last = zoomgrid.expert_turns(s, "tool", seen)
        call = FORMATS["hermes"].parse(first)
        assert call.name == "zoom" and parse_mode(first) == "tool"
        # the cell is named first (row-major from 1), in one token's worth of text
        assert first.startswith(f"<think_with_tools>cell {s.meta['cell'] + 1}<tool_call>")
        orig = to_original(call.arguments["bbox"], zoomgrid.SIZE, seen(*zoomgrid.SIZE))
        assert list(orig) == s.meta["box"] == zoomgrid.cell_box(s.meta["cell"], zoomgrid.SIZE)
        for inner in (s.meta["card"], s.meta["swatch"]):
            assert orig[0] <= inner[0] and orig[1] <= inner[1]
            assert inner[2] <= orig[2] and inner[3] <= orig[3]
        assert zoomgrid.check(last, s) == 1.0 and parse_answer(last) == s.answer
        assert s.meta["stripe"] == 4  # half the overview's 8x downscale at this budget


@pytest.mark.parametrize("family,side", [("qwen2_5_vl", 28), ("qwen3_vl", 32)])
def test_warmup_views_are_the_images_the_agent_shows(tiny_factory, tmp_path, family, side):
    policy = Policy.from_pretrained(tiny_factory(family=family))
    cfg = AgentConfig(tools=["zoom"], min_pixels=784, max_pixels=784)  # one visual token
    seen = lambda w, h: policy.seen_size(w, h, cfg.min_pixels, cfg.max_pixels)  # noqa: E731
    samples = zoomgrid.make_samples(3, 5, tmp_path / "s", seen_size=seen)
    actor = agent.ScriptedActor(policy, lambda ep: zoomgrid.expert_turns(ep.sample, "tool", seen))
    for t, s in zip(agent.rollout(policy, samples, cfg, actor=actor), samples):
        overview, zoom = zoomgrid.views(load_image(s.images["image"]),
                                        zoomgrid.seen_box(s, seen), seen)
        assert [np.asarray(im).tolist() for im in t.images] == [
            np.asarray(overview).tolist(), np.asarray(zoom).tolist()]
    batch = zoomgrid.perception_batch(4, 0, seen)
    assert {b["overview"].size for b in batch} == {b["zoom"].size for b in batch} == \
        {(side, side)}
    assert all(0 <= b["cell"] < zoomgrid.CELLS and 0 <= b["label"] < 4 for b in batch)


def test_unknown_kinds_are_refused(tmp_path):
    with pytest.raises(ValueError, match="valid: color"):
        zoomgrid.make_samples(1, 0, tmp_path, kinds=("digit",))
