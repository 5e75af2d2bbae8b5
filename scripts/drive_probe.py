"""Can a vision tower learn to read the far traffic light from the expert's zoom?

Trains the tower of POLICY and a linear head on pooled zoom tokens (red vs green) on the
cue-only frames of the training scenes, and prints held-out accuracy as it goes: the perception
question under the driving recipe, without the language model. Generated data only.

    python scripts/drive_probe.py out/tiny out/nusc --pool max --steps 300
    python scripts/drive_probe.py out/tiny out/nusc --pool mean --scenes 24   # fewer scenes

Measured on the tiny model (2 CPU cores, 160 light-only scenes at 480x270, 128 for training):
mean pooling memorises the streets (train 1.00, held-out 0.56-0.69), max pooling on twin
scenes (make-data --twins) reads 0.88-0.90 held-out; with 24 training scenes both memorise.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from vlmagent.domains import driving
from vlmagent.images import resize_seen
from vlmagent.policy import Policy
from vlmagent.router.learned import new_head, pooled_features
from vlmagent.tools import TOOLS, ToolEnv


def zooms(policy, root: str, version: str, held: bool, scenes: int, pixels: tuple[int, int]):
    """[(zoom image as seen, 1 if red, scene)] for every cue-only light frame of the split."""
    seen = lambda w, h: policy.seen_size(w, h, *pixels)  # noqa: E731
    n = len(driving.split_frames(root, version, held, frames="cue_only"))
    drawn = driving.make_samples(n, driving.HELDOUT_FROM if held else 0, "/tmp", dataroot=root,
                                 version=version, frames="cue_only")
    keep = sorted({s.meta["scene"] for s in drawn})[:None if held else scenes]
    out = []
    for s in drawn:
        if s.meta["scene"] not in keep or "light" not in s.meta["scenario"]:
            continue
        env = ToolEnv.from_sample(s, seen_size=seen)
        call = driving.expert_call(s, seen)
        TOOLS[call.name]()(call.arguments, env)
        view = env.images[next(reversed(env.images))]
        out.append((resize_seen(view.image, view.seen), int(s.meta["scenario"] == "red_light_far"),
                    s.meta["scene"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("policy")
    ap.add_argument("dataroot")
    ap.add_argument("--version", default="v1.0-synth")
    ap.add_argument("--pool", choices=("mean", "max"), default="max")
    ap.add_argument("--scenes", type=int, default=None, help="training scenes kept (default all)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--pixels", type=int, nargs=2, default=[3136, 12544], metavar=("MIN", "MAX"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    policy = Policy.from_pretrained(args.policy)
    train = zooms(policy, args.dataroot, args.version, False, args.scenes, args.pixels)
    test = zooms(policy, args.dataroot, args.version, True, None, args.pixels)
    for name, d in (("train", train), ("held-out", test)):
        print(f"{name}: {len(d)} frames, {len({x[2] for x in d})} scenes, "
              f"red share {np.mean([x[1] for x in d]):.2f}")
    head = new_head(policy)
    opt = torch.optim.AdamW([*policy.core.model.visual.parameters(), *head.parameters()],
                            lr=args.lr)

    def accuracy(data) -> float:
        with torch.no_grad():
            hits = [(head(pooled_features(policy, [x[0] for x in data[i:i + 64]], args.pool))
                     .argmax(1) == torch.tensor([x[1] for x in data[i:i + 64]])).float()
                    for i in range(0, len(data), 64)]
        return torch.cat(hits).mean().item()

    rng = np.random.default_rng(args.seed)
    for step in range(1, args.steps + 1):
        idx = rng.choice(len(train), 32)
        logits = head(pooled_features(policy, [train[i][0] for i in idx], args.pool))
        loss = F.cross_entropy(logits, torch.tensor([train[i][1] for i in idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            print(f"step {step}: loss {loss.item():.3f}  train {accuracy(train[:256]):.3f}  "
                  f"held-out {accuracy(test):.3f}", flush=True)


if __name__ == "__main__":
    main()
