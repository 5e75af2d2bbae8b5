"""The router's token saving as time: the same held-out episodes with every image at the full
budget vs routed by the heuristic router, on a tiny Qwen2.5-VL (CPU), one run.

    python benchmarks/router_tokens.py [--episodes 32] [--side 448] [--new-tokens 16] [--repeats 3]

Episodes: zoomres samples (30% fine stripes that need the full budget, the rest plain) at
side x side pixels, answered directly (text mode, greedy, `--new-tokens` per episode), in one
batch per setting. Reported per setting: visual tokens per episode, episodes/s and policy
tokens generated per second (median of the repeats, settings alternated so drift hits both),
and the routed/full ratio of each. How much of a token saving becomes time depends on how the
model splits its cost between vision tower, prefill and decoding; the tiny model's split is not
a real checkpoint's, so the time ratio is this model's, printed next to the token ratio.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from vlmagent import agent
from vlmagent.config import AgentConfig, RouterConfig
from vlmagent.domains import zoomres
from vlmagent.policy import Policy
from vlmagent.router.evaluate import visual_tokens
from vlmagent.tiny import build_tiny


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=32)
    ap.add_argument("--side", type=int, default=448)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-router-"))
    policy = Policy.from_pretrained(build_tiny(tmp / "tiny", max_pixels=args.side ** 2))
    pixels = args.side ** 2
    samples = zoomres.make_samples(args.episodes, 0, tmp / "data", size=(args.side, args.side),
                                   seen_size=lambda w, h: policy.seen_size(w, h, 784, pixels))
    base = AgentConfig(tools=[], force_mode="text", temperature=0.0, max_turns=1,
                       max_new_tokens=args.new_tokens, max_total_tokens=4096, min_pixels=784,
                       max_pixels=pixels)
    settings = {"fixed_full": base,
                "heuristic": replace(base, router=RouterConfig(kind="heuristic"))}
    agent.rollout(policy, samples[:4], base)  # untimed: one-off costs of the first passes
    times: dict[str, list[float]] = {k: [] for k in settings}
    stats: dict[str, dict[str, float]] = {}
    for _ in range(args.repeats):
        for name, acfg in settings.items():
            t = time.perf_counter()
            trajs = agent.rollout(policy, samples, acfg)
            times[name].append(time.perf_counter() - t)
            stats[name] = {"visual_tokens": sum(visual_tokens(policy, x) for x in trajs)
                           / len(trajs),
                           "generated": sum(sum(x.loss_mask) for x in trajs)}
    out = {}
    for name in settings:
        s = statistics.median(times[name])
        out[name] = {"visual_tokens_per_episode": stats[name]["visual_tokens"],
                     "episodes_per_s": args.episodes / s,
                     "generated_tokens_per_s": stats[name]["generated"] / s, "seconds": s}
    full, routed = out["fixed_full"], out["heuristic"]
    out["ratio"] = {
        "visual_tokens": routed["visual_tokens_per_episode"] / full["visual_tokens_per_episode"],
        "generated_tokens_per_s": routed["generated_tokens_per_s"] / full["generated_tokens_per_s"],
        "episodes_per_s": routed["episodes_per_s"] / full["episodes_per_s"]}
    print(json.dumps(out, indent=1))
    print(f"visual tokens routed/full {out['ratio']['visual_tokens']:.2f}; rollout speed-up "
          f"{out['ratio']['episodes_per_s']:.2f}x episodes/s, "
          f"{out['ratio']['generated_tokens_per_s']:.2f}x generated tokens/s")


if __name__ == "__main__":
    main()
