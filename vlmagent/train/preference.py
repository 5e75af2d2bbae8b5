"""Offline preference RL: MPO (0.8 DPO + 0.2 BCO + 1.0 SFT, InternVL3.5) or plain DPO.

Pairs come from a file (`data:` a JSONL of {"chosen": trajectory, "rejected": trajectory}
records as written by vlmagent.trajectory) or are built from the current policy's own rollouts,
scored by the stage's reward: the best and the worst of each group whose rewards differ.
The reference is frozen at the start of the stage (LoRA disabled, or a copy of full weights).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vlmagent import trajectory
from vlmagent.config import Config
from vlmagent.losses import dpo_loss, mpo_loss
from vlmagent.train.common import StageRun, pad_masked, shard, step_seed
from vlmagent.train.online import Reference, _global_sum, sample_groups
from vlmagent.types import Trajectory


def load_pairs(stage: Any) -> list[tuple[Trajectory, Trajectory]] | None:
    if not stage.data:
        return None
    path = Path(stage.data)
    with open(path, encoding="utf-8") as f:
        return [(trajectory.from_record(d["chosen"], path.parent),
                 trajectory.from_record(d["rejected"], path.parent))
                for d in map(json.loads, f) if d]


def policy_pairs(run: StageRun, cfg: Config) -> list[tuple[Trajectory, Trajectory]]:
    """Best vs worst rollout of every group with a reward spread (this rank's prompts)."""
    trajs, rewards, _ = sample_groups(run, cfg)
    g, pairs = run.stage.group_size, []
    for i in range(0, len(trajs), g):
        r = rewards[i:i + g]
        if max(r) > min(r):
            pairs.append((trajs[i + r.index(max(r))], trajs[i + r.index(min(r))]))
    return pairs


def _seq_logps(lps: list[torch.Tensor], trajs: list[Trajectory]
               ) -> tuple[torch.Tensor, torch.Tensor]:
    lp, mask = pad_masked(lps, [t.loss_mask for t in trajs])
    return (lp * mask).sum(1), mask.sum(1)  # [B] sums over policy tokens, [B] lengths


def preference_step(run: StageRun, cfg: Config, data: Any) -> dict[str, float]:
    st = run.stage
    if run.reference is None:
        run.reference = Reference(run.policy)
    if data:
        start = step_seed(cfg.train.seed, st.name, run.step) % len(data)
        pairs = shard([data[(start + i) % len(data)] for i in range(st.batch_size)], run.acc)
    else:
        pairs = policy_pairs(run, cfg)
    total = _global_sum(run, len(pairs))
    metrics: dict[str, float] = {"pairs": float(total)}
    if total == 0:
        return metrics  # no group had a reward spread anywhere: nothing to prefer this step
    if not pairs:  # keep the ranks' collectives in step
        run.update(sum(p.sum() * 0.0 for p in run.trainable()), reduction="sum")
        return metrics
    chosen, rejected = [c for c, _ in pairs], [r for _, r in pairs]
    both = [trajectory.context(t) for t in chosen + rejected]
    n = len(pairs)
    pol, lengths = _seq_logps(run.policy.logprobs(both, st.temperature), chosen + rejected)
    ref, _ = _seq_logps(run.reference.logprobs(both, st.temperature), chosen + rejected)
    if st.kind == "dpo":
        loss, m = dpo_loss(pol[:n], pol[n:], ref[:n], ref[n:], beta=st.beta)
    else:
        loss, m = mpo_loss(pol[:n], pol[n:], ref[:n], ref[n:], lengths[:n], beta=st.beta)
    m["grad_norm"] = run.update(loss * (n / total), reduction="sum")
    return {**metrics, **m}
