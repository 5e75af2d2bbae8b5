"""Decoupled vision placement (policy.placement, vlmagent/placement.py) on a tiny Qwen2.5-VL
(CPU), one run: (a) images through the vision tower in one GRPO-like step, (b) the time of the
training passes of N steps with the vision tower in this process vs in its own process.

    python benchmarks/placement.py [--steps 3] [--prompts 4] [--group 2] [--side 896]

(a) A step: P prompts (one image each) x G completions generated in one batch, then per group
(one micro-batch) the reference log-probs and the training forward. Printed: the image encodes
of a per-completion encoder (every occurrence of an image in every call), of the plain model
(identical images once per call), and with the feature cache (measured by a hook on the tower).

(b) Per step, P fresh images (new prompts, as RL draws them), and per micro-batch a training
forward + backward (LoRA on the LM, the vision tower frozen and cached). In-process, each
micro-batch's images are encoded inside its own forward; with `process`, `prefetch` sends the
next micro-batch's images ahead (after a step's last micro-batch, the next step's first: RL
draws its prompts ahead), so the vision process encodes them while this one runs the LM.
Times are the median over `--repeats`, settings alternated. The two processes use one torch
thread each, so the fair in-process baselines are one thread (the same per-process work) and
two threads (every core on one process); both are printed. On 2 shared cores the overlap can at
best hide the vision share of a step; the tiny model's split between vision and LM is not a
real checkpoint's, so the ratio is this model's.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vlmagent.config import LoraSettings, PlacementConfig
from vlmagent.placement import Placement
from vlmagent.policy import Context, Policy
from vlmagent.tiny import build_tiny


def prompt(policy: Policy, side: int, seed: int) -> Context:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8))
    content = [{"type": "image", "image": img}, {"type": "text", "text": "Count the shapes."}]
    ids = policy.chat_tokens([{"role": "user", "content": content}], add_generation_prompt=True)
    return Context(ids, [img], f"p{seed}")


def groups(policy: Policy, step: int, args: argparse.Namespace) -> list[list[Context]]:
    """P micro-batches of G completions on one fresh image each (fixed answer tokens)."""
    out = []
    for k in range(args.prompts):
        p = prompt(policy, args.side, 1000 * step + k)
        answers = [policy.tokenizer(f"There are {g + k} shapes, {g} of them red.",
                                    add_special_tokens=False)["input_ids"]
                   for g in range(args.group)]
        out.append([Context(p.token_ids + a, p.images, f"{p.id}-{g}")
                    for g, a in enumerate(answers)])
    return out


def count_images(policy: Policy) -> dict[str, int]:
    n = {"images": 0}

    def hook(_mod, _args, kwargs, _out):
        n["images"] += int(kwargs["grid_thw"].shape[0])

    policy.core.model.visual.register_forward_hook(hook, with_kwargs=True)
    return n


def grpo_step_encodes(policy: Policy, args: argparse.Namespace) -> dict[str, int]:
    """(a): rollouts, reference and training forward of one step; image encodes counted."""
    n = count_images(policy)
    prompts = [prompt(policy, args.side, 7_000 + k) for k in range(args.prompts)]
    occurrences = 0
    out = {}
    for name, cache in (("plain_model", 0), ("cached", 64)):
        policy.placement = Placement(PlacementConfig(cache_size=cache), policy) if cache else None
        n["images"], occurrences = 0, 0
        rollout = [p for p in prompts for _ in range(args.group)]
        gens = policy.generate(rollout, max_new_tokens=args.new_tokens, seed=0)
        occurrences += sum(len(c.images) for c in rollout)
        done = [Context(c.token_ids + g.token_ids, c.images) for c, g in zip(rollout, gens)]
        parts = [done[k * args.group:(k + 1) * args.group] for k in range(args.prompts)]
        with torch.no_grad():
            for part in parts:  # the reference
                policy.logprobs(part)
        for part in parts:  # the training forward
            sum(lp.sum() for lp in policy.logprobs(part)).backward()
        occurrences += 2 * sum(len(c.images) for c in done)
        out[name] = n["images"]
    out["per_completion_encoder"] = occurrences
    out["unique_images"] = args.prompts
    policy.placement = None
    return out


def train_passes(policy: Policy, steps: list[list[list[Context]]], prefetch: bool) -> float:
    """Forward + backward of every micro-batch; the next micro-batch (the next step's first,
    after a step's last: RL draws its prompts ahead) is sent to the vision process first."""
    flat = [(s, part) for s, parts in enumerate(steps) for part in parts]
    t = time.perf_counter()
    for k, (s, part) in enumerate(flat):
        if prefetch and k + 1 < len(flat):
            policy.prefetch(flat[k + 1][1])  # encoded by the vision process meanwhile
        sum(lp.sum() for lp in policy.logprobs(part)).backward()
        if k + 1 == len(flat) or flat[k + 1][0] != s:  # (the optimiser step would go here)
            policy.model.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=4, help="unique images (micro-batches) a step")
    ap.add_argument("--group", type=int, default=2, help="completions per image")
    ap.add_argument("--side", type=int, default=896, help="image side in pixels (seen size)")
    ap.add_argument("--new-tokens", type=int, default=8, help="(a): tokens generated each")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    args.side -= args.side % 28
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-placement-"))
    policy = Policy.from_pretrained(build_tiny(tmp / "tiny", max_pixels=args.side ** 2),
                                    lora=LoraSettings(dropout=0.0))  # vision tower frozen

    encodes = grpo_step_encodes(policy, args)

    settings = {"in_process_1_thread": ("same", 1), "in_process_2_threads": ("same", 2),
                "process_1+1_threads": ("process", 1)}
    placements = {name: Placement(PlacementConfig(vision, cache_size=64), policy)
                  for name, (vision, _) in settings.items()}
    times: dict[str, list[float]] = {k: [] for k in settings}
    vision_s = [0.0]  # inside the timed in-process 1-thread runs: pixels to features
    local = placements["in_process_1_thread"]
    encode = local._encode_local

    def timed_encode(*a):
        t = time.perf_counter()
        out = encode(*a)
        vision_s[0] += time.perf_counter() - t
        return out

    local._encode_local = timed_encode
    try:
        for r in range(args.repeats + 1):  # repeat 0 is untimed: spawn and first passes
            for name, (vision, threads) in settings.items():
                steps = [groups(policy, 100 * r + s, args) for s in range(args.steps)]
                policy.placement = placements[name]
                torch.set_num_threads(threads)
                dt = train_passes(policy, steps, prefetch=vision == "process")
                torch.set_num_threads(1)
                if r:
                    times[name].append(dt)
                elif name == "in_process_1_thread":
                    vision_s[0] = 0.0  # (the untimed repeat's encodes do not count)
    finally:
        for p in placements.values():
            p.close()
        policy.placement = None
    secs = {k: statistics.median(v) for k, v in times.items()}
    base1, base2 = secs["in_process_1_thread"], secs["in_process_2_threads"]
    proc = secs["process_1+1_threads"]
    vis = vision_s[0] / args.repeats
    out = {"vision_forwards_per_step": encodes,
           "seconds_for_steps": {k: round(v, 3) for k, v in secs.items()},
           "steps": args.steps, "micro_batches_per_step": args.prompts, "group": args.group,
           "side": args.side, "load_average_1min": round(os.getloadavg()[0], 2),
           "cpus": os.cpu_count(), "vision_share_1_thread": round(vis / base1, 3),
           "best_possible_speedup_vs_1_thread": round(base1 / max(base1 - vis * (
               args.prompts - 1) / args.prompts, 1e-9), 3),
           "speedup_process_vs_in_process_1_thread": round(base1 / proc, 3),
           "speedup_process_vs_in_process_2_threads": round(base2 / proc, 3)}
    print(json.dumps(out, indent=1))
    e = encodes
    print(f"images through the vision tower per step: {e['cached']} with the cache "
          f"(= {e['unique_images']} unique images) vs {e['plain_model']} plain model vs "
          f"{e['per_completion_encoder']} per-completion encoder")
    print(f"{args.steps} steps: process placement {proc:.2f} s vs in-process {base1:.2f} s "
          f"(1 thread) = {base1 / proc:.2f}x, vs {base2:.2f} s (2 threads) = "
          f"{base2 / proc:.2f}x; vision is {vis / base1:.0%} of the 1-thread time")


if __name__ == "__main__":
    main()
