"""The visual-resolution router: levels, the heuristic and learned routers, per-image levels in
the agent loop (exact tokens), the full_resolution tool and VisionThink's penalty."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vlmagent import agent, config, trajectory
from vlmagent.config import RouterConfig
from vlmagent.images import QWEN2_5_VL_DEFAULT
from vlmagent.policy import Policy
from vlmagent.rewards.episode import resolution_penalties
from vlmagent.router import HeuristicRouter, detail_lost, level_pixels, make_route, route_for
from vlmagent.router.learned import LearnedRouter, new_head
from vlmagent.tools import make_tools
from vlmagent.tools.base import ToolEnv
from vlmagent.types import Sample, ToolCall, Trajectory, Turn


def striped(size: int = 112) -> Image.Image:
    """Red/cyan stripes one pixel wide: the detail a half-side downscale averages away."""
    a = np.zeros((size, size, 3), np.uint8)
    a[:, 0::2] = (225, 30, 30)
    a[:, 1::2] = (30, 225, 225)
    return Image.fromarray(a)


def smooth(size: int = 112) -> Image.Image:
    x = np.linspace(0, 255, size, dtype=np.float32)
    a = np.stack([np.tile(x, (size, 1))] * 3, -1).astype(np.uint8)
    a[30:80, 30:80] = (30, 200, 40)
    return Image.fromarray(a)


def seen(w, h, lo, hi):
    return QWEN2_5_VL_DEFAULT.with_pixels(lo, hi).seen_size(w, h)


def test_levels_scale_the_area_cap_and_keep_the_floor_below_it():
    assert level_pixels([1.0, 0.25], 0, 784, 12544) == (784, 12544)
    assert level_pixels([1.0, 0.25], 1, 784, 12544) == (784, 3136)
    assert level_pixels([1.0, 0.25], 1, 3136, 3136) == (784, 784)  # floor never above the cap
    with pytest.raises(ValueError, match="out of range"):
        level_pixels([1.0, 0.25], 2, 784, 12544)


def test_heuristic_router_keeps_detail_at_full_and_sends_smooth_images_low():
    cfg = RouterConfig(kind="heuristic")
    route = make_route(cfg, seen, 784, 112 * 112)
    (s1, l1), (s2, l2) = route(striped()), route(smooth())
    assert (l1, s1) == (0, (112, 112))
    assert (l2, s2) == (1, (56, 56))  # a quarter of the pixels: 4 tokens instead of 16
    lost = [detail_lost(im, (112, 112), (56, 56)) for im in (striped(), smooth())]
    assert lost[0] > 30 > 5 > lost[1], lost  # stripes differ by ~78 grey levels
    assert HeuristicRouter(threshold=1e9).choose(striped(), lambda im, lv: (112, 112)) == 1


def test_no_router_configured_means_no_route_and_unknown_kinds_are_named():
    class P:
        seen_size = staticmethod(seen)

    p = P()
    assert route_for(p, config.AgentConfig()) is None
    acfg = config.AgentConfig(router=RouterConfig(kind="fixed", fixed_level=1))
    r = route_for(p, acfg)
    assert r(striped())[1] == 1 and route_for(p, acfg) is r  # made once per policy + config
    with pytest.raises(ValueError, match="unknown router.kind 'magic'"):
        make_route(RouterConfig(kind="magic"), seen, 784, 12544)


def test_full_resolution_tool_adds_the_same_image_at_level_zero():
    env = ToolEnv(seen_size=lambda w, h: seen(w, h, 784, 12544),
                  route=make_route(RouterConfig(kind="fixed", fixed_level=1), seen, 784, 12544))
    env.add_image(striped(), "image")
    assert (env.images["image"].seen, env.images["image"].level) == ((56, 56), 1)
    tool = make_tools(["full_resolution"])["full_resolution"]
    res = tool.run({}, env)
    assert res.error is None and "112x112" in res.text
    new = env.images["tool_1"]
    assert (new.seen, new.level) == ((112, 112), 0) and new.image is env.images["image"].image
    again = tool.run({"image": "tool_1"}, env)
    assert "already at full resolution" in again.error
    assert "unknown image 'nope'" in tool.run({"image": "nope"}, env).error
    assert "zoom" in tool.check({"zoom": 2})  # unknown argument: an error the model reads


def _traj(asked: bool) -> Trajectory:
    call = ToolCall("full_resolution", {}) if asked else None
    return Trajectory(id="t", turns=[Turn("assistant", "", tool_call=call)])


def test_visionthink_penalty_punishes_asking_when_low_resolution_suffices_and_vice_versa():
    # 3 of 4 direct answers right (75% >= 20%): asking is penalised
    g = [_traj(False)] * 4 + [_traj(True)] * 2
    assert resolution_penalties(g, [1, 1, 1, 0, 1, 1], 0.1) == [0, 0, 0, 0, -0.1, -0.1]
    # 0 of 3 direct answers right: answering directly is penalised, asking is not
    g = [_traj(False)] * 3 + [_traj(True)]
    assert resolution_penalties(g, [0, 0, 0, 1], 0.1) == [-0.1, -0.1, -0.1, 0]
    # nobody answered directly: no evidence the low level suffices, so asking is right
    assert resolution_penalties([_traj(True)] * 2, [1, 0], 0.1) == [0, 0]


@pytest.fixture(scope="module")
def policy(tiny_factory):
    return Policy.from_pretrained(tiny_factory(max_pixels=112 * 112))


def test_routed_episode_records_levels_and_trains_on_the_tokens_it_sampled(policy, tmp_path):
    paths = []
    for i, im in enumerate([striped(), smooth()]):
        paths.append(tmp_path / f"{i}.png")
        im.save(paths[-1])
    samples = [Sample(id=f"s{i}", prompt="What colour?", images={"image": str(p)},
                      answer="red") for i, p in enumerate(paths)]
    acfg = config.AgentConfig(tools=["full_resolution"], min_pixels=784, max_pixels=112 * 112,
                              max_new_tokens=4, max_turns=1,
                              router=RouterConfig(kind="heuristic"))
    trajs = agent.rollout(policy, samples, acfg, seed=0)
    assert [t.image_levels for t in trajs] == [[0], [1]]
    assert [t.images[0].size for t in trajs] == [(112, 112), (56, 56)]
    pads = [t.token_ids.count(policy.image_token_id) for t in trajs]
    assert pads == [16, 4]  # pad count = grid, per image, at its own level
    # the same tokens replay: the recomputed log-probs equal the sampled ones
    for t in trajs:
        lp = policy.logprobs([trajectory.context(t)])[0]
        got = lp[torch.tensor(t.loss_mask[1:], dtype=torch.bool)]
        assert torch.allclose(got, torch.tensor(t.logps), atol=1e-4)
    trajectory.save(trajs, tmp_path / "t.jsonl")
    assert [t.image_levels for t in trajectory.load(tmp_path / "t.jsonl")] == [[0], [1]]


def test_learned_router_saves_loads_and_routes_by_its_head(policy, tmp_path):
    head = new_head(policy)
    with torch.no_grad():  # a head that always says "full" (class 0)
        head.weight.zero_()
        head.bias.copy_(torch.tensor([3.0, -3.0]))
    LearnedRouter(head, policy).save_pretrained(tmp_path / "r", levels=[1.0, 0.25])
    cfg = RouterConfig(kind="learned", path=str(tmp_path / "r"))
    route = make_route(cfg, policy.seen_size, 784, 112 * 112, policy)
    assert route(smooth())[1] == 0
    with torch.no_grad():
        head.bias.copy_(torch.tensor([-3.0, 3.0]))
    LearnedRouter(head, policy).save_pretrained(tmp_path / "r")
    assert make_route(cfg, policy.seen_size, 784, 112 * 112, policy)(striped())[1] == 1
    with pytest.raises(ValueError, match="needs router.path"):
        make_route(RouterConfig(kind="learned"), policy.seen_size, 784, 12544, policy)


# ---------------------------------------------------------------- the ViCO stages
def _run(tmp_path, policy, kind: str, overrides: list[str], **kw):
    from pathlib import Path

    from vlmagent.config import StageConfig, resolve_stage
    from vlmagent.train import PREPARE
    from vlmagent.train.common import StageRun, make_accelerator

    cfg = config.load(None, ["domain.name=zoomres", "domain.kinds=[fine, coarse]",
                             f"domain.data_dir={tmp_path / 'data'}", "agent.tools=[]",
                             "agent.min_pixels=784", "agent.max_pixels=12544",
                             "agent.max_new_tokens=8", "agent.format=hermes",
                             f"train.output_dir={tmp_path / 'out'}", *overrides])
    st = resolve_stage(cfg.train.defaults, StageConfig(kind=kind, domain="zoomres", **kw))
    if kind in PREPARE:
        PREPARE[kind](st, policy)
    out = Path(cfg.train.output_dir) / st.name
    out.mkdir(parents=True, exist_ok=True)
    return cfg, StageRun(st, policy, make_accelerator(out), out, 0)


def test_vico_kl_is_zero_where_the_policy_sees_what_the_reference_sees(tmp_path, tiny_factory):
    from vlmagent.train import vico

    policy = Policy.from_pretrained(tiny_factory(max_pixels=112 * 112))
    # both levels full: the policy sees exactly the reference's input, so KL = 0 (lr 0: no step)
    cfg, run = _run(tmp_path, policy, "vico", ["agent.router.levels=[1.0, 1.0]"],
                    steps=1, batch_size=4, lr=0.0)
    assert vico.vico_step(run, cfg, None)["loss"] == pytest.approx(0.0, abs=1e-6)
    # a real low level: the policy's answer distribution moves away from the reference's
    cfg, run = _run(tmp_path, policy, "vico", [], steps=1, batch_size=8, lr=0.0)
    m = vico.vico_step(run, cfg, None)
    assert m["kl_low"] > 1e-4 and m["tokens"] > 0


def test_router_stage_labels_by_the_loss_ratio_and_saves_its_head(tmp_path, tiny_factory):
    from vlmagent.train import vico

    policy = Policy.from_pretrained(tiny_factory(max_pixels=112 * 112))
    cfg, run = _run(tmp_path, policy, "router", [], steps=3, batch_size=16, lr=0.01)
    lm = policy.core.lm_head.weight.detach().clone()
    metrics = []
    while run.step < run.stage.steps:
        metrics.append(vico.router_step(run, cfg, None))
        run.step += 1
    # the median of the window splits each batch about in half
    assert all(0.3 <= m["low_rate"] <= 0.7 for m in metrics), metrics
    assert metrics[-1]["tau"] > 0 and len(run.ratios) == 48
    assert not hasattr(policy.core, vico.HEAD)  # removed at the last step, saved on its own
    assert torch.equal(policy.core.lm_head.weight, lm)  # only the head trains
    r = LearnedRouter.from_pretrained(run.out / "router", policy)
    assert r.head.weight.shape == (2, policy.core.get_input_embeddings().embedding_dim)
    # the threshold is calibrated so the head sends the percentile's share of recent images low
    assert r.p_full == pytest.approx(metrics[-1]["p_full"]) and 0 < r.p_full < 1
    with torch.no_grad():
        p = r.head(torch.stack(list(run.feats))).float().softmax(-1)[:, 0]
    assert float((p < r.p_full).float().mean()) == pytest.approx(0.5, abs=0.05)


def test_stage_agent_settings_apply_to_that_stage_and_unknown_keys_are_named():
    from vlmagent.config import ConfigError, StageConfig, stage_config

    cfg = config.load(None)
    st = StageConfig(name="s", agent={"router": {"fixed_level": 1}, "force_mode": "text"})
    got = stage_config(cfg, st).agent
    assert (got.router.fixed_level, got.router.levels, got.force_mode) == (1, [1.0, 0.25], "text")
    assert cfg.agent.router.fixed_level == 0  # the config itself is untouched
    with pytest.raises(ConfigError, match="stage s: unknown key 'agent.router.bogus'"):
        stage_config(cfg, StageConfig(name="s", agent={"router": {"bogus": 1}}))


def test_router_eval_reports_every_setting_on_the_same_episodes(tmp_path, policy):
    import json

    from vlmagent.router.evaluate import SETTINGS, router_eval

    head = new_head(policy)  # a learned head that sends everything low
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([-3.0, 3.0]))
    LearnedRouter(head, policy).save_pretrained(tmp_path / "r")
    cfg = config.load(None, ["domain.name=zoomres", "domain.kinds=[fine, coarse]",
                             f"domain.data_dir={tmp_path / 'data'}", "agent.format=hermes",
                             "agent.min_pixels=784", "agent.max_pixels=12544",
                             "agent.max_new_tokens=4", "agent.max_turns=2",
                             f"agent.router.path={tmp_path / 'r'}"])
    rep = router_eval(cfg, policy, 12, tmp_path / "report.json")
    assert json.loads((tmp_path / "report.json").read_text()).keys() == set(SETTINGS)
    for name in SETTINGS:
        assert {"visual_tokens", "reward", "accuracy", "tokens_per_s", "n"} <= rep[name].keys()
        assert rep[name]["n"] == 12
    assert rep["fixed_full"]["visual_tokens"] == 16 and rep["fixed_low"]["visual_tokens"] == 4
    assert rep["learned"]["levels"] == {"0": 0.0, "1": 1.0}
    # the heuristic separates the kinds: full exactly for the fine samples
    from vlmagent.train.data import EVAL_SEED, samples

    held = samples(cfg, policy, "zoomres", 12, EVAL_SEED)
    fine = sum(s.meta["kind"] == "fine" for s in held) / 12
    assert rep["heuristic"]["visual_tokens"] == pytest.approx(4 + 12 * fine)
    assert rep["heuristic"]["token_ratio"] == pytest.approx((4 + 12 * fine) / 16)
