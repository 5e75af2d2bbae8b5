"""vlmagent.images, the one owner of the seen-size rule: the maths against transformers', the
budget read from a processor, the image cache, and that every place computing a seen size
(policy, agent + tool env, domain generators, debugger, VLM judge) gives the size a Qwen3-VL
processor really produces (factor 32), so a hard-coded 28 anywhere fails here."""
from __future__ import annotations

import io
import itertools
import random

import numpy as np
import pytest
from PIL import Image

from vlmagent import agent, protocol, trajectory
from vlmagent.config import AgentConfig, Config, VlmJudgeConfig
from vlmagent.domains import zoomgrid, zoomqa
from vlmagent.images import (
    QWEN2_5_VL_DEFAULT,
    Budget,
    ImageCache,
    image_key,
    load_image,
    resize_seen,
    smart_resize,
)
from vlmagent.tools import ToolEnv, make_tools
from vlmagent.tools.image import to_original, to_seen
from vlmagent.types import Sample, ToolCall

MIN_PX, MAX_PX = 56 * 56, 448 * 448  # the agent's default budget (AgentConfig)
# Sizes where factor 28 and factor 32 give different seen sizes (checked below).
SIZES = [(1001, 667), (640, 480), (1280, 800)]
RED, BLUE, GREY = (220, 20, 20), (20, 20, 220), (128, 128, 128)


# ---------------------------------------------------------------- the rule
@pytest.mark.parametrize("factor", [28, 32])
@pytest.mark.parametrize("budget", [(56 * 56, 448 * 448), (4 * 28 * 28, 16384 * 28 * 28),
                                    (256 * 28 * 28, 1280 * 28 * 28), (784, 784)])
def test_smart_resize_matches_transformers(factor, budget):
    # transformers' copy is what the processor runs at encode time (qwen_vl_utils 0.0.14 lets a
    # long thin image's short side round down to 0 under a small budget; the processor keeps
    # one patch row). Theirs is (height, width) -> (height, width); ours (width, height).
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import (
        smart_resize as theirs,
    )
    sides = [28, 29, 32, 41, 56, 100, 224, 300, 447, 448, 449, 667, 1001, 1080, 1999, 4001]
    rng = random.Random(0)
    pairs = [*itertools.product(sides, sides),
             *((rng.randint(20, 5000), rng.randint(20, 5000)) for _ in range(300))]
    for w, h in pairs:
        if max(h, w) / min(h, w) > 200:  # both refuse
            with pytest.raises(ValueError, match="aspect ratio"):
                smart_resize(w, h, factor, *budget)
            with pytest.raises(ValueError, match="aspect ratio"):
                theirs(h, w, factor, *budget)
            continue
        th, tw = theirs(h, w, factor, *budget)
        assert smart_resize(w, h, factor, *budget) == (tw, th), (w, h)


def test_seen_sizes_and_refusals():
    seen = QWEN2_5_VL_DEFAULT.seen_size
    assert seen(1001, 667) == smart_resize(1001, 667, 28, MIN_PX, MAX_PX) == (532, 364)
    assert seen(449, 449) == (448, 448)  # just over the budget, rounds into it
    assert seen(40, 30) == (84, 56)  # below min_pixels: upsampled
    qwen3 = Budget(32, MIN_PX, MAX_PX)
    for w, h in SIZES:  # the sizes the consistency tests rely on really tell 28 from 32
        assert seen(w, h) != qwen3.seen_size(w, h)
        assert all(v % 32 == 0 for v in qwen3.seen_size(w, h))
    with pytest.raises(ValueError, match="aspect ratio"):
        seen(2100, 10)
    with pytest.raises(ValueError, match="max_pixels"):
        smart_resize(100, 100, 28, 1000, 10)
    with pytest.raises(ValueError, match="max_pixels"):
        Budget(28, 1000, 10)
    with pytest.raises(ValueError, match="factor"):
        Budget(0, 10, 1000)


def test_budget_bounds_tokens_and_the_named_default():
    b = Budget(32, MIN_PX, MAX_PX)
    assert b.with_pixels(None, 4096) == Budget(32, MIN_PX, 4096)
    with pytest.raises(ValueError, match=r"max_pixels \(784\) must be >= min_pixels"):
        b.with_pixels(None, 784)
    assert b.with_pixels(1024) == Budget(32, 1024, MAX_PX) and b.with_pixels() == b
    assert b.tokens((544, 352)) == 17 * 11
    with pytest.raises(ValueError, match="544x350 is not a multiple of 32"):
        b.tokens((544, 350))
    # the default used without a processor is Qwen2.5-VL's factor with the agent's bounds
    agent_cfg = AgentConfig()
    assert QWEN2_5_VL_DEFAULT == Budget(28, agent_cfg.min_pixels, agent_cfg.max_pixels)


def test_from_processor_reads_factor_and_bounds():
    from transformers import Qwen2VLImageProcessor

    ip = Qwen2VLImageProcessor(size={"shortest_edge": 1024, "longest_edge": 65536},
                               patch_size=16, merge_size=2)
    assert Budget.from_processor(ip) == Budget(32, 1024, 65536)

    class Processor:  # a processor wrapping its image processor, as AutoProcessor returns
        image_processor = ip

    assert Budget.from_processor(Processor()) == Budget(32, 1024, 65536)

    class OldStyle:  # older preprocessor configs: min_pixels / max_pixels attributes
        size, patch_size, merge_size, min_pixels, max_pixels = {}, 14, 2, 3136, 12845056

    assert Budget.from_processor(OldStyle()) == Budget(28, 3136, 12845056)


# ---------------------------------------------------------------- keys and cache
def test_image_key_and_load_image(tmp_path):
    a = Image.new("RGB", (4, 3), (1, 2, 3))
    assert image_key(a) == image_key(a.copy()) != image_key(Image.new("RGB", (3, 4), (1, 2, 3)))
    assert image_key(a) != image_key(a.convert("RGBA"))  # the mode is part of the content
    Image.new("L", (5, 5), 7).save(tmp_path / "g.png")
    im = load_image(tmp_path / "g.png")
    assert im.mode == "RGB" and im.getpixel((0, 0)) == (7, 7, 7)
    assert load_image(a) is a


def test_image_cache_decodes_once_and_shares_seen_copies(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), np.uint8)).save(path)
    cache = ImageCache()
    a, b = cache.get(path), cache.get(path)
    assert a is b and (cache.hits, cache.misses) == (1, 1)
    s1, s2 = cache.seen(a, (112, 84)), cache.seen(b, (112, 84))
    assert s1 is s2 and s1.size == (112, 84)
    assert np.array_equal(np.asarray(s1), np.asarray(resize_seen(a, (112, 84))))
    assert cache.seen(a, (56, 28)) is not s1  # another size is another copy
    assert cache.seen(a, a.size) is a  # nothing to resize
    # an image the cache did not decode (a tool's output, a copy) is resized, never looked up
    other = a.copy()
    assert cache.seen(other, (112, 84)) is not s1


def test_image_cache_evicts_least_recently_used_within_its_budget(tmp_path):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (100, 100), (i, 0, 0)).save(paths[-1])
    cache = ImageCache(max_bytes=2 * 100 * 100 * 3 + 56 * 56 * 3)  # two decoded + one seen
    first = cache.get(paths[0])
    cache.seen(first, (56, 56))
    cache.get(paths[1])
    cache.get(paths[2])  # over budget: the oldest entry (paths[0]) goes first
    assert cache._bytes <= cache.max_bytes
    again = cache.get(paths[0])
    assert again is not first and cache.misses == 5  # 4 decodes + 1 resize
    assert cache.seen(first, (56, 56)).size == (56, 56)  # evicted image: resized, not looked up


# ---------------------------------------------------------------- every place agrees: Qwen3-VL
@pytest.fixture(scope="module")
def qwen3(tiny_factory):
    from vlmagent.policy import Policy

    pol = Policy.from_pretrained(tiny_factory(family="qwen3_vl"))
    assert pol.patch_factor == 32
    return pol


def processor_size(policy, image: Image.Image, lo: int, hi: int) -> tuple[int, int]:
    """(width, height) the model's processor really resizes `image` to under [lo, hi]:
    image_grid_thw (patches) x patch size."""
    out = policy.processor.image_processor(images=[image.convert("RGB")], return_tensors="pt",
                                           size={"shortest_edge": lo, "longest_edge": hi})
    _, gh, gw = out["image_grid_thw"][0].tolist()
    ps = policy.processor.image_processor.patch_size
    return gw * ps, gh * ps


def cfg(**kw) -> AgentConfig:
    return AgentConfig(**{"min_pixels": MIN_PX, "max_pixels": MAX_PX, **kw})


def test_policy_and_training_rule_match_the_processor(qwen3):
    from vlmagent.train.data import seen_fn

    rule = seen_fn(qwen3, cfg())  # what training hands the domains and the experts
    for w, h in SIZES:
        want = processor_size(qwen3, Image.new("RGB", (w, h)), MIN_PX, MAX_PX)
        assert qwen3.seen_size(w, h, MIN_PX, MAX_PX) == rule(w, h) == want
    # without bounds: the processor's own (the tiny processor's 28x28..448x448)
    assert qwen3.seen_size(1001, 667) == processor_size(qwen3, Image.new("RGB", (1001, 667)),
                                                        28 * 28, 448 * 448)


def square_sample(tmp_path, size, seen, seen_box) -> tuple[Sample, tuple[int, int, int, int]]:
    """A grey image with a red square exactly where `seen_box` (seen frame) maps to in original
    pixels, ringed in blue just outside: a crop that is off by one pixel shows blue or grey."""
    x0, y0, x1, y1 = to_original(seen_box, size, seen)
    a = np.full((size[1], size[0], 3), GREY, np.uint8)
    a[y0 - 2:y1 + 2, x0 - 2:x1 + 2] = BLUE
    a[y0:y1, x0:x1] = RED
    path = tmp_path / "square.png"
    Image.fromarray(a).save(path)
    return Sample("sq", "What colour is the square?", {"image": str(path)}, "red"), (x0, y0, x1,
                                                                                      y1)


@pytest.mark.parametrize("tool", ["crop", "zoom"])
def test_agent_env_and_tool_boxes_use_the_processor_frame(qwen3, tmp_path, tool):
    size = (1001, 667)
    seen = processor_size(qwen3, Image.new("RGB", size), MIN_PX, MAX_PX)
    assert seen == (544, 352)  # factor 28 would give (532, 364)
    box = (300, 100, 460, 260)  # seen frame: 294 x 303 original pixels
    sample, orig = square_sample(tmp_path, size, seen, box)
    c = cfg(tools=["crop", "zoom"])
    tools = make_tools(c.tools)
    ep = agent.start_episode(qwen3, sample, c, tools)
    ref = ep.env.images["image"]  # the tools' rule, as the agent hands it to the env
    assert ref.seen == seen and ep.traj.images[0].size == seen
    fmt = protocol.get_format(c.format)
    args = {"image": "image", "bbox": list(box)} | ({"factor": 1} if tool == "zoom" else {})
    text = "<think_with_tools>" + fmt.render_call(ToolCall(tool, args))
    [gen] = agent.ScriptedActor(qwen3, lambda e: [text])([ep], c, fmt.stop, None)
    result = agent.step(qwen3, ep, gen, c, tools)
    assert result.error is None, result.error
    assert f"(original pixels [{', '.join(map(str, orig))}])" in result.text
    out = np.asarray(result.images[0])
    assert out.shape[:2] == (orig[3] - orig[1], orig[2] - orig[0])  # no upsampling needed
    assert (out == RED).all()  # exactly the square: no ring, no background
    out_ref = ep.env.images["tool_1"]
    want = processor_size(qwen3, result.images[0], MIN_PX, MAX_PX)
    assert out_ref.seen == want == ep.traj.images[-1].size
    assert f"{want[0]}x{want[1]} as you see it" in result.text
    # the model's forward pass accepts every image at its size (no resize by the processor)
    [lp] = qwen3.logprobs([trajectory.context(ep.traj)])
    assert lp.shape == (len(ep.traj.token_ids) - 1,)
    pads = sum(t == qwen3.image_token_id for t in ep.traj.token_ids)
    assert pads == sum(qwen3.budget.tokens(im.size) for im in ep.traj.images)


def test_zoomqa_generation_and_expert_use_the_processor_frame(qwen3, tmp_path):
    from vlmagent.train.data import seen_fn

    rule = seen_fn(qwen3, cfg())
    [s] = zoomqa.make_samples(1, 4, tmp_path, kinds=("digit",), size=(1001, 667),
                              seen_size=rule)
    size = tuple(s.meta["size"])
    seen = processor_size(qwen3, load_image(s.images["image"]), MIN_PX, MAX_PX)
    first, _ = zoomqa.expert_turns(s, "tool", rule)
    assert f"A cluttered {seen[0]}x{seen[1]} image" in first
    box = protocol.get_format("hermes").parse(first).arguments["bbox"]
    assert box == list(to_seen(s.meta["box"], size, seen))
    o, (x0, y0, x1, y1) = to_original(box, size, seen), s.meta["box"]
    assert o[0] <= x0 and o[1] <= y0 and o[2] >= x1 and o[3] >= y1  # covers the frame
    k = size[0] / seen[0]
    assert max(x0 - o[0], y0 - o[1], o[2] - x1, o[3] - y1) <= k + 1  # by one seen pixel at most


def test_zoomgrid_views_and_stripes_use_the_processor_frame(qwen3, tmp_path):
    c = cfg(min_pixels=28 * 28, max_pixels=64 * 64)
    rule = lambda w, h: qwen3.seen_size(w, h, c.min_pixels, c.max_pixels)  # noqa: E731
    [s] = zoomgrid.make_samples(1, 3, tmp_path, seen_size=rule)
    image = load_image(s.images["image"])
    seen = processor_size(qwen3, image, c.min_pixels, c.max_pixels)
    assert seen == (64, 64)  # factor 28 would give (56, 56)
    assert s.meta["stripe"] == round(224 / 64 / 2)  # half the overview's downscale
    box = zoomgrid.seen_box(s, rule)
    assert to_original(box, (224, 224), seen) == tuple(s.meta["box"])  # exactly the cell
    overview, zoom = zoomgrid.views(image, box, rule)
    env = ToolEnv(seen_size=rule)
    env.add_image(image, "image")
    raw = make_tools(["zoom"])["zoom"]({"image": "image", "bbox": box}, env).images[0]
    assert overview.size == seen
    assert zoom.size == processor_size(qwen3, raw, c.min_pixels, c.max_pixels)
    batch = zoomgrid.perception_batch(2, 0, rule)
    assert {b["overview"].size for b in batch} == {seen}
    # without a rule, the named Qwen2.5-VL default: a quarter of each side in 28s
    assert zoomgrid.quarter_size(224, 224) == (56, 56)
    assert zoomgrid.quarter_size(224, 224, factor=32) == (32, 32)


def test_debugger_uses_the_loaded_model_and_names_its_default(qwen3):
    from vlmagent.debug.session import BudgetPolicy, Session

    config = Config()
    config.agent = cfg()
    s = Session(config, policy=qwen3, manual=False)
    for w, h in SIZES:
        want = processor_size(qwen3, Image.new("RGB", (w, h)), MIN_PX, MAX_PX)
        assert s.seen_size(w, h) == want
        # a model-free stand-in told this processor's budget agrees too
        assert BudgetPolicy(Budget.from_processor(qwen3.processor)).seen_size(
            w, h, MIN_PX, MAX_PX) == want
        # without any model: the named Qwen2.5-VL default, which differs for Qwen3-VL
        assert BudgetPolicy().seen_size(w, h, MIN_PX, MAX_PX) == \
            QWEN2_5_VL_DEFAULT.seen_size(w, h) != want
    s.load_domain("zoomqa", 3)
    ref = s.episode.env.images["image"]
    assert ref.seen == processor_size(qwen3, ref.image, MIN_PX, MAX_PX)
    assert s.episode.traj.images[0].size == ref.seen


class SpyPolicy:
    """A real policy that records what generate() was given."""

    def __init__(self, policy):
        self.policy, self.contexts = policy, []

    def __getattr__(self, name):
        return getattr(self.policy, name)

    def generate(self, contexts, *a, **kw):
        self.contexts.extend(contexts)
        return self.policy.generate(contexts, *a, **kw)


def test_vlm_judge_resizes_with_the_model_rule(qwen3):
    from vlmagent.rewards.judges import Evidence, Shot, VLMJudge

    shots = []
    for viewport, (w, h) in [("desktop", (1280, 2000)), ("mobile", (375, 812))]:
        buf = io.BytesIO()
        Image.new("RGB", (w, h), (240, 240, 240)).save(buf, "PNG")
        shots.append(Shot("index.html", viewport, buf.getvalue()))
    spy = SpyPolicy(qwen3)
    jcfg = VlmJudgeConfig(max_new_tokens=2, max_pixels=320 * 320, images=2)
    verdict = VLMJudge(jcfg, policy=spy)(Evidence(shots=shots))
    assert verdict.error in (None, "no 0-5 score in the model output"), verdict.error
    [ctx] = spy.contexts
    lo = qwen3.budget.min_pixels  # the judge keeps the processor's lower bound
    firsts = [(1280, 800), (375, 812)]  # the first screen of each shot
    want = [processor_size(qwen3, Image.new("RGB", wh), lo, jcfg.max_pixels) for wh in firsts]
    assert [im.size for im in ctx.images] == want
    assert want[0] != Budget(28, lo, jcfg.max_pixels).seen_size(*firsts[0])
