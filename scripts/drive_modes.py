"""Held-out driving accuracy of trained stages with the mode forced: text, tool, or the policy's
own choice, per sample kind. This is the check behind "tool mode beats text-only on the
tool-only cases": the same weights, the same held-out samples, only the mode differs.

    python scripts/drive_modes.py configs/drive_cascade.yaml out/drive_seeds/seed-0 --seed 0 \
        --stages dm_sft fcm_rl ams_rl --modes text tool none --n 96 [key.path=value ...]

`--frames cue_only` evaluates only the held-out frames where the cue is hidden from text mode
(decoy twins before the ego reacts; domains/driving.py), each once (--n 0: all of them).

RUN is a cascade output folder (RUN/<stage>/final/ holds each stage's weights); prints a
markdown table and writes RUN/modes.json.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from vlmagent import config as config_mod
from vlmagent.config import resolve_stage
from vlmagent.domains import driving
from vlmagent.policy import Policy
from vlmagent.train.evaluate import evaluate

MODES = ("text", "tool", "none")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("run")
    ap.add_argument("--stages", nargs="+", default=["dm_sft", "fcm_rl", "ams_rl"])
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0, help="the run's train.seed (picks held-out)")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--frames", default="all", choices=driving.FRAMES)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args()  # key.path=value overrides may follow the options
    run = Path(args.run)
    cfg = config_mod.load(args.config, [*args.overrides, f"train.seed={args.seed}"])
    if args.frames != "all":
        cfg = replace(cfg, domain=replace(cfg.domain, options={**cfg.domain.options,
                                                               "frames": args.frames}))
    n = args.n or _heldout_count(cfg)
    out: dict[str, dict[str, dict[str, float]]] = {}
    rows = [f"{args.frames} frames, n = {n}",
            "| stage | mode | all | front | tool | cue-only | tool-call rate |",
            "|---|---|---|---|---|---|---|"]
    for name in args.stages:
        stage = next(resolve_stage(cfg.train.defaults, s) for s in cfg.train.stages
                     if s.name == name)
        policy = Policy.from_pretrained(run / name / "final", cfg.policy.dtype, cfg.policy.device)
        out[name] = {}
        for mode in args.modes:
            mcfg = replace(cfg, agent=replace(cfg.agent, force_mode=mode))
            res = evaluate(mcfg, policy, ["driving"], n, stage)["driving"]
            out[name][mode] = res
            rows.append(f"| {name} | {mode} | {res['accuracy']:.3f} | "
                        f"{res.get('accuracy/front', float('nan')):.3f} | "
                        f"{res.get('accuracy/tool', float('nan')):.3f} | "
                        f"{res.get('accuracy/cue_only', float('nan')):.3f} | "
                        f"{res['tool_call_rate']:.2f} |")
            print(rows[-1], flush=True)
    fname = "modes.json" if args.frames == "all" else f"modes-{args.frames}.json"
    (run / fname).write_text(json.dumps(out, indent=1))
    print("\n".join(rows))


def _heldout_count(cfg) -> int:
    """How many held-out frames the domain settings select (each evaluated once)."""
    o = cfg.domain.options
    return len(driving.split_frames(cfg.domain.dataroot, cfg.domain.version, True,
                                    cfg.domain.kinds, o.get("frames", "all"), o.get("rule")))


if __name__ == "__main__":
    main()
