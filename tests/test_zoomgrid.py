"""ZoomGrid, the small zoom-QA task for tiny models: deterministic, and the expert's zoom box
is right (its scripted episodes through the real agent loop and zoom tool are all correct)."""
from __future__ import annotations

import pytest

from vlmagent import agent
from vlmagent.config import AgentConfig
from vlmagent.domains import get_domain, zoomgrid
from vlmagent.policy import Policy
from vlmagent.tiny import build_tiny


def test_same_seed_same_pixels(tmp_path):
    a = zoomgrid.make_samples(6, 4, tmp_path / "a")
    b = zoomgrid.make_samples(6, 4, tmp_path / "b")
    assert [s.answer for s in a] == [s.answer for s in b]
    for x, y in zip(a, b):
        assert (tmp_path / "a" / x.images["image"].split("/")[-1]).read_bytes() == (
            tmp_path / "b" / y.images["image"].split("/")[-1]).read_bytes()
    assert get_domain("zoomgrid") is zoomgrid


@pytest.mark.parametrize("mode", ["tool", "text"])
def test_expert_episodes_are_correct(tmp_path, mode):
    policy = Policy.from_pretrained(build_tiny(tmp_path / "tiny"))
    cfg = AgentConfig(tools=["zoom"], min_pixels=784, max_pixels=3136)
    samples = zoomgrid.make_samples(8, 1, tmp_path / "s")
    seen = lambda w, h: policy.seen_size(w, h, cfg.min_pixels, cfg.max_pixels)  # noqa: E731
    actor = agent.ScriptedActor(policy, lambda ep: zoomgrid.expert_turns(ep.sample, mode, seen))
    trajs = agent.rollout(policy, samples, cfg, actor=actor)
    assert [zoomgrid.check(t.turns[-1].text, s) for t, s in zip(trajs, samples)] == [1.0] * 8
    assert all(t.n_tool_calls == (mode == "tool") and t.n_tool_errors == 0 for t in trajs)
