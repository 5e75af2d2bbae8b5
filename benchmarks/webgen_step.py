"""One online web-generation step: scoring overlapped with generation vs scoring after it.

    python benchmarks/webgen_step.py [--policy DIR] [--prompts 4] [--group 8] [--rounds 2]
                                     [--workers 2] [--sft-steps 100]

The step is `vlmagent.train.online.online_step` on the webgen domain (configs/webgen_tiny.yaml:
static scaffold, cascade structure -> execution -> aesthetics with the metrics judge, real
Chromium in `--workers` scoring processes), `--prompts` requests x `--group` sampled projects,
generated one request's group per call (rollout_chunk 1), then one GRPO update. Two modes:

  overlapped   each project is handed to the reward pool as soon as its episode ends, so the
               workers score it while the next requests generate (overlap_scoring: true);
  sequential   every project is handed over after the whole batch has generated (false).

Same work: both modes start from the same weights (restored before every step), draw the same
requests and sampling seeds, so they generate the same projects (checked: the rewards must be
equal), and each step gets a fresh reward pool (no cache carried over), warmed up beforehand
on two other pages so that neither pays for starting its browsers. Rounds alternate the two
modes; medians of step seconds. Printed: the ratio sequential / overlapped (goal >= 1.3 on 2
cores), and the reward throughput during the overlapped step (projects scored per second of
step time, and per second the pool was busy).

On 2 CPU cores generation and scoring compete for the same cores, so overlapping them gains
little. The setting the overlap is for, generation on a GPU while CPU workers score, cannot run
here; `--gpu-like` stands in for it, LABELLED AS SIMULATED in the output: each generation call
first runs for real once (untimed) and is then replayed, in the timed steps, as a sleep of the
seconds it took (the CPU is free meanwhile, as it is while a GPU generates) followed by the same
episodes; both modes replay the same episodes, so the work and the rewards are the same.

The policy: `--policy` (a trained checkpoint folder, e.g. out/webgen_tiny/sft/final), or by
default a tiny model (vlmagent tiny --corpus web) given `--sft-steps` of SFT on the experts
here, so it writes real pages (an untrained model writes text that is rejected in
microseconds, and there would be nothing to overlap).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policy", help="a trained checkpoint folder (default: tiny + SFT here)")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sft-steps", type=int, default=100)
    ap.add_argument("--gpu-like", action="store_true",
                    help="SIMULATED generation that leaves the CPU free (see the docstring)")
    args = ap.parse_args()

    import torch

    from vlmagent import config
    from vlmagent.config import resolve_stage
    from vlmagent.policy import Policy
    from vlmagent.rewards.web import WebReward
    from vlmagent.train import online, pipeline
    from vlmagent.train.common import StageRun, make_accelerator

    tmp = Path(tempfile.mkdtemp(prefix="webgen-bench-"))
    base = [f"train.output_dir={tmp / 'train'}", f"domain.data_dir={tmp / 'data'}",
            f"score.workers={args.workers}"]
    policy_dir = args.policy
    if policy_dir is None:
        from vlmagent.tiny import build_tiny

        print(f"tiny model + {args.sft_steps} SFT steps (use --policy to skip) ...", flush=True)
        model = build_tiny(tmp / "tiny", corpus="web")
        cfg = config.load(REPO / "configs/webgen_tiny.yaml", base + [
            f"policy.path={model}", f"train.stages=[{{name: sft, kind: sft, "
            f"steps: {args.sft_steps}, lr: 0.002, batch_size: 16, eval_n: 0}}]"])
        pipeline.run(cfg)
        policy_dir = str(tmp / "train" / "sft" / "final")
    cfg = config.load(REPO / "configs/webgen_tiny.yaml", base + [f"policy.path={policy_dir}"])
    policy = Policy.from_config(cfg.policy)
    start = copy.deepcopy(policy.model.state_dict())
    grpo = resolve_stage(cfg.train.defaults, next(s for s in cfg.train.stages
                                                  if s.kind in ("grpo", "gspo")))
    grpo.batch_size, grpo.group_size, grpo.rollout_chunk = args.prompts, args.group, 1
    acc = make_accelerator(tmp / "bench")

    def step(overlap: bool, k: int) -> dict:
        policy.model.load_state_dict(start)
        st = copy.deepcopy(grpo)
        st.overlap_scoring = overlap
        out = tmp / f"bench-{k}-{int(overlap)}"
        out.mkdir(parents=True)
        run = StageRun(st, policy, acc, out, cfg.train.seed)
        run.web = WebReward(cfg, out / "work", workers=args.workers)
        _warm_up(run.web)
        before = run.web.stats()
        seen = {}
        real = online.sample_groups

        def spy(r, c):
            seen["groups"] = real(r, c)
            return seen["groups"]

        online.sample_groups = spy
        try:
            t0 = time.perf_counter()
            m = online.online_step(run, cfg, None)
            seconds = time.perf_counter() - t0
            after = run.web.stats()
            stats = {k: after[k] - before.get(k, 0) for k in after}  # the step's share
        finally:
            online.sample_groups = real
            run.close()
        return {"seconds": seconds, "rewards": seen["groups"][1], "metrics": m, "stats": stats}

    if args.gpu_like:
        _simulate_gpu_generation(online)
        step(False, -1)  # untimed: records every generation call of the step
    times: dict[bool, list[float]] = {True: [], False: []}
    rewards: dict[bool, list[float]] = {}
    last = None
    for k in range(args.rounds):
        for overlap in ((False, True) if k % 2 == 0 else (True, False)):
            r = step(overlap, k)
            times[overlap].append(r["seconds"])
            rewards.setdefault(overlap, r["rewards"])
            if overlap:
                last = r
            print(f"round {k} {'overlapped' if overlap else 'sequential'}: "
                  f"{r['seconds']:.1f} s (waiting for rewards after generation "
                  f"{r['metrics'].get('web/wait_s', 0):.1f} s), mean reward "
                  f"{statistics.mean(r['rewards']):.3f}", flush=True)
    seq, ovl = statistics.median(times[False]), statistics.median(times[True])
    n = args.prompts * args.group
    stats = last["stats"]
    print(json.dumps({
        "generation": "SIMULATED gpu-like (replayed as sleeps)" if args.gpu_like else "real",
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "projects_per_step": n,
        "reward_workers": args.workers,
        "sequential_step_s": round(seq, 2), "overlapped_step_s": round(ovl, 2),
        "same_rewards": rewards[True] == rewards[False],
        "projects_scored": stats.get("scored"), "pool_busy_s": round(stats.get("busy_s", 0), 2),
        "scored_per_step_s": round(stats.get("scored", 0) / ovl, 3),
        "scored_per_busy_s": round(stats.get("scored", 0) / max(stats.get("busy_s", 0), 1e-9),
                                   3),
        "mean_reward": round(statistics.mean(rewards[True]), 4)}, indent=1))
    label = " [SIMULATED gpu-like generation]" if args.gpu_like else ""
    print(f"ratio sequential / overlapped: {seq / ovl:.2f}x (goal >= 1.3){label}")


def _simulate_gpu_generation(online) -> None:
    """Replace the step's rollout calls: the first call with given arguments runs for real and
    is recorded; later calls sleep for its duration, then return copies of its episodes
    (calling on_done for each, as a batch finishing on a GPU would)."""
    real = online.agent.rollout
    recorded: dict = {}

    def rollout(policy, samples, cfg, *a, on_done=None, seed=None, group_size=1, **kw):
        key = (tuple(s.id for s in samples), seed, group_size)
        if key not in recorded:
            t0 = time.perf_counter()
            trajs = real(policy, samples, cfg, *a, seed=seed, group_size=group_size, **kw)
            recorded[key] = (trajs, time.perf_counter() - t0)
            out = copy.deepcopy(trajs)
        else:
            trajs, seconds = recorded[key]
            time.sleep(seconds)  # the simulated GPU: busy, but not on the CPU
            out = copy.deepcopy(trajs)
        for i, t in enumerate(out):
            if on_done is not None:
                on_done(i, t)
        return out

    online.agent.rollout = rollout


def _warm_up(web) -> None:
    """Start the pool's workers and browsers on two throwaway pages (not the step's)."""
    for i in range(2):
        page = (f"```html path=index.html\n<!doctype html><html lang=en><title>w{i}</title>"
                f"<h1>warm {i}</h1></html>\n```\n")
        web.submit(f"warm{i}", page, "static")
    web.collect(["warm0", "warm1"])
    web.busy_s = 0.0  # the step's own wait starts here


if __name__ == "__main__":
    main()
