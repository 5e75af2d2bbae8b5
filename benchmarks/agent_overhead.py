"""What the agent loop costs on top of the generation it needs, on a tiny Qwen2.5-VL (CPU).

    python benchmarks/agent_overhead.py [--episodes 8] [--new-tokens 48] [--repeats 3]

Agent: full rollouts on 1920x1080 zoom-QA images: prompt building (image resize, chat template,
pad expansion), a zoom call in turn 1 (scripted, so every episode really runs the tool), the tool
turn with its image, then turn 2 sampled by the policy (batched across episodes).
Baseline: raw `policy.generate` on exactly the contexts turn 2 was sampled from, with the same
seed and settings, so it produces the same tokens: the generation the loop cannot avoid.
overhead = agent time / baseline time - 1 (goal: <= 15%).
Reported twice: images decoded from PNG in every rollout (cold), and through an ImageCache as in
RL epochs (warm). The tiny model makes generation far cheaper than any real checkpoint, so these
ratios are a worst case for the loop.
Also: crop and zoom latency on a 1920x1080 image, and their ratio to one generation round.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from vlmagent import agent
from vlmagent.config import AgentConfig
from vlmagent.domains import zoomqa
from vlmagent.images import QWEN2_5_VL_DEFAULT, ImageCache, load_image
from vlmagent.policy import Policy
from vlmagent.protocol import FORMATS
from vlmagent.tiny import build_tiny
from vlmagent.tools import make_tools
from vlmagent.tools.base import ToolEnv
from vlmagent.types import ToolCall


class ZoomThenSample:
    """Turn 1: a zoom call (scripted); later turns: sampled. Records turn-2 contexts."""

    scripted = False

    def __init__(self, policy: Policy):
        call = FORMATS["hermes"].render_call(ToolCall("zoom", {"bbox": [40, 40, 200, 160]}))
        self.first = agent.ScriptedActor(policy, lambda ep: ["<think_with_tools>" + call])
        self.sample = agent.PolicyActor(policy)
        self.contexts: list = []

    def __call__(self, episodes, cfg, stop, seed):
        if episodes[0].n_assistant == 0:
            return self.first(episodes, cfg, stop, seed)
        self.contexts = [e.context() for e in episodes]
        self.contexts = [type(c)(list(c.token_ids), list(c.images), c.id) for c in self.contexts]
        return self.sample(episodes, cfg, stop, seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cfg = AgentConfig(max_turns=2, max_new_tokens=args.new_tokens, temperature=1.0,
                      min_pixels=56 * 56, max_pixels=448 * 448)
    with tempfile.TemporaryDirectory() as tmp:
        policy = Policy.from_pretrained(build_tiny(Path(tmp) / "tiny"))
        samples = zoomqa.make_samples(args.episodes, seed=0, out_dir=Path(tmp) / "zq",
                                      size=(1920, 1080))
        agent_s, warm_s, raw_s, tokens = [], [], [], 0
        cache = ImageCache()
        for r in range(2 * args.repeats + 1):  # round 0 warms up and is not counted
            actor = ZoomThenSample(policy)
            warm = r > args.repeats  # later rounds reuse decoded images, as RL epochs do
            t0 = time.perf_counter()
            trajs = agent.rollout(policy, samples, cfg, actor=actor, seed=r,
                                  image_cache=cache if warm else None)
            t_agent = time.perf_counter() - t0
            t0 = time.perf_counter()
            gens = policy.generate(actor.contexts, cfg.max_new_tokens, temperature=1.0,
                                   stop_strings=(FORMATS["hermes"].stop,), seed=r + 1)
            t_raw = time.perf_counter() - t0
            sampled = [t.token_ids[t.turns[-1].span[0]:t.turns[-1].span[1]] for t in trajs]
            same = all(g.token_ids[:len(s)] == s for g, s in zip(gens, sampled))
            assert same, "baseline must generate exactly the tokens the agent sampled"
            if r:
                (warm_s if warm else agent_s).append(t_agent)
                raw_s.append(t_raw)
                tokens = sum(len(g.token_ids) for g in gens)
        env = ToolEnv(seen_size=QWEN2_5_VL_DEFAULT.seen_size)
        image = samples[0].images["image"]
        env.add_image(load_image(image), "image")
        tools = make_tools(["crop", "zoom"])
        lat = {}
        for name in ("crop", "zoom"):
            times = []
            for _ in range(20):
                t0 = time.perf_counter()
                res = tools[name]({"image": "image", "bbox": [100, 80, 300, 240]}, env)
                times.append(time.perf_counter() - t0)
                assert res.error is None, res.error
            lat[name] = statistics.median(times)
    a, b = statistics.median(agent_s), statistics.median(raw_s)
    w = statistics.median(warm_s)
    per_round = b  # one batched generation round of the baseline
    print(json.dumps({
        "episodes": args.episodes, "sampled_tokens": tokens,
        "agent_s": round(a, 4), "raw_generate_s": round(b, 4),
        "overhead": round(a / b - 1, 4), "agent_warm_s": round(w, 4),
        "overhead_warm": round(w / b - 1, 4),
        "crop_ms_1920x1080": round(lat["crop"] * 1e3, 2),
        "zoom_ms_1920x1080": round(lat["zoom"] * 1e3, 2),
        "zoom_to_generation_round": round(lat["zoom"] / per_round, 4)}))
    print(f"agent loop {a:.3f} s vs raw generate {b:.3f} s for the same {tokens} tokens: "
          f"overhead {100 * (a / b - 1):.1f}% with images decoded from PNG, "
          f"{100 * (w / b - 1):.1f}% with them cached (goal <= 15%)")
    print(f"crop {lat['crop'] * 1e3:.1f} ms, zoom {lat['zoom'] * 1e3:.1f} ms on 1920x1080 "
          f"= {100 * lat['zoom'] / per_round:.1f}% of one generation round")


if __name__ == "__main__":
    main()
